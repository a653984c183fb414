"""The card stage with a fake LLM: map, reduce, grounding, persona, resume, failures, unusable replies.

In-process, no network: `pytest tests/card -q`. The fake (card_fakes.py) answers from what each call carries.
"""

from __future__ import annotations

import json
import re

import pytest

from card_fakes import card_reply, cited, map_reply, read_json, step_of, summaries
from dantes_mlx.card.build import build_card, output_files
from dantes_mlx.card.schema import TRAIT_LISTS, card_schema, close_cut_json, parse_card, traits_at
from dantes_mlx.config import CardConfig, CharacterConfig
from dantes_mlx.errors import InputError, StageFailed
from dantes_mlx.generate.pairs import GenerateInterrupted
from dantes_mlx.llm.base import ChatResult
from dantes_mlx.llm.fake import FakeLLM

DANTES = CharacterConfig()
WORDS = ["--Un grand malheur, monsieur Morrel! nous avons perdu ce brave capitaine Leclère.",
         "--Il est mort, de la fièvre cérébrale, au large de Civita-Vecchia.",
         "--Je suis innocent, monsieur, je vous le jure sur l'honneur.",
         "--Attendre et espérer: toute la sagesse humaine est dans ces deux mots.",
         "--Mon père! mon bon père! je reviens, et je vous trouve si pâle.",
         "--Mercédès, je t'aime, et rien ne nous séparera plus.",
         "--Dieu est pour moi, puisqu'il m'a sauvé.",
         "--Le trésor existe, l'abbé ne mentait pas.",
         "--Je suis l'envoyé de la Providence, et je viens punir.",
         "--Monsieur, je n'ai jamais rien oublié de ce que l'on m'a fait.",
         "--La mer est mon domaine, je la connais comme un ami.",
         "--Vous me demandez qui je suis? Un homme qui a beaucoup souffert."]
CITATIONS = [{"source_id": f"17989:{100 * i}-{100 * i + 50}", "citation": w, "contexte": f"scène {i}",
              "provenance": {}} for i, w in enumerate(WORDS)]


def run(tmp_path, client, cfg=None, citations=CITATIONS, character=DANTES, **kw):
    logs = []
    summary = build_card(citations, client, tmp_path / "card", cfg or CardConfig(block_size=4, fan_in=2), character,
                         logs.append, progress=False, **kw)
    return summary, logs


def keys_asked(fake: FakeLLM) -> list[str]:
    return [json.dumps([c["messages"], c["json_schema"]], sort_keys=True) for c in fake.calls]


# -- map, reduce, persona ------------------------------------------------------------------------------
def test_map_reduce_persona_write_a_grounded_card(tmp_path):
    fake = FakeLLM(default=card_reply)
    summary, logs = run(tmp_path, fake)
    assert summary.failure() is None
    steps = [step_of(c["messages"]) for c in fake.calls]
    # 12 citations, 4 a block: 3 map calls; fan-in 2: level 1 merges 2 (one carried), level 2 merges 2; 1 persona.
    assert steps == ["map"] * 3 + ["reduce"] * 2 + ["persona"] and summary.levels == 2
    assert summary.cost["map"]["calls"] == 3 and summary.cost["reduce"]["calls"] == 2
    maps = [c for c in fake.calls if step_of(c["messages"]) == "map"]
    assert len({c["messages"][0]["content"] for c in maps}) == 1       # fixed instructions first: one prefix
    assert [[k for k, _ in cited(c["messages"])] for c in maps] == [[f"c{i}" for i in range(a, a + 4)]
                                                                  for a in (1, 5, 9)]
    for call in maps:  # the schema lets the evidence name only the block's citations
        enum = call["json_schema"]["properties"]["identity"]["items"]["properties"]["evidence"]["items"][
            "properties"]["id"]["enum"]
        assert enum == [k for k, _ in cited(call["messages"])]
    card = read_json(tmp_path / "card" / "card.json")
    by_id = {c["source_id"]: c["citation"] for c in CITATIONS}
    evidence = [e for path in TRAIT_LISTS for t in traits_at(card, path) for e in t["evidence"]]
    assert evidence and all(e["quote"] in by_id[e["id"]] and e["citation"] == by_id[e["id"]] for e in evidence)
    assert card["character"] == "Edmond Dantès" and card["summary"] == "Fusion de 2 fiches."
    assert card["persona"] == "Tu es Edmond Dantès. Tu parles peu, et bien."
    assert (tmp_path / "card" / "persona.txt").read_text(encoding="utf-8") == card["persona"] + "\n"
    md = (tmp_path / "card" / "card.md").read_text(encoding="utf-8")
    assert md.startswith("# Fiche de personnage : Edmond Dantès") and "## Style verbal" in md and "### Registre" in md
    assert "`17989:0-50` « --Un grand malheur, »" in md
    assert card["provenance"]["prompt_versions"] == {"map": "card_map_fr_v1", "reduce": "card_reduce_fr_v1",
                                                     "persona": "card_persona_fr_v1"}
    assert logs[0] == "map: 12 citations in 3 blocks"
    assert "card.md, persona.txt" in "\n".join(summary.lines())


def test_one_block_needs_no_reduce_and_persona_chars_0_no_persona_call(tmp_path):
    fake = FakeLLM(default=card_reply)
    summary, _ = run(tmp_path, fake, CardConfig(block_size=40, persona_chars=0))
    assert [step_of(c["messages"]) for c in fake.calls] == ["map"] and summary.levels == 0
    card = read_json(tmp_path / "card" / "card.json")
    assert card["persona"] is None and not (tmp_path / "card" / "persona.txt").exists()
    assert card["summary"] == "Résumé de 12 citations." and "card.persona_chars is 0" in summary.persona_note


def test_reduce_sees_only_grounded_summaries_and_may_cite_only_their_ids(tmp_path):
    fake = FakeLLM(default=card_reply)
    run(tmp_path, fake, CardConfig(block_size=6, fan_in=2))
    reduce = next(c for c in fake.calls if step_of(c["messages"]) == "reduce")
    parts = summaries(reduce["messages"])
    ids = sorted({e["id"] for p in parts for path in TRAIT_LISTS for t in traits_at(p, path) for e in t["evidence"]},
                 key=lambda k: int(k[1:]))
    assert len(parts) == 2 and ids == ["c1", "c2", "c3", "c7", "c8", "c9"]
    enum = reduce["json_schema"]["properties"]["themes"]["items"]["properties"]["evidence"]["items"]["properties"]
    assert enum["id"]["enum"] == ids


# -- grounding -----------------------------------------------------------------------------------------
def test_grounding_keeps_found_quotes_and_drops_the_rest_with_reasons(tmp_path):
    def reply(messages):
        card = map_reply(messages)
        card["identity"] = [
            {"trait": "exact", "evidence": [{"id": "c1", "quote": "monsieur Morrel"}]},
            {"trait": "folded", "evidence": [{"id": "c2", "quote": "IL EST MORT de la fievre"}]},  # case, accents
            {"trait": "no quote", "evidence": [{"id": "c3", "quote": ""}]},
            {"trait": "invented quote", "evidence": [{"id": "c1", "quote": "je vendrai le Pharaon demain"}]},
            {"trait": "partly invented", "evidence": [{"id": "c77", "quote": ""}, {"id": "c2", "quote": ""}]},
            {"trait": "unknown", "evidence": [{"id": "c88", "quote": ""}]}]
        card["psychology"] = card["verbal_style"]["register"] = []
        return card

    summary, _ = run(tmp_path, FakeLLM(default=reply), CardConfig(block_size=40, persona_chars=0))
    card = read_json(tmp_path / "card" / "card.json")
    assert [(t["trait"], [(e["id"], e["quote"]) for e in t["evidence"]]) for t in card["identity"]] == [
        ("exact", [("17989:0-50", "monsieur Morrel")]),
        ("folded", [("17989:100-150", "Il est mort, de la fièvre")]),   # the citation's own words
        ("no quote", [("17989:200-250", "")]),
        ("partly invented", [("17989:100-150", "")])]
    assert summary.grounding["map"] == {"traits_kept": 4, "evidence_kept": 4, "quote_not_found": 1,
                                        "unsupported_trait": 2, "unknown_id": 2}
    rejects = [json.loads(x) for x in (tmp_path / "card" / "card.rejects.jsonl").read_text().splitlines()]
    assert {(r["trait"], r["reason"]) for r in rejects} == {
        ("invented quote", "quote_not_found"), ("invented quote", "unsupported_trait"),
        ("partly invented", "unknown_id"), ("unknown", "unknown_id"), ("unknown", "unsupported_trait")}
    assert "quote not found 1" in "\n".join(summary.lines())


def test_a_block_that_cites_outside_itself_loses_that_evidence(tmp_path):
    def reply(messages):
        if step_of(messages) != "map":
            return card_reply(messages)
        card = map_reply(messages)
        card["themes"] = [{"trait": "vengeance", "evidence": [{"id": "c12", "quote": ""}]}]
        return card

    summary, _ = run(tmp_path, FakeLLM(default=reply), CardConfig(block_size=6, fan_in=6, persona_chars=0))
    card = read_json(tmp_path / "card" / "card.json")
    # c12 lies in the second block only: the first block's claim is dropped, the second's kept.
    assert [e["id"] for t in card["themes"] for e in t["evidence"]] == ["17989:1100-1150"]
    assert summary.grounding["map"]["unknown_id"] == 1


# -- unusable replies ----------------------------------------------------------------------------------
def test_unusable_replies_are_recorded_and_never_break_the_card(tmp_path):
    def reply(messages):
        step, first = step_of(messages), cited(messages)[0][0] if step_of(messages) == "map" else ""
        if first == "c5":
            return "Voici la fiche : ce personnage est fascinant."       # prose, no JSON
        if first == "c9":
            return "```json\n" + json.dumps(map_reply(messages)) + "\n```"  # fenced: read
        if step == "reduce":
            return '{"summary": "coupé'                                  # unreadable merge
        return json.dumps(card_reply(messages) if step == "map" else {"persona": "   "})

    summary, _ = run(tmp_path, FakeLLM(default=reply))
    assert summary.bad_replies == {"invalid_json": 2, "no_persona": 1}
    card = read_json(tmp_path / "card" / "card.json")
    # Blocks 1 and 3 survive; the merge that could not be read is replaced by their traits in order.
    assert [t["trait"] for t in card["identity"]] == ["trait identity de c1", "trait identity de c9"]
    assert card["persona"] is None and "unusable" in summary.persona_note
    rejects = [json.loads(x) for x in (tmp_path / "card" / "card.rejects.jsonl").read_text().splitlines()]
    assert {(r["step"], r["reason"]) for r in rejects} == {("map", "invalid_json"), ("reduce", "invalid_json"),
                                                          ("persona", "no_persona")}
    assert next(r for r in rejects if r["step"] == "map")["raw"].startswith("Voici la fiche")


class Cut(FakeLLM):
    """Replies cut by max_tokens after `keep` characters."""

    def __init__(self, keep: int, **kw):
        super().__init__(**kw)
        self.keep = keep

    def chat(self, messages, json_schema=None, **sampling):
        result = super().chat(messages, json_schema, **sampling)
        return ChatResult(result.text[:self.keep], 10, 10, 40, finish_reason="length")


def test_a_reply_cut_by_max_tokens_keeps_the_traits_written_before_the_cut(tmp_path):
    summary, _ = run(tmp_path / "early", Cut(40, default=card_reply), CardConfig(block_size=40))
    assert summary.bad_replies == {"truncated": 1} and summary.traits == 0
    assert "no grounded trait" in summary.persona_note and summary.failure() is None
    text = json.dumps(map_reply([{"role": "user", "content": citation_lines(12)}]), ensure_ascii=False)
    cut = text.index('"verbal_style"') + 40               # inside the register's trait: identity, psychology kept
    summary, _ = run(tmp_path / "late", Cut(cut, default=card_reply), CardConfig(block_size=40, persona_chars=0))
    card = read_json(tmp_path / "late" / "card" / "card.json")
    assert summary.bad_replies == {"truncated": 1} and summary.traits == 2
    assert card["identity"][0]["trait"] == "trait identity de c1" and card["verbal_style"]["register"] == []


def citation_lines(n: int) -> str:
    return "\n".join(f"[c{i + 1}] ({c['contexte']}) {c['citation']}" for i, c in enumerate(CITATIONS[:n]))


@pytest.mark.parametrize("text, closed", [
    ('{"s": "a \\"}", "l": [{"t": "x"}, {"t": "y', '{"s": "a \\"}", "l": [{"t": "x"}]}'),
    ('{"s": "x", "v": {"r": [{"t": "x"}], "q": [', '{"s": "x", "v": {"r": [{"t": "x"}]}}'),
    ('{"s": "coupé', None), ('{"s": "x"}] ]', None)])
def test_close_cut_json_ends_after_the_last_complete_value(text, closed):
    assert close_cut_json(text) == closed
    if closed:
        json.loads(closed)


def test_a_heading_or_a_citation_id_written_as_a_trait_is_no_trait():
    card, problems = parse_card(json.dumps({"summary": "s", "identity": [
        {"trait": "Identity", "evidence": [{"id": "c1", "quote": ""}]},
        {"trait": "c12", "evidence": [{"id": "c12", "quote": ""}]},       # what SmolLM2-135M wrote
        {"trait": "[C3].", "evidence": [{"id": "c3", "quote": ""}]},
        {"trait": "Marin de Marseille", "evidence": [{"id": "c1", "quote": ""}]},
        {"trait": "c12 parle de la mer", "evidence": [{"id": "c12", "quote": ""}]}]}))
    assert [t["trait"] for t in card["identity"]] == ["Marin de Marseille", "c12 parle de la mer"]
    assert problems == [{"reason": "heading_as_trait", "trait": "Identity", "list": "identity"},
                        {"reason": "id_as_trait", "trait": "c12", "list": "identity"},
                        {"reason": "id_as_trait", "trait": "[C3].", "list": "identity"}]


def test_a_persona_over_the_limit_is_cut_after_a_whole_sentence(tmp_path):
    long = "Tu es Edmond Dantès. " + "Tu as connu la prison et la mer. " * 40

    def reply(messages):
        return {"persona": long} if step_of(messages) == "persona" else card_reply(messages)

    summary, _ = run(tmp_path, FakeLLM(default=reply), CardConfig(block_size=40, persona_chars=120))
    persona = read_json(tmp_path / "card" / "card.json")["persona"]
    assert len(persona) <= 120 and persona.endswith("mer.") and summary.persona_note == "cut to 120 characters"


# -- resume and failures -------------------------------------------------------------------------------
class Killed(BaseException):
    """A kill -9 stand-in: nothing in the stage catches it."""


def test_a_run_killed_mid_way_resumes_without_asking_anything_twice(tmp_path):
    whole = FakeLLM(default=card_reply)
    run(tmp_path / "whole", whole)
    for k in range(len(whole.calls)):
        asked = []

        def killer(messages, k=k):
            if len(asked) == k:
                raise Killed
            asked.append(messages)
            return card_reply(messages)

        first = FakeLLM(default=killer)
        with pytest.raises(Killed):
            run(tmp_path / f"k{k}", first)
        assert not (tmp_path / f"k{k}" / "card" / "card.json").exists()
        second = FakeLLM(default=card_reply)
        run(tmp_path / f"k{k}", second)
        asked_once = keys_asked(first)[:k] + keys_asked(second)
        assert sorted(asked_once) == sorted(keys_asked(whole))          # every call once, none twice
        for name in ("card.json", "card.md", "persona.txt"):
            assert (tmp_path / f"k{k}" / "card" / name).read_bytes() == (tmp_path / "whole" / "card" / name).read_bytes()
    again = FakeLLM([])
    summary, _ = run(tmp_path / "whole", again)
    assert again.calls == [] and sum(summary.runs[s].cached for s in summary.runs) == len(whole.calls)


def test_ctrl_c_says_how_far_it_got(tmp_path):
    def interrupt(messages):
        raise KeyboardInterrupt

    with pytest.raises(GenerateInterrupted, match=r"2/3 blocks done"):
        run(tmp_path, FakeLLM([card_reply, card_reply, interrupt]))


def test_failed_calls_keep_the_previous_card_and_are_retried_next_run(tmp_path):
    run(tmp_path, FakeLLM(default=card_reply))
    files = output_files(tmp_path / "card")
    before = {name: path.read_bytes() for name, path in files.items() if name != "store"}

    def flaky(messages):
        if step_of(messages) == "map" and cited(messages)[0][0] == "c5":
            raise RuntimeError("HTTP 500 from the server")
        return card_reply(messages)

    cfg = CardConfig(block_size=4, fan_in=2, temperature=0.5)  # another sampling: every call is new
    summary, _ = run(tmp_path, FakeLLM(default=flaky), cfg)
    failure = summary.failure()
    assert isinstance(failure, StageFailed) and "1 of 3 blocks failed" in failure.message
    assert "RuntimeError: HTTP 500" in failure.message and "previous card" in failure.message
    assert "are not asked again" in failure.fix
    assert {name: files[name].read_bytes() for name in before} == before
    retry = FakeLLM(default=card_reply)
    summary, _ = run(tmp_path, retry, cfg)
    assert summary.failure() is None and [step_of(c["messages"]) for c in retry.calls] == \
        ["map", "reduce", "reduce", "persona"]


def test_failures_in_a_row_stop_the_run_early(tmp_path):
    def down(messages):
        raise ConnectionError("connection refused")

    fake = FakeLLM(default=down)
    summary, _ = run(tmp_path, fake, CardConfig(block_size=2), max_failures=2)
    assert len(fake.calls) == 2 and summary.runs["map"].failed == 6
    assert "stopped after 2 failures in a row" in summary.failure().message
    assert not (tmp_path / "card" / "card.json").exists()


# -- inputs and outputs --------------------------------------------------------------------------------
def test_no_citations_and_an_output_that_is_an_input_are_refused(tmp_path):
    with pytest.raises(InputError, match="no citations"):
        run(tmp_path, FakeLLM(), citations=[])
    source = tmp_path / "card" / "card.json"
    source.parent.mkdir()
    source.write_text("{}", encoding="utf-8")
    with pytest.raises(InputError, match="would overwrite the input"):
        run(tmp_path, FakeLLM(), inputs=[source])
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file, but this output is a folder"):
        build_card(CITATIONS, FakeLLM(), tmp_path / "file", CardConfig(), DANTES, print)


def test_the_schema_bounds_every_list_and_string():
    schema = card_schema(["c1", "c2"], 3, 50)
    trait = schema["properties"]["verbal_style"]["properties"]["rhythm"]
    assert trait["maxItems"] == 3 and trait["items"]["properties"]["trait"]["maxLength"] == 50
    assert trait["items"]["properties"]["evidence"]["maxItems"] == 3
    assert schema["required"] == ["summary", "identity", "psychology", "verbal_style", "behaviour", "themes"]
    assert card_schema([], 3)["properties"]["themes"]["maxItems"] == 0
    assert re.search(r'"maxLength"', json.dumps(card_schema(["c1"], 3, 0))) is None
