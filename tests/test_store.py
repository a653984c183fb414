"""The resumable store: resume, no duplicates, survival of kill -9, rejects, atomic writes, file:line errors.

In-process plus one child Python process per kill test: `pytest tests/test_store.py -q`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dantes_mlx.errors import InputError
from dantes_mlx.store import Store, item_key, read_jsonl, write_jsonl_atomic, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
N_ITEMS = 60

# The child runs a toy "stage" through the store: for each item not done yet, compute, then put.
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from dantes_mlx.store import Store, item_key

    path, mode = sys.argv[1], sys.argv[2]
    store = Store(path)
    if mode == "tear":  # die by SIGKILL in the middle of writing record 7
        original = Store._append
        def tearing_append(target, record):
            if record["value"]["i"] == 7:
                line = (__import__("json").dumps(record) + "\\n").encode()
                with open(target, "ab") as fh:
                    fh.write(line[: len(line) // 2])
                    fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            original(target, record)
        Store._append = staticmethod(tearing_append)
    for i in range({n}):
        key = item_key("toy", "v1", "fake", {{"i": i}})
        if key in store:
            continue
        if mode == "slow":
            time.sleep(0.01)
        store.put(key, {{"i": i, "square": i * i, "text": "é" * (i % 7)}})
    print("done", len(store))
""").format(n=N_ITEMS)


def child_command(tmp_path: Path, store_path: Path, mode: str) -> tuple[list[str], dict]:
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return [sys.executable, str(script), str(store_path), mode], env


def run_child(tmp_path: Path, store_path: Path, mode: str) -> subprocess.CompletedProcess:
    command, env = child_command(tmp_path, store_path, mode)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@pytest.fixture
def reference(tmp_path):
    """The store file of an uninterrupted run."""
    path = tmp_path / "reference" / "store.jsonl"
    proc = run_child(tmp_path, path, "plain")
    assert proc.returncode == 0 and len(lines_of(path)) == N_ITEMS
    return lines_of(path)


def test_resume_skips_finished_keys(tmp_path):
    path, computed = tmp_path / "s.jsonl", []

    def stage(items):
        store = Store(path)
        for item in items:
            key = item_key("stage", "v1", "model", item)
            if key not in store:
                computed.append(item)
                store.put(key, {"out": item.upper()})
        return store

    stage(["a", "b", "c"])
    store = stage(["a", "b", "c", "d", "e"])
    assert computed == ["a", "b", "c", "d", "e"]
    assert len(store) == 5 and store.get(item_key("stage", "v1", "model", "d")) == {"out": "D"}
    assert item_key("stage", "v2", "model", "a") not in store  # a new prompt version redoes the work


def test_repeated_put_does_not_duplicate(tmp_path):
    path = tmp_path / "s.jsonl"
    store = Store(path)
    store.put("k", 1)
    store.put("k", 2)
    assert len(lines_of(path)) == 1 and store.get("k") == 1
    reopened = Store(path)
    reopened.put("k", 3)
    assert len(lines_of(path)) == 1 and reopened.get("k") == 1 and dict(reopened.items()) == {"k": 1}


def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(tmp_path, reference):
    path = tmp_path / "killed" / "store.jsonl"
    command, env = child_command(tmp_path, path, "slow")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(lines_of(path)) < 10 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = len(Store(path))
    assert 10 <= done < N_ITEMS  # really killed in the middle
    # what a kill during write() leaves: half a record at the end of the file
    with open(path, "ab") as fh:
        fh.write(b'{"key": "deadbeef", "value": {"i": 9')
    resumed = run_child(tmp_path, path, "plain")
    assert resumed.returncode == 0 and "torn last line" in resumed.stderr
    assert lines_of(path) == reference


def test_child_killed_while_writing_a_record(tmp_path, reference):
    path = tmp_path / "torn" / "store.jsonl"
    proc = run_child(tmp_path, path, "tear")
    assert proc.returncode == -signal.SIGKILL
    raw = path.read_bytes()
    assert not raw.endswith(b"\n") and raw.count(b"\n") == 7  # 7 records and half of the 8th
    store = Store(path)  # opens cleanly, drops the torn tail
    assert len(store) == 7 and path.read_bytes().endswith(b"\n")
    finished = run_child(tmp_path, path, "plain")
    assert finished.returncode == 0 and "done 60" in finished.stdout
    assert lines_of(path) == reference


def test_damage_before_the_last_line_is_reported_not_dropped(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"key": "a", "value": 1}\n{"key": "b", broken\n{"key": "c", "value": 3}\n', encoding="utf-8")
    with pytest.raises(InputError) as info:
        Store(path)
    assert f"{path}:2" in str(info.value) and "delete that line" in str(info.value)
    assert len(lines_of(path)) == 3  # nothing was truncated


def test_rejects_keep_their_reasons(tmp_path):
    path = tmp_path / "s.jsonl"
    store = Store(path)
    store.reject("k1", "too short", {"response": "Oui."})
    store.reject("k1", "too short", {"response": "Oui."})
    store.reject("k1", "breaks character", {"response": "En tant qu'IA..."})
    store.reject("k2", "not grounded", {"score": 41.5})
    expected = [{"key": "k1", "reason": "too short", "payload": {"response": "Oui."}},
                {"key": "k1", "reason": "breaks character", "payload": {"response": "En tant qu'IA..."}},
                {"key": "k2", "reason": "not grounded", "payload": {"score": 41.5}}]
    assert store.rejects() == expected
    assert store.rejects_path == tmp_path / "s.rejects.jsonl" and len(store) == 0
    reopened = Store(path)
    reopened.reject("k2", "not grounded", {"score": 41.5})
    assert reopened.rejects() == expected
    custom = Store(tmp_path / "c.jsonl", rejects_path=tmp_path / "errors.jsonl")
    custom.reject("k", "llm_error", None)
    assert [r["reason"] for r in read_jsonl_records(tmp_path / "errors.jsonl")] == ["llm_error"]


def read_jsonl_records(path):
    return [record for _, record in read_jsonl(path)]


def test_write_jsonl_atomic_leaves_no_partial_file(tmp_path):
    path = tmp_path / "out" / "rows.jsonl"
    assert write_jsonl_atomic(path, [{"a": 1}, {"b": "é"}]) == 2
    before = path.read_bytes()

    def rows():
        yield {"a": 2}
        yield {"b": 3}
        raise KeyboardInterrupt  # Ctrl-C in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        write_jsonl_atomic(path, rows())
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["rows.jsonl"]
    with pytest.raises(TypeError):  # a row that is not JSON: same guarantee
        write_jsonl_atomic(tmp_path / "out" / "new.jsonl", [{"a": 1}, {"b": object()}])
    assert sorted(p.name for p in path.parent.iterdir()) == ["rows.jsonl"]
    write_text_atomic(path, "remplacé\n")
    assert path.read_text(encoding="utf-8") == "remplacé\n"


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n\n{"b": 2}\n{"c": oops}\n', encoding="utf-8")
    rows = read_jsonl(path)
    assert next(rows) == (1, {"a": 1}) and next(rows) == (3, {"b": 2})
    with pytest.raises(InputError) as info:
        next(rows)
    assert f"{path}:4:" in str(info.value) and "repair or delete that line" in str(info.value)
    with pytest.raises(InputError, match="file not found"):
        list(read_jsonl(tmp_path / "missing.jsonl"))
