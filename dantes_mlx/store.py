"""Content-addressed, append-only JSONL cache shared by every LLM stage (resumable, crash-safe)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, Iterator


def item_key(stage: str, prompt_version: str, model: str, item: Any) -> str:
    """Stable hash of (stage, prompt version, model, input item)."""
    payload = json.dumps([stage, prompt_version, model, item], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def _read_records(path: Path) -> tuple[list[dict], int]:
    """Records of a JSONL file and the byte length of its intact prefix (a torn last line is excluded).

    Only the last line can be torn by a kill; a bad line before it is damage the user must see.
    """
    from dantes_mlx.errors import InputError

    if not path.exists():
        return [], 0
    lines = path.read_bytes().splitlines(keepends=True)
    records, good = [], 0
    for lineno, line in enumerate(lines, 1):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("no end of line")
            records.append(json.loads(line))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if lineno == len(lines):
                break  # torn last line from a kill -9
            raise InputError(f"damaged record ({exc})", path=path, line=lineno,
                             fix="delete that line: its item will be computed again") from None
        good += len(line)
    return records, good


def _repair(path: Path) -> list[dict]:
    """Read a store file, cutting off a torn tail so the next append starts on a fresh line."""
    records, good = _read_records(path)
    if path.exists() and good < path.stat().st_size:
        print(f"warning: {path}: dropped a torn last line left by an interrupted run", file=sys.stderr)
        with open(path, "r+b") as fh:
            fh.truncate(good)
    return records


class Store:
    """Append-only JSONL of {"key", "value"} records; put() is durable before it returns; thread-safe."""

    def __init__(self, path: str | Path, rejects_path: str | Path | None = None):
        self.path = Path(path)
        self.rejects_path = Path(rejects_path) if rejects_path else self.path.with_suffix(".rejects.jsonl")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._values = {r["key"]: r["value"] for r in _repair(self.path)}
        self._rejected = {(r.get("key"), r.get("reason")) for r in _repair(self.rejects_path)}
        self._lock = threading.Lock()

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def put(self, key: str, value: Any) -> None:
        """Append one finished item; a repeated key is ignored (never duplicated)."""
        with self._lock:
            if key in self._values:
                return
            self._append(self.path, {"key": key, "value": value})
            self._values[key] = value

    def reject(self, key: str, reason: str, payload: Any = None) -> None:
        """Keep a rejected output with its reason (once per key and reason)."""
        with self._lock:
            if (key, reason) in self._rejected:
                return
            self._append(self.rejects_path, {"key": key, "reason": reason, "payload": payload})
            self._rejected.add((key, reason))

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self._values.items())

    def rejects(self) -> list[dict]:
        """Every rejected output: {"key", "reason", "payload"}."""
        return _read_records(self.rejects_path)[0]

    @staticmethod
    def _append(path: Path, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with open(path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def write_jsonl_atomic(path: str | Path, rows) -> int:
    """Write rows to path via a temporary file and os.replace; returns the row count."""
    count = 0

    def write(fh):
        nonlocal count
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1

    _write_atomic(path, write)
    return count


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text via a temporary file and os.replace."""
    _write_atomic(path, lambda fh: fh.write(text))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write bytes via a temporary file and os.replace."""
    _write_atomic(path, lambda fh: fh.write(data), binary=True)


def _write_atomic(path: str | Path, write, binary: bool = False) -> None:
    """Call write(file) on a temporary file next to path, then rename it over path; on error path is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C included: never leave a partial file behind
        tmp.unlink(missing_ok=True)
        raise


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-blank line; a bad line raises InputError with file:line."""
    from dantes_mlx.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError("is a folder, not a JSONL file" if path.is_dir() else "file not found", path=path,
                         fix="give the path of a .jsonl file" if path.is_dir() else "check the path")
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a BOM is no JSON
            except UnicodeDecodeError as exc:
                raise InputError(f"not UTF-8 (byte {exc.start} of the line): the file must be UTF-8 JSON lines",
                                 path=path, line=lineno,
                                 fix=f"convert it: iconv -f latin1 -t utf-8 {path} > {path}.utf8") from None
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"invalid JSON ({exc.msg}, column {exc.colno})", path=path, line=lineno,
                                 fix="repair or delete that line") from exc
