"""What a small real model botches, caught by the gates: loops, placeholders, one answer written k times, and
(generate.answers: citation) questions that are no questions. Then the questions mode end to end with a fake LLM,
and --limit/--max-tokens/--temperature from the CLI. Run: pytest tests/generate/test_quality_gates.py -q
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dantes_mlx.cli import main
from dantes_mlx.config import CharacterConfig, GenerateConfig
from dantes_mlx.generate.filters import (COPIES_CITATION, DUPLICATE_ANSWER, LOOP, NOT_A_QUESTION, PLACEHOLDER,
                                         TOO_SHORT, WRONG_LANGUAGE, FilterSettings, filter_group, pair_reason,
                                         placeholder, question_reason, repetition_loop)
from dantes_mlx.generate.pairs import generate_pairs
from dantes_mlx.generate.parser import ParsedPair
from dantes_mlx.generate.questions import parse_questions, spoken_text
from dantes_mlx.llm.fake import FakeLLM

LONG = ("La mer m'a appris la patience, monsieur, car elle rend tout ce qu'on lui confie, et j'ai attendu "
        "quatorze années au château d'If avant de comprendre que l'attente est une arme entre les mains de "
        "celui qui sait se taire.")
CITATIONS = [{"contexte": "Dantès parle à Morrel", "citation": "--Un grand malheur, monsieur Morrel! Nous avons "
              "perdu notre brave capitaine Leclère.", "source_id": "c1", "provenance": {}},
             {"contexte": "Dantès et l'armateur", "citation": "--J'ai dix-neuf ans, monsieur, mais j'ai appris la "
              "mer avant de savoir lire.", "source_id": "c2", "provenance": {}},
             {"contexte": "Dantès à quai", "citation": "--Mercédès!", "source_id": "c3", "provenance": {}}]


@pytest.mark.parametrize("text, looped", [
    ("que tb je ne me jour-là, je le jour-là, je le jour-là, je le jour-là,", True),  # the tiny demo's output
    ("Monsieur, monsieur, monsieur, monsieur.", True),
    (LONG, False),
    ("Attendre et espérer : voilà, monsieur, toute la sagesse humaine.", False),
])
def test_repetition_loops_are_told_from_prose(text, looped):
    assert repetition_loop(text) is looped


@pytest.mark.parametrize("text, slot", [("...", True), ("[votre question]", True), ("Question 2", True),
                                        ("Réponse :", True), ("{{citation}}", True), ("— ?", True),
                                        ("Pourquoi vous parlez ! Question 1: Question 2: Question 3:", True),
                                        ("Mercédès !", False), ("Que répondez-vous à cela ?", False),
                                        ("La question est de savoir qui vous êtes.", False)])
def test_placeholders_are_told_from_content(text, slot):
    assert placeholder(text) is slot


def test_a_looping_or_placeholder_pair_and_one_answer_written_k_times_are_rejected():
    settings = FilterSettings(min_answer_words=5)
    looped = "je le jour-là, " * 12
    assert pair_reason("Que ferez-vous demain ?", looped, settings) == LOOP
    assert pair_reason("[question]", LONG, settings) == PLACEHOLDER
    same = [ParsedPair("Qui êtes-vous ?", LONG, 1), ParsedPair("D'où venez-vous, monsieur ?", LONG + " Oui.", 1),
            ParsedPair("Et la mer ?", "Monsieur, la mer est ma seule patrie, et je n'en connais point d'autre "
                       "depuis que je sais marcher sur un pont.", 1)]
    kept, rejected = filter_group(same, settings, distinct_answers=True)
    assert [p.instruction for p in kept] == ["Qui êtes-vous ?", "Et la mer ?"]
    assert [reason for _, reason in rejected] == [DUPLICATE_ANSWER]


@pytest.mark.parametrize("question, reason", [
    ("Quel est votre métier, monsieur ?", None),
    ("Un grand malheur", NOT_A_QUESTION),
    ("Pourquoi ?", TOO_SHORT),
    ("Un grand malheur, monsieur Morrel ?", COPIES_CITATION),
    ("What is your name, sir, and where do you come from ?", WRONG_LANGUAGE),
    ("Question 1 ?", PLACEHOLDER),
    ("Et vous, et vous, et vous, et vous, et vous ?", LOOP),
])
def test_each_question_gate_names_its_reason(question, reason):
    citation = "--Un grand malheur, monsieur Morrel! Nous avons perdu notre brave capitaine Leclère."
    assert question_reason(question, FilterSettings(), citation) == reason


def test_questions_parse_from_whole_and_cut_json():
    assert parse_questions('{"questions": ["Qui ?", "Quoi ?"]}') == (["Qui ?", "Quoi ?"], "")
    cut, problem = parse_questions('{"questions": ["Qui êtes-vous ?", "Que fai')
    assert cut == ["Qui êtes-vous ?"] and problem.startswith("not JSON")
    assert spoken_text("--Un grand malheur, monsieur!") == "Un grand malheur, monsieur!"
    assert spoken_text("« Attendre et espérer. »") == "Attendre et espérer."


def questions_reply(messages) -> dict:
    """What a small model writes: one good question, one copy of the reply, one not a question."""
    reply = messages[-1]["content"].split("Réplique : « ")[1].rstrip(" »")
    return {"questions": ["Quelle nouvelle nous apportez-vous, Dantès ?", reply[2:40] + " ?", "Un grand malheur"]}


def test_answers_from_the_citation_keep_the_characters_words_and_count_rejects(tmp_path):
    out = tmp_path / "pairs.jsonl"
    fake = FakeLLM(default=questions_reply)
    cfg = GenerateConfig(answers="citation", limit=2)
    summary = generate_pairs(CITATIONS, fake, out, cfg, CharacterConfig(), progress=False)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(fake.calls) == 2 and summary.limited == 1  # --limit 2: the third citation is left out
    assert [r["response"] for r in rows] == [spoken_text(CITATIONS[0]["citation"]),
                                             spoken_text(CITATIONS[1]["citation"])]
    assert all(r["instruction"] == "Quelle nouvelle nous apportez-vous, Dantès ?" and r["answer"] == "citation"
               for r in rows)
    assert summary.rejected == {COPIES_CITATION: 2, NOT_A_QUESTION: 2}
    request = fake.calls[0]
    assert request["json_schema"]["properties"]["questions"]["minItems"] == 3
    assert "--limit: 1 more citations were left out" in summary.summary()
    assert "generated tokens/s" in summary.summary()


def test_cli_limit_answers_max_tokens_and_temperature_reach_the_llm(tmp_path, monkeypatch):
    citations = tmp_path / "citations.jsonl"
    citations.write_text("".join(json.dumps({**c, "character": "Edmond Dantès"}, ensure_ascii=False) + "\n"
                                 for c in CITATIONS), encoding="utf-8")
    seen = {}

    def client(cfg):
        seen.update(max_tokens=cfg.max_tokens, temperature=cfg.temperature)
        return FakeLLM(default=questions_reply)

    monkeypatch.setattr("dantes_mlx.llm.make_client", client)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["generate", str(citations), "-o", str(tmp_path / "p.jsonl"), "--limit", "1",
                                       "--answers", "citation", "--max-tokens", "77", "--temperature", "0.2",
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    assert seen == {"max_tokens": 77, "temperature": 0.2}
    assert len((tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()) == 1
    bad = CliRunner().invoke(main, ["generate", str(citations), "--limit", "-1"])
    assert bad.exit_code == 2 and "--limit" in bad.output
