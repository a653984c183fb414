"""The card's persona where the stages use it: prepare's rows, chat/ask's system prompt, eval's probes and judge,
export's Modelfile SYSTEM and parity prompts, and `run`'s card stage between generate and prepare; each stage says
which persona it used. In-process, no model, no network: `pytest tests/card -q`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import dantes_mlx.chat.engines
from card_fakes import card_reply, read_json, step_of, write_jsonl
from dantes_mlx.cli import main
from dantes_mlx.config import ProjectFile, load_yaml
from dantes_mlx.evaluate import stage as evaluate
from dantes_mlx.export import stage as export
from dantes_mlx.llm.fake import FakeLLM
from dantes_mlx.pipeline.run import STAGES, run
from dantes_mlx.workspace import Workspace

CARD_PERSONA = "Tu es Edmond Dantès, marin de Marseille : patient, secret, et fidèle à ceux qui t'ont aidé."
MINE = "Tu es le comte, et tu te venges."


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder whose data/card/card.json is a card of Edmond Dantès with a persona (dantes.yaml keeps the
    default persona)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "card").mkdir(parents=True)
    (tmp_path / "data" / "card" / "card.json").write_text(
        json.dumps({"character": "Edmond Dantès", "persona": CARD_PERSONA}, ensure_ascii=False), encoding="utf-8")
    return tmp_path


def pairs_rows(citations: int = 15) -> list[dict]:
    return [{"instruction": f"Question {k} sur la scène {c} ?", "response": f"Réponse {k} : la patience, la mer et "
             f"la justice, leçon numéro {c * 10 + k} de ma longue captivité.", "source_id": f"cit-{c:03d}"}
            for c in range(citations) for k in range(3)]


def system_of(path) -> str:
    row = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    return row["messages"][0]["content"] if row["messages"][0]["role"] == "system" else ""


def test_prepare_writes_the_cards_persona_unless_the_user_wrote_one(project):
    source = write_jsonl(project / "pairs.jsonl", pairs_rows())
    result = CliRunner().invoke(main, ["prepare", str(source), "-o", "out", "--tokenizer", "none"])
    assert result.exit_code == 0, result.output
    assert system_of(project / "out" / "train.jsonl") == CARD_PERSONA
    assert "persona: the character card (data/card/card.json)" in result.stderr
    (project / "dantes.yaml").write_text(f"character:\n  persona: {MINE}\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["prepare", str(source), "-o", "out2", "--tokenizer", "none"])
    assert result.exit_code == 0, result.output
    assert system_of(project / "out2" / "train.jsonl") == MINE
    assert "persona: character.persona of the settings file" in result.stderr


class EchoEngine:
    name = "echo"

    def __init__(self):
        self.calls = []

    def stream(self, messages, **sampling):
        self.calls.append(messages)
        yield "Oui."


def test_chat_and_ask_send_the_cards_persona_and_say_so(project, monkeypatch):
    engine = EchoEngine()
    monkeypatch.setattr(dantes_mlx.chat.engines, "load_engine", lambda **kwargs: engine)
    result = CliRunner().invoke(main, ["ask", "Qui êtes-vous ?", "--model", "m"])
    assert result.exit_code == 0, result.output
    assert engine.calls[-1][0] == {"role": "system", "content": CARD_PERSONA}
    assert "system prompt: the character card (data/card/card.json)" in result.stderr
    result = CliRunner().invoke(main, ["ask", "Qui ?", "--model", "m", "--system", MINE])
    assert engine.calls[-1][0]["content"] == MINE and "system prompt: --system" in result.stderr
    result = CliRunner().invoke(main, ["chat", "--model", "m"], input="Bonjour\n/quit\n")
    assert result.exit_code == 0, result.output
    assert engine.calls[-1][0] == {"role": "system", "content": CARD_PERSONA}


def test_eval_gives_the_cards_persona_to_the_probes_and_the_judge(project, monkeypatch):
    seen = {}
    monkeypatch.setattr(evaluate.compare, "evaluate", lambda cfg, character, **kw: seen.setdefault("c", character))
    (project / "adapters").mkdir()
    (project / "adapters" / "adapter_config.json").write_text('{"model": "base"}', encoding="utf-8")
    (project / "adapters" / "adapters.safetensors").write_bytes(b"")  # an mlx-lm adapter folder (never loaded here)
    (project / "data" / "dataset").mkdir()
    config, logs = ProjectFile({}), []
    settings = evaluate.Settings.from_config(config)
    evaluate.run(settings, Workspace.from_config(config), logs.append)
    assert seen["c"].persona == CARD_PERSONA and seen["c"].name == "Edmond Dantès"
    assert "persona: the character card (data/card/card.json), character.persona being a default" in logs
    mine = ProjectFile({"character": {"persona": MINE}})
    assert evaluate.Settings.from_config(mine).character.persona == MINE


def test_export_puts_the_cards_persona_in_the_modelfile_and_the_parity_prompts(project, monkeypatch):
    seen, logs = {}, []
    monkeypatch.setattr(export, "export_all", lambda base, adapter, out, **kw: seen.update(kw))
    config = ProjectFile({})
    export.run(export.Settings.from_config(config), Workspace.from_config(config), logs.append)
    assert seen["persona"] == CARD_PERSONA  # export_all writes it as the Modelfiles' SYSTEM and parity's system
    assert any(line.startswith("persona (the Modelfile's SYSTEM, the parity prompts): the character card")
               for line in logs)
    assert export.ParitySettings.from_config(config, gguf="m.gguf").persona == CARD_PERSONA
    assert export.Settings.from_config(ProjectFile({"character": {"persona": MINE}})).persona == MINE


def test_run_builds_the_card_before_prepare_which_uses_its_persona(tmp_path, monkeypatch):
    import dantes_mlx.llm as llm

    monkeypatch.chdir(tmp_path)
    assert STAGES.index("generate") < STAGES.index("card") < STAGES.index("prepare")
    rows = [{"id": f"17989:{i}", "character": "Edmond Dantès", "contexte": "", "citation": f"--Attendre {i} fois."}
            for i in range(6)]
    (tmp_path / "data" / "citations").mkdir(parents=True)
    write_jsonl(tmp_path / "data" / "citations" / "citations.jsonl", rows)
    (tmp_path / "data" / "pairs").mkdir()
    write_jsonl(tmp_path / "data" / "pairs" / "pairs.jsonl", pairs_rows())
    (tmp_path / "dantes.yaml").write_text("llm:\n  model: gen.gguf\ncard:\n  block_size: 3\nprepare:\n"
                                          "  tokenizer: none\n", encoding="utf-8")
    fake = FakeLLM(default=card_reply)
    monkeypatch.setattr(llm, "make_client", lambda cfg: fake)
    logs = []
    run(load_yaml("dantes.yaml"), start="card", stop="prepare", log=logs.append)
    assert [step_of(c["messages"]) for c in fake.calls] == ["map", "map", "reduce", "persona"]
    persona = read_json(tmp_path / "data" / "card" / "card.json")["persona"]
    assert persona == "Tu es Edmond Dantès. Tu parles peu, et bien."
    assert system_of(tmp_path / "data" / "dataset" / "train.jsonl") == persona
    assert any(line.startswith("persona: the character card") for line in logs)


def test_run_skips_the_card_without_an_llm_and_prepare_keeps_character_persona(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "pairs").mkdir(parents=True)
    write_jsonl(tmp_path / "data" / "pairs" / "pairs.jsonl", pairs_rows())
    logs = []
    run(ProjectFile({"prepare": {"tokenizer": "none"}, "character": {"persona": MINE}}), start="card", stop="prepare",
        log=logs.append)
    assert any(line.startswith("card: skipped, no LLM configured") for line in logs)
    assert not (tmp_path / "data" / "card").exists()
    assert system_of(tmp_path / "data" / "dataset" / "train.jsonl") == MINE
