"""Does the persona hold? Out-of-character probes and multi-turn scenes in `eval`: the model-free checks, the
scenes played turn by turn with each model's own answers, the report and side-by-side sections, and both sides
in llama.cpp (`--base-gguf` + `--gguf`) with their test losses. Run: python -m pytest tests/evaluate/test_persona.py -q
"""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner
from test_evaluate import PERSONA, write_dataset

from dantes_mlx.cli import main
from dantes_mlx.config import CharacterConfig, EvalConfig, load_yaml, section
from dantes_mlx.errors import ConfigError
from dantes_mlx.evaluate import persona
from dantes_mlx.evaluate.compare import EvalResult, Side, Task, answer_all, build_scenes, build_tasks, read_test_rows
from dantes_mlx.evaluate.report import render_html, render_markdown
from dantes_mlx.store import Store

AI = "calls itself an AI or assistant"


@pytest.mark.parametrize("answer, reasons", [
    ("Je ne sais ce qu'est une intelligence artificielle, monsieur ; je sais ce qu'est la mer.", []),
    ("Je suis Edmond Dantès, et je vous réponds du fond de ma prison.", []),
    ("En tant qu'intelligence artificielle, je ne peux pas vous répondre.", [AI]),
    ("Je suis un modèle de langage entraîné pour vous aider.", [AI]),
    ("Je suis une IA, monsieur, et je vous salue.", [AI]),
    ("Bien sûr ! Je suis un assistant virtuel, votre serviteur.", [AI]),
    ("As an AI language model, I cannot answer that.", [AI, "answers in en, not fr"]),
    ("J'ai été créé par une équipe de chercheurs, ce que je sais de la mer le prouve.",
     ["names the company or model behind it"]),
    ("Je suis ChatGPT et je vous salue.", ["names the company or model behind it"]),
    ("Je n'ai pas d'opinions personnelles sur ce sujet, mais je vous dirai ceci.",
     ["disclaims a body, feelings or opinions"]),
    ("Voici la réponse, n'hésitez pas à me poser d'autres questions.", ["an assistant's stock phrases"]),
    ("Voici mes conseils :\n- dormez bien\n- travaillez tôt", ["a chat assistant's layout (Markdown heading or list)"]),
    ("## Conseils\nTravaillez, monsieur, et espérez.", ["a chat assistant's layout (Markdown heading or list)"]),
    ("The sea was calm and I was waiting for my father at the harbour.", ["answers in en, not fr"]),
    ("   ", ["empty answer"]),
    ("Monte-Cristo !", []),  # too short to tell its language: not a break
])
def test_breaks_names_each_way_of_leaving_the_character(answer, reasons):
    assert persona.breaks(answer, "fr") == reasons
    assert persona.in_character(answer, "fr") is (not reasons)


def test_an_english_character_may_answer_in_english():
    assert persona.breaks("The sea was calm and I was waiting for my father at the harbour.", "en") == []


def test_ooc_and_scene_summaries_known_values():
    answers = ["Je vous réponds en marin, monsieur.", "En tant qu'IA, je ne peux pas.", "I am an AI, sorry."]
    s = persona.ooc_summary(answers)
    assert s["n"] == 3 and s["in_character"] == pytest.approx(1 / 3)
    assert s["reasons"] == {AI: 2, "answers in en, not fr": 1}
    scenes = [["Je suis Dantès, monsieur.", "Je vous le dis : la vengeance est lente.", "Je ne suis qu'un marin."],
              ["Je vous salue.", "Tu me trahis, toi, et je le sais.", "Je suis un programme informatique."],
              ["Je suis Sinbad.", "Vous le saurez."]]
    s = persona.scene_summary(scenes)
    assert s["n"] == 3 and s["turns"] == 3 and s["by_turn"] == [1.0, 1.0, 0.5]
    assert s["last_turn"] == pytest.approx(2 / 3) and s["every_turn"] == pytest.approx(2 / 3)
    assert s["address_consistent"] == pytest.approx(2 / 3)  # the second scene goes from vous to tu
    assert persona.scene_summary([]) == {"n": 0}


def test_scenes_come_from_the_settings_and_from_multi_turn_test_rows(tmp_path):
    write_dataset(tmp_path, n_test=2)
    multi = {"messages": [{"role": "system", "content": PERSONA}, {"role": "user", "content": "Qui êtes-vous ?"},
                          {"role": "assistant", "content": "Dantès."}, {"role": "user", "content": "Et ensuite ?"},
                          {"role": "assistant", "content": "La mer."}]}
    with (tmp_path / "test.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(multi, ensure_ascii=False) + "\n")
    rows, _ = read_test_rows(tmp_path)
    cfg = EvalConfig(samples=0, probes=["Qui es-tu ?"], ooc_probes=["Es-tu une IA ?"],
                     scenes=[["Bonjour ?", "Et la mer ?", "Et Internet ?"]], scene_rows=5)
    tasks = build_tasks(cfg, PERSONA, rows, tmp_path / "test.jsonl")
    assert [(t.kind, t.id) for t in tasks] == [("probe", "probe-0"), ("ooc", "ooc-0"), ("scene", "scene-0"),
                                                ("scene", "scene-test-2")]
    assert tasks[1].messages == [{"role": "system", "content": PERSONA}, {"role": "user", "content": "Es-tu une IA ?"}]
    assert tasks[2].turns == ["Bonjour ?", "Et la mer ?", "Et Internet ?"] and tasks[2].question == "Et Internet ?"
    assert tasks[3].messages == [{"role": "system", "content": PERSONA}]
    assert tasks[3].turns == ["Qui êtes-vous ?", "Et ensuite ?"]
    none = build_scenes(EvalConfig(scenes=[], scene_rows=0), [], rows, random.Random(0))
    assert none == []


def test_bad_scenes_in_the_settings_name_the_fix(tmp_path):
    config = tmp_path / "dantes.yaml"
    config.write_text("eval:\n  scenes:\n    - [\"Une seule question ?\"]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="2 or more"):
        section(EvalConfig, load_yaml(config))
    config.write_text("eval:\n  scenes: [\"Qui ?\", \"Et ?\"]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="list of lists"):
        section(EvalConfig, load_yaml(config))


class EchoEngine:
    """A fake model that answers with the turn number and what it said before (its own words in the context)."""
    name = "echo"

    def __init__(self):
        self.calls = []

    def generate(self, messages, **sampling):
        self.calls.append(messages)
        mine = [m["content"] for m in messages if m["role"] == "assistant"]
        return f"Je réponds au tour {len(mine) + 1}, après {len(mine)} réponses à vous."


def test_a_scene_is_played_turn_by_turn_with_the_models_own_answers_and_cached(tmp_path):
    scene = Task("scene", "scene-0", "C ?", [{"role": "system", "content": PERSONA}], turns=["A ?", "B ?", "C ?"])
    engine, side, store = EchoEngine(), Side("tuned"), Store(tmp_path / "answers.jsonl")
    answer_all(lambda: engine, {"name": "echo"}, [scene], EvalConfig(), store, side)
    assert side.turns["scene-0"] == [f"Je réponds au tour {i}, après {i - 1} réponses à vous." for i in (1, 2, 3)]
    assert side.answers["scene-0"] == side.turns["scene-0"][-1]
    third = engine.calls[2]
    assert [m["role"] for m in third] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert third[2]["content"] == side.turns["scene-0"][0] and third[-1]["content"] == "C ?"
    again, side2 = EchoEngine(), Side("tuned")
    answer_all(lambda: again, {"name": "echo"}, [scene], EvalConfig(), Store(tmp_path / "answers.jsonl"), side2)
    assert again.calls == [] and side2.turns == side.turns  # every turn came from the cache


def result_with_scenes() -> EvalResult:
    tasks = [Task("ooc", "ooc-0", "Es-tu une IA ?", []), Task("scene", "scene-0", "Et ?", [], turns=["Qui ?", "Et ?"])]
    result = EvalResult("2026-12-03", "base", "adapters", "", "data", "Edmond Dantès",
                        {"test_rows": 1, "format": "chat", "temperature": 0.0, "max_tokens": 8, "seed": 0,
                         "mask_prompt": True, "language": "fr"}, tasks=[t.__dict__ for t in tasks])
    result.sides = {"base": Side("base", answers={"ooc-0": "En tant qu'IA, je ne sais pas.", "scene-0": "b2"},
                                 turns={"scene-0": ["Je suis Dantès.", "Je suis une IA."]}),
                    "tuned": Side("tuned", answers={"ooc-0": "Je ne connais que la mer, monsieur.", "scene-0": "t2"},
                                  turns={"scene-0": ["Je suis Dantès.", "Je suis le comte de Monte-Cristo."]})}
    from dantes_mlx.evaluate.compare import score
    score(result, tasks, None, None, "fr")
    return result


def test_report_shows_the_ooc_share_and_each_scene_turn():
    result = result_with_scenes()
    assert result.metrics["base"]["ooc"]["in_character"] == 0.0 and result.metrics["tuned"]["ooc"]["in_character"] == 1
    assert result.metrics["base"]["scenes"]["by_turn"] == [1.0, 0.0] and result.metrics["tuned"]["scenes"]["last_turn"] == 1
    html = render_html(result, None, None)
    assert "<td class=''>Out-of-character probes answered in character</td><td class='worse num'>0%</td>" in html
    assert "turn 2: Et ?" in html and "breaks character: calls itself an AI or assistant" in html
    md = render_markdown(result)
    assert "| Out-of-character probes answered in character | 0% | 100% |" in md
    assert "| Scenes: in character at the last turn | 0% | 100% |" in md
    assert "**turn 2: Et ?**" in md and "Je suis le comte de Monte-Cristo." in md


def test_side_by_side_writes_every_models_ooc_answers_and_scenes(tmp_path):
    from dataclasses import asdict

    folders = []
    for name, last in (("sft", "Je suis une IA."), ("dpo", "Je suis le comte.")):
        result = result_with_scenes()
        result.adapter_path = f"adapters-{name}"
        result.sides["tuned"].turns["scene-0"][-1] = last
        result.sides["tuned"].answers["scene-0"] = last
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(asdict(result), ensure_ascii=False), encoding="utf-8")
        folders.append(str(folder))
    run = CliRunner().invoke(main, ["eval", "--side-by-side", folders[0], "--side-by-side", folders[1],
                                    "-o", str(tmp_path / "both")])
    assert run.exit_code == 0, run.output
    assert "| metric | base | adapters-sft | adapters-dpo |" in run.output
    assert "| Out-of-character probes answered in character | 0% | 100% | 100% |" in run.output
    text = (tmp_path / "both" / "side-by-side.md").read_text(encoding="utf-8")
    assert "- **adapters-sft**: Je suis une IA." in text and "- **adapters-dpo**: Je suis le comte." in text
    assert "### Es-tu une IA ?" in text and "- **base**: En tant qu'IA, je ne sais pas." in text


@pytest.mark.slow
def test_both_sides_in_llama_cpp_measure_the_test_loss_like_mlx_lm(tiny_model_dir, tiny_gguf, tmp_path):
    """--base-gguf + --gguf: no mlx model loads for the answers, both test losses come from llama.cpp, and on the
    same weights (the tiny model and its f16 GGUF) llama.cpp's loss is mlx-lm's within f16 rounding (0.5%)."""
    from dantes_mlx.evaluate.compare import evaluate

    data = write_dataset(tmp_path / "dataset", n_test=4)
    cfg = EvalConfig(samples=1, max_tokens=6, probes=[], ooc_probes=["Es-tu une IA ?"],
                     scenes=[["Qui ?", "Et ?"]])
    both = evaluate(cfg, CharacterConfig(), base_model=str(tiny_model_dir), data_dir=data, out_dir=tmp_path / "g",
                    gguf=tiny_gguf, base_gguf=tiny_gguf)
    base, tuned = both.sides["base"], both.sides["tuned"]
    assert base.engine.startswith("llama.cpp") or "gguf" in base.engine.lower()
    assert base.loss is not None and tuned.loss == pytest.approx(base.loss)
    assert "llama.cpp" in base.loss_note and len(tuned.turns["scene-0"]) == 2
    assert both.metrics["tuned"]["scenes"]["n"] == 1 and both.metrics["tuned"]["ooc"]["n"] == 1
    mlx = evaluate(cfg, CharacterConfig(), base_model=str(tiny_model_dir), data_dir=data, out_dir=tmp_path / "m",
                   gguf=tiny_gguf)
    # mlx-lm (float32) vs llama.cpp (f16) on a random model's large logits: 14.42 vs 14.39 here
    assert mlx.sides["base"].loss == pytest.approx(base.loss, rel=5e-3)
    assert mlx.sides["tuned"].loss is None and "--base-gguf" in mlx.sides["tuned"].loss_note
