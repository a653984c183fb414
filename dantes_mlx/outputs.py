"""Outputs that never destroy data: never an input, of the right kind, one writer at a time, swapped in on success."""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from dantes_mlx.errors import DantesError, InputError, StageFailed
from dantes_mlx.store import write_jsonl_atomic

try:
    import fcntl
except ImportError:  # Windows is not a target: there, concurrent runs on one output are not detected
    fcntl = None


# ---------------------------------------------------------------- the output guard
def check_output(path: str | Path, *, kind: str = "file", inputs: Iterable = (), writes: Iterable = (),
                 flag: str = "-o", example: str = "") -> Path:
    """`path` as an output of `kind` ("file" or "dir"), checked before any work: refused when it is of the other
    kind, when a folder above it is a file, or when it (or a file it `writes` beside it) is one of `inputs`."""
    path = Path(path)
    if kind == "file" and path.is_dir():
        name = f", e.g. {flag} {path / example}" if example else ""
        raise InputError("is a folder, but this output is a file", path=path,
                         fix=f"give {flag} the path of a file{name}")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise InputError("is a file, but this output is a folder", path=path,
                         fix=f"give {flag} a folder (a new one is created), not a file")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise InputError(f"cannot write {path}: {blocking} is a file, not a folder", path=blocking,
                         fix=f"give {flag} a path whose folders are folders")
    written = [path, *map(Path, writes)]
    for source in (Path(p) for p in inputs if p):
        target = next((w for w in written if same_file(source, w)), None)
        if target is not None:
            raise InputError(f"the output would overwrite the input {source}", path=target,
                             fix=f"give {flag} another path: inputs are read, never written")
    return path


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: after symlinks and '..', or as hard links of one inode."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


# ---------------------------------------------------------------- one writer per output
_held: dict[str, int] = {}   # lock files this process holds -> depth (a stage inside `run` may take one again)
_held_lock = threading.Lock()


def lock_path(path: str | Path) -> Path:
    """The lock file of an output: `.NAME.lock` beside it (hidden, and no stage's input pattern matches it)."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextmanager
def output_lock(path: str | Path) -> Iterator[None]:
    """Hold the lock of an output for a run: a second run on it is refused with a message naming the process
    that holds it. The lock is the OS's (fcntl.flock): a run killed with -9 leaves no lock, only a stale file."""
    lock = lock_path(path).absolute()
    key = str(lock)
    with _held_lock:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_lock:
                _held[key] -= 1
        return
    handle = _acquire(lock, Path(path)) if fcntl is not None else None
    with _held_lock:
        _held[key] = 1
    try:
        yield
    finally:
        with _held_lock:
            del _held[key]
        if handle is not None:
            _release(lock, handle)


def _acquire(lock: Path, output: Path):
    """Open and lock `lock`, writing who holds it; DantesError naming the holder when another process has it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(lock, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = _describe_holder(handle.read())
            handle.close()
            raise DantesError(f"another run is writing this output: {holder}", path=output,
                              fix="wait until it ends (or stop it); two runs on one output would each make every "
                                  "call and write every answer twice") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the holder removed the file as we waited on it: lock the new one
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "command": _command(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    handle.flush()
    return handle


def _release(lock: Path, handle) -> None:
    try:
        if os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino:
            lock.unlink()
    except OSError:
        pass
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


def _command() -> str:
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("__main__.py", "dantes-mlx"):
        argv[0] = "dantes-mlx"
    return shlex.join(argv)


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"process {info['pid']} ({info['command']}), since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "another process (its lock file names none)"


# ---------------------------------------------------------------- swap in only on success
def partial_path(out: str | Path) -> Path:
    """Where an unsuccessful run leaves its result beside the previous output: OUT.partial.jsonl."""
    out = Path(out)
    return out.with_name(f"{out.stem}.partial{out.suffix}")


def failed_run(stage: str, note: str, target: Path, written: Path, rows: str, store: Path, stored: int,
               unit: str) -> StageFailed:
    """The error an LLM stage whose calls failed ends with: what failed, where the result went, how to go on."""
    where = (f"the previous {target.name} is kept; this run's {rows} are in {written}" if written != target
             else f"{target.name} holds the {rows} of the calls that answered")
    kept = f": the {stored} {unit} stored in {store} are not asked again" if stored else ""
    return StageFailed(f"{stage}: {note}\n  {where}", path=target,
                       fix=f"fix the cause above (is the LLM server up? llm.url / llm.model), then run the same "
                           f"command again{kept}")


def publish_jsonl(out: str | Path, rows, *, complete: bool) -> tuple[Path, int]:
    """Write rows to `out` when the run is complete or there is no previous output to lose; otherwise beside it
    (OUT.partial.jsonl), leaving the previous output untouched. (path written, row count)."""
    out, partial = Path(out), partial_path(out)
    if complete or not out.exists():
        count = write_jsonl_atomic(out, rows)
        partial.unlink(missing_ok=True)  # a successful run supersedes a failed run's leftovers
        return out, count
    return partial, write_jsonl_atomic(partial, rows)
