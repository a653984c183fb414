"""Card planning and persona: blocks sized to the context, reduce levels and their cost, the persona's bounds,
the persona the stages use, another language, another character. In-process, no network: `pytest tests/card -q`."""

from __future__ import annotations

import json
import math

import pytest

from card_fakes import card_reply, cited, read_json, step_of
from dantes_mlx.card.blocks import data_budget, even_groups, fit_line
from dantes_mlx.card.build import build_card, load_card_prompt
from dantes_mlx.card.lookup import resolve_persona
from dantes_mlx.card.merge import plan_groups
from dantes_mlx.card.persona import bound, read_persona
from dantes_mlx.config import DANTES_PERSONA, PERSONAS, CardConfig, CharacterConfig, ExtractConfig, ProjectFile
from dantes_mlx.errors import ConfigError, InputError
from dantes_mlx.extract.chunks import load_book
from dantes_mlx.extract.rules_method import extract_rules
from dantes_mlx.generate.pairs import load_citations
from dantes_mlx.llm.fake import FakeLLM


class SizedFake(FakeLLM):
    """A FakeLLM with a context and a token count (one token per word), like LlamaCppClient."""

    def __init__(self, n_ctx: int, max_tokens: int, **kw):
        super().__init__(**kw)
        self.n_ctx, self.defaults = n_ctx, {"max_tokens": max_tokens}

    @staticmethod
    def count_tokens(text: str) -> int:
        return len(text.split())


def rows(n: int, words: int = 5) -> list[dict]:
    return [{"source_id": f"s{i}", "citation": " ".join(["--Mot"] + [f"m{i}x{j}" for j in range(words - 1)]),
             "contexte": "", "provenance": {}} for i in range(n)]


def reduce_calls(blocks: int, fan_in: int) -> int:
    """The reduce calls the card makes for `blocks` summaries when the context does not bind: a level's groups of two
    or more are merged, a group of one is carried."""
    calls = 0
    while blocks > 1:
        groups = even_groups([1] * blocks, fan_in, 0)
        calls += sum(len(g) > 1 for g in groups)
        blocks = len(groups)
    return calls


# -- blocks and reduce levels --------------------------------------------------------------------------
@pytest.mark.parametrize("n, most, sizes", [(25, 10, [9, 8, 8]), (12, 4, [4, 4, 4]), (60, 40, [30, 30]),
                                            (1494, 40, [40] * 12 + [39] * 26)])
def test_blocks_are_as_even_as_block_size_allows(n, most, sizes):
    groups = even_groups([1] * n, most, 0)
    assert len(groups) == math.ceil(n / most) and sorted(map(len, groups)) == sorted(sizes)
    assert [i for g in groups for i in g] == list(range(n))


def test_reduce_cost_is_at_most_the_sum_of_ceil_blocks_over_fan_in_powers():
    for blocks in range(1, 120):
        for fan_in in range(2, 9):
            levels = math.ceil(math.log(blocks, fan_in) - 1e-9) if blocks > 1 else 0
            bound_ = sum(math.ceil(blocks / fan_in ** level) for level in range(1, levels + 1))
            assert reduce_calls(blocks, fan_in) <= bound_, (blocks, fan_in)
    # the 1,494 Dantès citations at the defaults (40 a block, fan-in 6): 38 map calls, 7 + 2 + 1 reduce calls
    assert (math.ceil(1494 / 40), reduce_calls(38, 6)) == (38, 10)
    assert reduce_calls(2, 6) == 1 and reduce_calls(1, 6) == 0


def test_groups_end_before_the_token_budget_and_a_plan_that_cannot_merge_is_refused():
    assert even_groups([30, 30, 30, 30], 4, 70) == [[0, 1], [2, 3]]
    assert plan_groups([30, 30, 30, 30, 30], 6, 70) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ConfigError, match="no two block summaries fit one reduce call"):
        plan_groups([60, 60, 60], 6, 100)


def test_blocks_fit_the_context_and_a_long_citation_is_cut(tmp_path):
    long = rows(1, words=3000)[0]
    fake = SizedFake(n_ctx=4000, max_tokens=1000, default=card_reply)
    summary = build_card(rows(30, words=100) + [long], fake, tmp_path, CardConfig(block_size=40, persona_chars=0),
                         CharacterConfig(), lambda m: None, progress=False)
    maps = [c for c in fake.calls if step_of(c["messages"]) == "map"]
    assert summary.block_tokens and all(fake.count_tokens(c["messages"][1]["content"]) <= summary.block_tokens
                                        for c in maps)
    assert len(maps) == summary.blocks > 1 and cited(maps[-1]["messages"])[-1][1].endswith("…")
    with pytest.raises(ConfigError, match=r"llm.n_ctx=1500 leaves .* tokens for the citations"):
        build_card(rows(3), SizedFake(n_ctx=1500, max_tokens=1000), tmp_path / "small", CardConfig(),
                   CharacterConfig(), lambda m: None, progress=False)


def test_fit_line_and_data_budget_without_a_context():
    count = SizedFake.count_tokens
    assert fit_line("a b c d e f g h i j", 4, count).endswith("…") and count(fit_line("a " * 50, 10, count)) <= 10
    assert fit_line("a b", 0, count) == "a b"
    prompt = load_card_prompt("map", "fr", "", "citations", lambda m: None)
    assert data_budget(FakeLLM(), prompt, {"name": "X", "aliases": "-", "max_traits": 5}, 2048, count,
                       "citations") == 0


# -- the persona ---------------------------------------------------------------------------------------
def test_read_persona_makes_one_bounded_line_a_modelfile_can_hold():
    text = json.dumps({"persona": 'Tu es Edmond.\n\nTu dis """non""".\tToujours.'})
    assert read_persona(text, 200) == ('Tu es Edmond. Tu dis "non". Toujours.', None)
    assert read_persona('{"persona": ""}', 200) == ("", "no_persona")
    assert read_persona("pas de JSON", 200) == ("", "invalid_json")
    words, cut = bound("Un. " + "mot " * 100, 60)       # no sentence end late enough: cut at a word, with "…"
    assert (words, cut) == ("Un." + " mot" * 13 + "…", "cut") and len(words) <= 60
    assert bound("Tu es là. Tu vois la mer depuis le château. Encore.", 45) == ("Tu es là. Tu vois la mer depuis le château.",
                                                                               "cut")


def _project(tmp_path, character: dict | None = None) -> ProjectFile:
    data = {"project": {"data_dir": str(tmp_path / "data")}}
    if character:
        data["character"] = character
    return ProjectFile(data)


def _write_card(tmp_path, character="Edmond Dantès", persona="Tu es Edmond Dantès, marin."):
    folder = tmp_path / "data" / "card"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "card.json").write_text(json.dumps({"character": character, "persona": persona}), encoding="utf-8")
    return folder / "card.json"


def _persona(config: ProjectFile) -> tuple[str, str]:
    found = resolve_persona(config)
    return found.text, found.source


def test_the_cards_persona_is_used_only_when_the_user_wrote_none(tmp_path):
    text, source = _persona(_project(tmp_path))                                      # no card yet
    assert text == DANTES_PERSONA and "a default; no card of Edmond Dantès" in source
    path = _write_card(tmp_path)
    text, source = _persona(_project(tmp_path))                                      # default persona
    assert text == "Tu es Edmond Dantès, marin." and f"the character card ({path})" in source
    assert _persona(_project(tmp_path, {"persona": DANTES_PERSONA}))[0] == "Tu es Edmond Dantès, marin."
    mine = "Tu es le comte, et tu te venges."
    assert _persona(_project(tmp_path, {"persona": mine})) == (mine, "character.persona of the settings file")
    _write_card(tmp_path, character="Clarimonde")
    assert _persona(_project(tmp_path))[0] == DANTES_PERSONA                         # another character's card
    clarimonde = {"name": "Clarimonde", "aliases": [], "persona": PERSONAS["fr"].format(name="Clarimonde")}
    assert _persona(_project(tmp_path, clarimonde))[0] == "Tu es Edmond Dantès, marin."  # init's persona
    _write_card(tmp_path, character="Clarimonde", persona=None)
    assert _persona(_project(tmp_path, clarimonde))[0] == clarimonde["persona"]      # a card without persona
    path.write_text("{pas du json", encoding="utf-8")
    with pytest.raises(InputError, match=r"card.json: not a card"):
        resolve_persona(_project(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    _write_card(tmp_path / "x")
    (tmp_path / "x" / "data" / "card").rename(elsewhere)
    other = ProjectFile({"project": {"data_dir": str(tmp_path / "data")}, "card": {"output_dir": str(elsewhere)}})
    assert resolve_persona(other).text == "Tu es Edmond Dantès, marin."              # card.output_dir


# -- any character, any language -----------------------------------------------------------------------
def test_a_character_of_another_language_gets_the_english_prompts_asking_for_that_language(tmp_path):
    werther = CharacterConfig(name="Werther", aliases=[], language="de")
    citations = [{"source_id": f"w{i}", "citation": text, "contexte": "", "provenance": {}} for i, text in enumerate(
        ["Wie froh bin ich, dass ich weg bin!", "Ich kehre in mich selbst zurück und finde eine Welt!",
         "Das Herz ist es allein, das ich habe."])]
    logs, fake = [], FakeLLM(default=card_reply)
    build_card(citations, fake, tmp_path, CardConfig(block_size=2, fan_in=2), werther, logs.append, progress=False)
    assert any("no built-in card_map prompt for language 'de'" in line for line in logs)
    assert fake.calls[0]["messages"][0]["content"].startswith("You are a literary critic")
    assert "ISO 639-1 code: de" in fake.calls[0]["messages"][0]["content"]
    card = read_json(tmp_path / "card.json")
    assert card["language"] == "de" and card["provenance"]["prompt_versions"]["map"] == "card_map_en_v1"
    assert (tmp_path / "card.md").read_text(encoding="utf-8").startswith("# Character card: Werther")


def test_clarimonde_from_rule_extracted_citations_of_la_morte_amoureuse(shared_data, tmp_path):
    clarimonde = CharacterConfig(name="Clarimonde", aliases=[])
    book = load_book(shared_data / "fr-litbank-dev" / "La_morte_amoureuse.txt")
    extract_rules([book], clarimonde, ExtractConfig(), tmp_path / "clarimonde.jsonl", progress=False)
    citations = load_citations([tmp_path / "clarimonde.jsonl"])
    assert len(citations) == 3
    fake = FakeLLM(default=card_reply)
    summary = build_card(citations, fake, tmp_path / "card", CardConfig(block_size=2, fan_in=2), clarimonde,
                         lambda m: None, progress=False)
    card = read_json(tmp_path / "card" / "card.json")
    assert summary.failure() is None and card["character"] == "Clarimonde"
    assert "Clarimonde" in fake.calls[0]["messages"][0]["content"] and "Dantès" not in json.dumps(fake.calls)
    ids = {e["id"] for t in card["identity"] for e in t["evidence"]}
    assert ids and all(i.startswith("La_morte_amoureuse:") for i in ids)
    assert card["persona"].startswith("Tu es Clarimonde.")
