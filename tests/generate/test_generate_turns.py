"""Multi-turn scenes and out-of-character questions: passages, fake-LLM conversations (malformed ones included),
rejects with reasons, resume after Ctrl-C, the ooc share and tag, the CLI flags.

In-process, no network: `pytest tests/generate/test_generate_turns.py -q`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dantes_mlx.cli import main
from dantes_mlx.config import CharacterConfig, GenerateConfig
from dantes_mlx.errors import ConfigError
from dantes_mlx.generate.ooc import card_text, ooc_calls, plan_ooc, topic_groups
from dantes_mlx.generate.pairs import GenerateInterrupted, generate_pairs, load_citations
from dantes_mlx.generate.stage import Settings
from dantes_mlx.generate.turns import conversation_schema, generate_conversations, passages
from dantes_mlx.llm.fake import FakeLLM
from dantes_mlx.workspace import Workspace

DANTES = CharacterConfig()
SENTENCES = ["La mer m'a appris la patience, monsieur, car elle rend tout ce qu'on lui confie.",
             "Quatorze années au château d'If m'ont enseigné que l'attente est une arme.",
             "Je ne hais point ceux qui m'ont trahi ; je leur rends seulement ce qu'ils m'ont donné.",
             "Dieu seul sait l'heure, mais l'homme patient sait s'y préparer.",
             "C'est ainsi que j'ai compris que toute la sagesse humaine tient en deux mots."]
# Two chapters: the first holds three neighbouring citations and a far one, the second one citation.
CITATIONS = [
    {"id": "a1", "citation": "--Un grand malheur, monsieur Morrel!", "contexte": "Dantès parle à Morrel",
     "book": "17989", "chapter": 1, "start": 100, "end": 140, "character": "Edmond Dantès"},
    {"id": "a2", "citation": "--Mon père est-il bien portant?", "contexte": "Dantès s'inquiète",
     "book": "17989", "chapter": 1, "start": 900, "end": 930, "character": "Edmond Dantès"},
    {"id": "a3", "citation": "--Je vais épouser Mercédès.", "contexte": "Dantès heureux",
     "book": "17989", "chapter": 1, "start": 1500, "end": 1530, "character": "Edmond Dantès"},
    {"id": "a4", "citation": "--Adieu, mon père.", "contexte": "Départ",
     "book": "17989", "chapter": 1, "start": 90_000, "end": 90_020, "character": "Edmond Dantès"},
    {"id": "b1", "citation": "--Je suis innocent, monsieur.", "contexte": "Dantès devant Villefort",
     "book": "17989", "chapter": 2, "start": 95_000, "end": 95_030, "character": "Edmond Dantès"},
]


def answer(seed: int, words: int = 60) -> str:
    text, i = [], seed
    while len(" ".join(text).split()) < words:
        text.append(SENTENCES[i % len(SENTENCES)])
        i += 1
    return f"Mon ami, voici ma réponse numéro {seed}. " + " ".join(text)


QUESTIONS = ["Que s'est-il passé ce jour-là, sur le port ?", "Et qu'avez-vous ressenti en apprenant la nouvelle ?",
             "Pourquoi ne vous êtes-vous pas méfié de vos amis ?"]


def scene(messages, n: int = 3) -> dict:
    """n exchanges, each answer distinct per passage (its length seeds it)."""
    seed = len(messages[-1]["content"])
    return {"exchanges": [{"question": q, "answer": answer(seed + i)} for i, q in enumerate(QUESTIONS[:n])]}


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def citations(tmp_path):
    return load_citations([write_jsonl(tmp_path / "c.jsonl", CITATIONS)])


def test_passages_are_neighbours_of_one_chapter(citations):
    groups = [[r["source_id"] for r in p] for p in passages(citations, 2)]
    assert groups == [["a1", "a2"], ["a3"], ["a4"], ["b1"]]  # size 2; a4 lies too far from a3; b1 another chapter
    assert [[r["source_id"] for r in p] for p in passages(citations, 5)] == [["a1", "a2", "a3"], ["a4"], ["b1"]]
    schema = conversation_schema(4)["properties"]["exchanges"]
    assert schema["minItems"] == 2 and schema["maxItems"] == 4


def test_conversations_with_malformed_replies_keep_every_reject_with_its_reason(citations, tmp_path):
    # prose, a fence, then the object left unclosed after its second answer (max_tokens): salvaged, not complete
    malformed = ('Voici la conversation :\n```json\n{"exchanges": [{"question": "Qui êtes-vous donc ?", '
                 f'"answer": "{answer(7)}"}}, {{"question": "Et ensuite ?", "answer": "{answer(8)}"')
    copying = {"exchanges": [{"question": "Que dites-vous à votre père ?", "answer": answer(3)},
                             {"question": "Et à Mercédès ?", "answer": "Trop court."},
                             {"question": "Et à Morrel ?", "answer": answer(4)}]}
    fake = FakeLLM([scene, malformed, copying])
    out = tmp_path / "out" / "conv.jsonl"
    summary = generate_conversations(citations, fake, out, GenerateConfig(turns=3), DANTES, progress=False)
    rows = read_rows(out)
    assert len(fake.calls) == 3 and fake.calls[0]["json_schema"]["title"] == "conversation"
    assert "- --Un grand malheur" in fake.calls[0]["messages"][-1]["content"]
    assert "- --Je vais épouser Mercédès." in fake.calls[0]["messages"][-1]["content"]
    assert len(rows) == 1 and summary.kept == 1 and summary.items == 3
    row = rows[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"] * 3
    assert row["source_ids"] == ["a1", "a2", "a3"] and row["source_id"] == "a1" and row["turns"] == 3
    rejects = read_rows(summary.rejects_path)
    reasons = {(r["source_id"], r["reason"], r.get("turn")) for r in rejects}
    # the cut-off reply: its first exchange alone is too few, its second was cut off, the prose is unparseable
    assert ("a4", "too_few_turns", 1) in reasons and ("a4", "cut_off", 2) in reasons
    assert ("b1", "too_short", 2) in reasons and ("b1", "after_rejected_turn", 3) in reasons
    assert ("b1", "too_few_turns", 1) in reasons
    assert any(r["source_id"] == "a4" and r["reason"] == "unparseable" for r in rejects)
    assert sum(summary.rejected.values()) == len(rejects)
    assert "rejected" in summary.summary() and "too_few_turns" in summary.summary()


def test_a_killed_run_resumes_without_asking_or_writing_twice(citations, tmp_path):
    whole = tmp_path / "whole" / "conv.jsonl"
    generate_conversations(citations, FakeLLM(default=scene), whole, GenerateConfig(turns=3), DANTES, progress=False)

    def interrupt(messages):
        raise KeyboardInterrupt

    out = tmp_path / "resumed" / "conv.jsonl"
    with pytest.raises(GenerateInterrupted, match=r"2/3 calls done"):
        generate_conversations(citations, FakeLLM([scene, scene, interrupt]), out, GenerateConfig(turns=3), DANTES,
                               progress=False)
    rest = FakeLLM([scene])
    generate_conversations(citations, rest, out, GenerateConfig(turns=3), DANTES, progress=False)
    assert len(rest.calls) == 1 and out.read_bytes() == whole.read_bytes()
    none = FakeLLM([])  # would raise if asked anything
    summary = generate_conversations(citations, none, out, GenerateConfig(turns=3), DANTES, progress=False)
    assert none.calls == [] and summary.stats.cached == 3 and len(read_rows(out)) == 3
    with pytest.raises(ConfigError, match="turns"):
        generate_conversations(citations, none, out, GenerateConfig(turns=1), DANTES, progress=False)


def test_ooc_calls_and_topics_are_deterministic():
    assert ooc_calls(30, 0.0, 3) == 0 and ooc_calls(30, 0.25, 3) == 4 and ooc_calls(9, 0.5, 3) == 3
    first, again = topic_groups(["a", "b", "c", "d"], 5, 2), topic_groups(["a", "b", "c", "d"], 5, 2)
    assert first == again and first[:2] == [["a", "b"], ["c", "d"]] and len(first) == 5


def ooc_reply(messages) -> dict:
    """Answers to the topics of an out-of-character call; the first one breaks character."""
    topics = [line[2:] for line in messages[-1]["content"].splitlines() if line.startswith("- ")]
    pairs = [{"instruction": f"Que pensez-vous de {t} ? Une intelligence artificielle saurait-elle ?",
              "response": answer(len(t))} for t in topics]
    pairs[0]["response"] = "En tant qu'IA, je ne peux pas avoir d'avis. " + answer(1)
    return {"pairs": pairs}


def test_ooc_share_adds_tagged_rows_answered_in_character(citations, tmp_path):
    def reply(messages):
        return ooc_reply(messages) if "n'appartiennent pas au livre" in messages[0]["content"] else {
            "pairs": [{"instruction": q, "response": answer(len(messages[-1]["content"]) + i)}
                      for i, q in enumerate(QUESTIONS[:2])]}

    fake = FakeLLM(default=reply)
    out = tmp_path / "p.jsonl"
    cfg = GenerateConfig(pairs_per_citation=2, ooc_share=0.2)
    card = "Fiche : marin, prisonnier, comte."
    summary = generate_pairs(citations, fake, out, cfg, DANTES, progress=False,
                             extra=lambda n, model, sampling: plan_ooc(cfg, DANTES, n, model, sampling, card))
    rows = read_rows(out)
    ooc = [r for r in rows if r.get("ooc")]
    assert len(fake.calls) == 5 + 2  # 10 book questions: 0.2 share -> 2.5 -> 2 calls of 2 questions (rounded up)
    assert "Fiche : marin, prisonnier, comte." in fake.calls[-1]["messages"][0]["content"]
    assert len(ooc) == 2 and all(r["source"] == "ooc" and len(r["topics"]) == 2 for r in ooc)
    assert summary.ooc == 2 and "2 of the rows are out-of-character" in summary.summary()
    rejects = read_rows(summary.rejects_path)
    assert sum(r["reason"] == "out_of_character" and r.get("ooc") for r in rejects) == 2  # the answers, not the
    # questions: asking about an "intelligence artificielle" is what an ooc question does


def test_stage_and_cli_write_conversations_with_ooc_chat_rows(tmp_path, monkeypatch):
    source = write_jsonl(tmp_path / "c.jsonl", CITATIONS)

    def reply(messages):
        return ooc_reply(messages) if "n'appartiennent pas au livre" in messages[0]["content"] else scene(messages, 2)

    monkeypatch.setattr("dantes_mlx.llm.make_client", lambda cfg: FakeLLM(default=reply))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["generate", str(source), "-o", "conv.jsonl", "--turns", "2", "--ooc-share",
                                       "0.3", "-k", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / "conv.jsonl")
    assert all("messages" in r and "instruction" not in r for r in rows)
    book, ooc = [r for r in rows if not r.get("ooc")], [r for r in rows if r.get("ooc")]
    # 4 passages of 2 exchanges; 8 x 0.3/0.7 -> 2 calls of 3 topics, one answer of each breaking character
    assert [len(r["messages"]) for r in book] == [4] * 4 and len(ooc) == 4
    assert all(len(r["messages"]) == 2 for r in ooc)
    assert "out-of-character questions" in result.output
    bad = CliRunner().invoke(main, ["generate", str(source), "-o", "x.jsonl", "--ooc-share", "1", "--quiet"])
    assert bad.exit_code == 1 and "--ooc-share must be at least 0 and less than 1" in bad.output


def test_card_text_reads_the_workspace_card_when_there_is_one(tmp_path):
    class WithCard:
        character_card = tmp_path / "card.md"

    assert card_text(Workspace.under(tmp_path)) is None and card_text(WithCard()) is None
    WithCard.character_card.write_text("Edmond Dantès, marin.\n", encoding="utf-8")
    assert card_text(WithCard()) == "Edmond Dantès, marin."
    settings = Settings.from_config({}, turns=2, ooc_share=0.5)
    assert settings.generate.turns == 2 and settings.generate.ooc_share == 0.5
