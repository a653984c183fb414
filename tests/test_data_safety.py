"""A failing server or a second run never costs data: loud failures, outputs kept, one writer per output.

LLM servers are fakes on 127.0.0.1 (tests/fake_openai.py), commands run in-process through click's CliRunner
or as real processes for the concurrency test; no network: `pytest tests/test_data_safety.py -q`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_openai import FakeServer, completion

from dantes_mlx.cli import main
from dantes_mlx.config import SECTIONS
from dantes_mlx.errors import DantesError
from dantes_mlx.llm.batch import FailureLimit
from dantes_mlx.outputs import check_output, lock_path, output_lock, publish_jsonl

REPO = Path(__file__).resolve().parents[1]
SECRET = "hunter2-pass"
SCENE = "\n\n".join(f"— Voici la réplique numéro {i} ! dit Dantès." for i in range(12)) + "\n"
CITATIONS = [{"contexte": f"scène {i}", "citation": f"--Réplique numéro {i} de Dantès."} for i in range(4)]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def pairs_reply(body) -> str:
    data = body["messages"][-1]["content"]
    answer = ("Mon ami, la mer m'a appris la patience, car elle rend tout ce qu'on lui confie, et quatorze années "
              "au château d'If m'ont enseigné que l'attente est une arme. ")
    questions = [f"Que vous inspire cette parole : « {data[-30:]} » ?",
                 "Comment avez-vous supporté tant d'années de captivité ?",
                 "Quel conseil donneriez-vous à un jeune homme trahi par ses amis ?"]
    endings = ["Je n'ai rien oublié de ces années, monsieur, ni de ceux qui me les ont prises.",
               "Dieu seul sait l'heure de chacun ; l'homme patient sait s'y préparer dans le silence.",
               "Celui qui a tout perdu apprend à ne plus rien craindre, et c'est là sa seule richesse."]
    return json.dumps({"pairs": [{"instruction": q, "response": f"{endings[i]} {answer}Voilà ma réponse, {i}."}
                                 for i, q in enumerate(questions)]}, ensure_ascii=False)


@pytest.fixture
def failing_server():
    """An OpenAI-compatible server that answers every chat request with HTTP 500."""
    server = FakeServer(lambda body, n: (500, {"error": {"message": "model crashed"}}, 0))
    yield server
    server.close()


def with_credentials(url: str) -> str:
    return url.replace("http://", f"http://dantes:{SECRET}@")


def fast_llm_config(path: Path, url: str, **extra) -> Path:
    """A dantes.yaml that retries at once (the tests wait for no backoff)."""
    settings = {"url": url, "retries": 1, "retry_backoff": 0.0, "concurrency": 1, **extra}
    lines = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in settings.items())
    path.write_text(f"llm:\n{lines}", encoding="utf-8")
    return path


# ---------------------------------------------------------------- extract with the server down or failing
@pytest.mark.parametrize("down", [False, True], ids=["http-500", "server-down"])
def test_extract_with_a_failing_server_exits_1_and_keeps_the_previous_citations(down, failing_server, tmp_path,
                                                                                 monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "book.txt").write_text(SCENE, encoding="utf-8")
    url = "http://127.0.0.1:9/v1" if down else failing_server.url
    config = fast_llm_config(tmp_path / "dantes.yaml", with_credentials(url), max_consecutive_failures=2)
    previous = write_jsonl(tmp_path / "c.jsonl", [{"citation": "--Une citation gardée."}])
    before = previous.read_bytes()
    args = ["extract", "--config", str(config), "--input", "book.txt", "-o", "c.jsonl", "--chunk-lines", "2",
            "--overlap", "0", "--no-prefilter", "--method", "llm", "--quiet"]
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert previous.read_bytes() == before  # the good output is not replaced by an empty one
    out = " ".join(result.output.split())
    assert "6 of 6 chunks failed; stopped after 2 failures in a row" in out
    assert "the previous c.jsonl is kept" in out and "c.partial.jsonl" in out and "run the same command again" in out
    assert json.loads((tmp_path / "c.partial.jsonl").read_text() or "[]") == []
    if not down:  # the early stop saved the calls: 2 chunks asked (each tried twice), not 6
        assert len(failing_server.requests) == 4
    errors = (tmp_path / "c.errors.jsonl").read_text(encoding="utf-8")
    assert "llm_error" in errors
    for text in (result.output, errors, caplog.text):  # credentials in llm.url are never shown or stored
        assert SECRET not in text and "dantes:" not in text


def test_extract_with_a_failing_server_stops_run_before_generate(failing_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "clean").mkdir(parents=True)
    (tmp_path / "data" / "clean" / "book.txt").write_text(SCENE, encoding="utf-8")
    config = fast_llm_config(tmp_path / "dantes.yaml", failing_server.url)
    config.write_text(config.read_text() + "project:\n  books: []\nextract:\n  method: llm\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["run", "--from", "extract", "--to", "prepare"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "== extract" in result.output and "== generate" not in result.output
    assert "chunks failed" in result.output


# ---------------------------------------------------------------- generate with the server failing
def test_generate_whose_few_calls_all_fail_exits_1_and_keeps_the_previous_pairs(failing_server, tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", CITATIONS)  # 4 citations: under the early-stop limit of 5
    out = write_jsonl(tmp_path / "p.jsonl", [{"instruction": "Qui ?", "response": "Moi.", "source_id": "old"}])
    before = out.read_bytes()
    config = fast_llm_config(tmp_path / "dantes.yaml", failing_server.url)
    result = CliRunner().invoke(main, ["generate", str(source), "-o", str(out), "--config", str(config), "--quiet"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert out.read_bytes() == before
    text = " ".join(result.output.split())
    assert "4 of 4 citations failed" in text and "HTTP 500" in text and "model crashed" in text
    assert "the previous p.jsonl is kept" in text and "fix:" in text and "run the same command again" in text


def test_generate_partly_failing_then_answered_swaps_the_output_in(tmp_path):
    calls = []

    def behave(body, n):
        calls.append(n)
        return (500, {"error": "busy"}, 0) if len(calls) <= 2 else (200, completion(pairs_reply(body)), 0)

    server = FakeServer(behave)
    try:
        source = write_jsonl(tmp_path / "c.jsonl", CITATIONS)
        out = write_jsonl(tmp_path / "p.jsonl", [{"instruction": "Qui ?", "response": "Moi.", "source_id": "old"}])
        config = fast_llm_config(tmp_path / "dantes.yaml", server.url, retries=0)
        args = ["generate", str(source), "-o", str(out), "--config", str(config), "--quiet"]
        first = CliRunner().invoke(main, args)
        assert first.exit_code == 1 and "2 of 4 citations failed" in " ".join(first.output.split())
        assert json.loads(out.read_text().splitlines()[0])["source_id"] == "old"  # kept
        assert len((tmp_path / "p.partial.jsonl").read_text().splitlines()) == 6  # the 2 answered, 3 pairs each
        second = CliRunner().invoke(main, args)
        assert second.exit_code == 0, second.output
        assert len(out.read_text().splitlines()) == 12 and not (tmp_path / "p.partial.jsonl").exists()
        stored = [json.loads(line)["key"] for line in (tmp_path / "p.store.jsonl").read_text().splitlines()]
        assert len(stored) == len(set(stored)) == 4  # the second run asked only the 2 that had failed
    finally:
        server.close()


# ---------------------------------------------------------------- eval's judge failing
def test_a_failing_judge_leaves_its_questions_unscored_and_says_so(tmp_path):
    from dantes_mlx.evaluate.compare import EvalResult, Side, Task, run_judge
    from dantes_mlx.evaluate.judge import Judge, JudgeSettings
    from dantes_mlx.evaluate.report import write_report
    from dantes_mlx.evaluate.stage import EvalSummary
    from dantes_mlx.llm.fake import FakeLLM

    def down(messages):
        raise ConnectionError("judge server went away")

    result = EvalResult("now", "base", "adapters", "", "data", "Edmond Dantès",
                        {"test_rows": 1, "format": "chat", "temperature": 0, "max_tokens": 9, "seed": 0,
                         "mask_prompt": True})
    tasks = [Task("probe", f"p{i}", f"Question {i} ?", []) for i in range(4)]
    result.tasks = [{"id": t.id, "kind": t.kind, "question": t.question, "reference": None} for t in tasks]
    for role in ("base", "tuned"):
        result.sides[role] = Side(role, answers={t.id: f"Réponse {role} {t.id}" for t in tasks})
    judge = Judge(FakeLLM(model_id="judge", default=down), JudgeSettings("Edmond Dantès", "Tu es Dantès."))
    run_judge(result, tasks, judge, max_failures=2)
    assert result.judge["failed"]["questions"] == 4 and len(judge.client.calls) == 2  # stopped after 2 in a row
    assert result.sides["tuned"].answers["p3"] == "Réponse tuned p3"  # every answer kept
    assert "could not be judged" in result.failures[0] and "judge server went away" in result.failures[0]
    index = write_report(result, tmp_path / "report")
    assert "judge server went away" in index.read_text(encoding="utf-8")
    assert "judge server went away" in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    error = EvalSummary(result, index).failure()
    assert error is not None and str(index) in error.message


# ---------------------------------------------------------------- one writer per output
def test_a_second_run_on_a_locked_output_is_refused_naming_the_holder(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", CITATIONS)
    out = write_jsonl(tmp_path / "p.jsonl", [{"instruction": "Qui ?", "response": "Moi.", "source_id": "old"}])
    before = out.read_bytes()
    with output_lock(out):
        holder = lock_path(out).read_text(encoding="utf-8")
        assert json.loads(holder)["pid"] == os.getpid()
        reentered = output_lock(out)  # a stage inside `run` may take its own lock again
        with reentered:
            pass
        child = subprocess.run([sys.executable, "-m", "dantes_mlx", "generate", str(source), "-o", str(out),
                                "--url", "http://127.0.0.1:9/v1", "--quiet"], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    assert "another run is writing this output" in child.stderr and f"process {os.getpid()}" in child.stderr
    assert out.read_bytes() == before and not (tmp_path / "p.store.jsonl").exists()
    assert not lock_path(out).exists()  # released and removed


def test_two_generate_processes_on_one_output_make_each_call_once(tmp_path):
    server = FakeServer(lambda body, n: (200, completion(pairs_reply(body)), 2.0))  # the first run lasts ~4 s
    try:
        source = write_jsonl(tmp_path / "c.jsonl", CITATIONS * 1 + [{"citation": f"--Encore {i}."} for i in range(4)])
        args = [sys.executable, "-m", "dantes_mlx", "generate", str(source), "-o", str(tmp_path / "p.jsonl"),
                "--url", server.url, "--quiet"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert first.poll() is None  # the second run was refused while the first was still writing
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        server.close()
    assert second.returncode == 1 and f"process {first.pid}" in second.stderr, second.stderr
    assert "dantes-mlx generate" in second.stderr  # the command of the run that holds the output
    keys = [json.loads(line)["key"] for line in (tmp_path / "p.store.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 8 and len(server.requests) == 8


def test_a_stale_lock_from_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "p.jsonl"
    lock_path(out).write_text(json.dumps({"pid": 999999, "command": "dantes-mlx generate", "since": "then"}))
    with output_lock(out):  # no process holds the OS lock: taken over
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()
    assert not lock_path(out).exists()


# ---------------------------------------------------------------- the shared helpers
def test_check_output_refuses_inputs_wrong_kinds_and_file_parents(tmp_path):
    (tmp_path / "in.jsonl").write_text("{}\n")
    (tmp_path / "dir").mkdir()
    os.link(tmp_path / "in.jsonl", tmp_path / "hard.jsonl")
    (tmp_path / "sym.jsonl").symlink_to(tmp_path / "in.jsonl")
    for out, kind, needle in ((tmp_path / "hard.jsonl", "file", "overwrite the input"),
                              (tmp_path / "sym.jsonl", "file", "overwrite the input"),
                              (tmp_path / "dir" / ".." / "in.jsonl", "file", "overwrite the input"),
                              (tmp_path / "dir", "file", "is a folder"),
                              (tmp_path / "in.jsonl", "dir", "is a file"),
                              (tmp_path / "in.jsonl" / "x", "file", "is a file, not a folder")):
        with pytest.raises(DantesError, match=needle):
            check_output(out, kind=kind, inputs=[tmp_path / "in.jsonl"])
    with pytest.raises(DantesError, match="overwrite the input"):  # a side file it writes counts too
        check_output(tmp_path / "new.jsonl", inputs=[tmp_path / "in.jsonl"], writes=[tmp_path / "in.jsonl"])
    assert check_output(tmp_path / "new.jsonl", inputs=[tmp_path / "in.jsonl"]) == tmp_path / "new.jsonl"


def test_publish_swaps_in_only_complete_results_unless_there_is_nothing_to_lose(tmp_path):
    out = tmp_path / "c.jsonl"
    assert publish_jsonl(out, [{"a": 1}], complete=False) == (out, 1)  # nothing to lose: written
    assert publish_jsonl(out, [], complete=False) == (tmp_path / "c.partial.jsonl", 0)
    assert out.read_text() == '{"a": 1}\n'
    assert publish_jsonl(out, [{"a": 2}], complete=True) == (out, 1)
    assert not (tmp_path / "c.partial.jsonl").exists() and out.read_text() == '{"a": 2}\n'


def test_failure_limit_stops_after_n_failures_in_a_row():
    stream = [(0, ValueError("x")), (1, "ok"), (2, OSError("a")), (3, OSError("b")), (4, "never seen")]
    limit = FailureLimit(2)
    seen = [i for i, _ in limit.watch(iter(stream))]
    assert seen == [0, 1, 2, 3] and limit.stopped and limit.failed == 3
    assert limit.note("chunk", 5) == "3 of 5 chunks failed; stopped after 2 failures in a row: ValueError: x"


def test_every_default_setting_is_within_its_own_range():
    import dataclasses

    for name, cls in SECTIONS.items():
        instance = cls()
        for f in dataclasses.fields(cls):
            rule = f.metadata.get("rule")
            assert rule is None or rule.test(getattr(instance, f.name)), f"{name}.{f.name}"


def test_fetch_and_clean_take_their_folders_lock(tmp_path):
    """A second fetch into the same raw folder, or clean into the same clean folder, is refused while one runs."""
    book = tmp_path / "book.txt"
    book.write_text("Il dit : « Bonjour. »\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for folder, args in ((tmp_path / "data" / "raw", ["fetch", "--file", str(book)]),
                         (tmp_path / "data" / "clean", ["clean"])):
        folder.parent.mkdir(parents=True, exist_ok=True)
        with output_lock(folder):
            child = subprocess.run([sys.executable, "-m", "dantes_mlx", *args], cwd=tmp_path, capture_output=True,
                                   text=True, env=env, timeout=120)
        assert child.returncode == 1 and "another run is writing this output" in child.stderr, child.stderr
        assert f"process {os.getpid()}" in child.stderr
        done = subprocess.run([sys.executable, "-m", "dantes_mlx", *args], cwd=tmp_path, capture_output=True,
                              text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "clean" / "book.txt").is_file()
