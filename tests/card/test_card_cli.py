"""`dantes-mlx card` through click: default inputs, an OpenAI-compatible server (a fake on 127.0.0.1), a server
that fails, the settings in dantes.yaml. No network: `pytest tests/card -q`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from card_fakes import card_reply, read_json, step_of, write_jsonl
from dantes_mlx.cli import main
from dantes_mlx.llm.fake import FakeLLM
from dantes_mlx.outputs import output_lock
from fake_openai import FakeServer, completion

ROWS = [{"id": f"17989:{i}-{i + 9}", "character": "Edmond Dantès", "contexte": f"scène {i}",
         "citation": f"--Je suis Dantès, et je me souviens de la scène numéro {i}."} for i in range(10)]
OTHER = [{"id": f"m:{i}", "character": "Mercédès", "contexte": "", "citation": f"--Edmond, réplique {i}."}
         for i in range(3)]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with Dantès' and Mercédès' citations as `extract` leaves them."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "data" / "citations"
    folder.mkdir(parents=True)
    write_jsonl(folder / "citations.jsonl", ROWS)
    write_jsonl(folder / "mercedes.jsonl", OTHER)
    write_jsonl(folder / "citations.store.jsonl", [{"key": "k", "value": {}}])  # a side file: never read
    (tmp_path / "dantes.yaml").write_text("llm:\n  retries: 0\ncard:\n  block_size: 4\n  fan_in: 2\n",
                                          encoding="utf-8")
    return tmp_path


def test_card_through_a_server_reads_the_characters_citations_and_resumes(project):
    server = FakeServer(lambda body, n: (200, completion(json.dumps(card_reply(body["messages"]),
                                                                   ensure_ascii=False), 100, 50), 0))
    try:
        args = ["card", "--url", server.url, "--model", "served", "--quiet"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        sent = [b["messages"][-1]["content"] for b in server.requests]
        assert "Mercédès" not in "".join(sent) and "skipped" in result.stderr
        # 10 citations, 4 a block (dantes.yaml): 3 map calls, fan-in 2: 2 reduce calls, 1 persona
        assert [step_of(b["messages"]) for b in server.requests] == ["map"] * 3 + ["reduce"] * 2 + ["persona"]
        enums = {tuple(b["response_format"]["json_schema"]["schema"]["properties"]["identity"]["items"]["properties"][
            "evidence"]["items"]["properties"]["id"]["enum"]) for b in server.requests[:3]}  # sent 4 at a time
        assert enums == {("c1", "c2", "c3", "c4"), ("c5", "c6", "c7"), ("c8", "c9", "c10")}
        assert "map: 3 call(s) (0 cached, 3 made now, 0 failed); all calls: prompt 300 tokens" in result.output
        card = read_json(project / "data" / "card" / "card.json")
        assert card["provenance"]["model"] == "served" and card["persona"].startswith("Tu es Edmond Dantès")
        again = CliRunner().invoke(main, args)
        assert again.exit_code == 0 and len(server.requests) == 6
        assert "map: 3 call(s) (3 cached, 0 made now" in again.output
    finally:
        server.close()


def test_a_server_that_fails_exits_1_and_keeps_the_previous_card(project):
    good = FakeServer(lambda body, n: (200, completion(json.dumps(card_reply(body["messages"])), 10, 5), 0))
    down = FakeServer(lambda body, n: (500, {"error": {"message": "model crashed"}}, 0))
    try:
        assert CliRunner().invoke(main, ["card", "--url", good.url, "--quiet"]).exit_code == 0
        before = (project / "data" / "card" / "card.json").read_bytes()
        result = CliRunner().invoke(main, ["card", "--url", down.url, "--quiet", "--max-traits", "3"])
        assert result.exit_code == 1
        assert "map: 3 of 3 blocks failed" in result.output and "previous card" in result.output
        assert "model crashed" in result.output and "fix:" in result.output
        assert (project / "data" / "card" / "card.json").read_bytes() == before
    finally:
        good.close()
        down.close()


def test_files_given_as_arguments_options_and_settings_checked_first(project, monkeypatch):
    fake = FakeLLM(default=card_reply)
    monkeypatch.setattr("dantes_mlx.llm.make_client", lambda cfg: fake)
    mine = write_jsonl(project / "mine.jsonl", [{"contexte": "", "citation": "--Attendre et espérer."}])
    result = CliRunner().invoke(main, ["card", str(mine), "-o", "out", "--persona-chars", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    assert [step_of(c["messages"]) for c in fake.calls] == ["map"] and (project / "out" / "card.json").is_file()
    result = CliRunner().invoke(main, ["card", "--fan-in", "1"])
    assert result.exit_code == 1 and "--fan-in must be 2 or more" in result.output
    result = CliRunner().invoke(main, ["card", str(mine), "-o", str(mine)])
    assert result.exit_code == 1 and "is a file, but this output is a folder" in result.output
    (project / "dantes.yaml").write_text("card:\n  max_trait: 3\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["card"])
    assert result.exit_code == 1 and "did you mean 'max_traits'" in result.output and len(fake.calls) == 1


def test_a_second_run_on_a_card_folder_being_written_is_refused(project):
    repo = Path(__file__).resolve().parents[2]
    with output_lock(project / "data" / "card" / "card.json"):
        child = subprocess.run([sys.executable, "-m", "dantes_mlx", "card", "--url", "http://127.0.0.1:9/v1",
                                "--quiet"], capture_output=True, text=True, cwd=project,
                               env={**os.environ, "PYTHONPATH": str(repo)}, timeout=120)
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    assert "another run is writing this output" in child.stderr and f"process {os.getpid()}" in child.stderr
    assert not (project / "data" / "card" / "card.json").exists()
