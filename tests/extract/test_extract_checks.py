"""Checks on LLM extraction output with canned junk replies of real small models (in-memory fakes, no network)."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dantes_mlx.config import CharacterConfig, ExtractConfig
from dantes_mlx.errors import ModelError
from dantes_mlx.extract.chunks import Book
from dantes_mlx.extract.llm_method import extract_llm
from dantes_mlx.extract.checks import ReplyWatch, check_chat_template, item_problem, reply_problem, unique_items
from dantes_mlx.llm.fake import FakeLLM, fake_from_function

# Gautier, La morte amoureuse (public domain): Sérapion speaks to Romuald, the narrator.
MORTE = (
    "Je ne sais pas combien de jours je restai ainsi ; mais, en me retournant dans un mouvement de spasme furieux, "
    "j’aperçus l’abbé Sérapion qui se tenait debout au milieu de la chambre et qui me considérait attentivement.\n\n"
    "« Romuald, mon ami, il se passe quelque chose d’extraordinaire en vous, me dit Sérapion au bout de quelques "
    "minutes de silence ; votre conduite est vraiment inexplicable ! Prenez garde, mon frère. »\n\n"
    "Le discours de l’abbé Sérapion me fit rentrer en moi-même, et je devins un peu plus calme.\n\n"
    "— Je partirai demain, lui répondis-je, puisque vous le voulez.\n\n"
    "— C’est bien, mon frère, dit Sérapion.\n")
ROMUALD = CharacterConfig(name="Romuald", aliases=[], narrator=True)
CLARIMONDE = CharacterConfig(name="Clarimonde", aliases=[])
MY_LINE = "Je partirai demain, lui répondis-je, puisque vous le voulez."


def _item(citation: str, kind: str = "parole") -> dict:
    return {"contexte": "c", "citation": citation, "kind": kind}


def _run(book, character, replies, tmp_path, **cfg):
    llm = FakeLLM(replies)
    out = tmp_path / "c.jsonl"
    summary = extract_llm([book], character, ExtractConfig(prefilter=False, **cfg), out, llm, progress=False)
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    rejects = [json.loads(x) for x in (tmp_path / "c.rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    return summary, rows, rejects


def test_smollm2s_nine_serapions_and_narration_fragments_are_rejected(tmp_path):
    """SmolLM2-135M on Romuald kept 9 citations that are the bare name (each grounded "exact, 100") and 2
    narration fragments given as speech."""
    reply = {"citations": [_item("Sérapion")] * 9 + [
        _item("je devins un peu plus calme"), _item("qui se tenait debout au milieu de la chambre"),
        _item("— " + MY_LINE)]}
    summary, rows, rejects = _run(Book("morte", MORTE), ROMUALD, [reply], tmp_path)
    assert [r["citation"] for r in rows] == ["— Je partirai demain, puisque vous le voulez."]
    reasons = sorted((r["reason"], r.get("times")) for r in rejects)
    assert reasons == [("bare_name", None), ("narration", None), ("narration", None), ("repeated_in_reply", 9)]
    assert summary.rejected["bare_name"] == 1


def test_a_reply_looping_one_object_forty_times_gives_one_row(tmp_path):
    reply = {"citations": [_item("— " + MY_LINE)] * 40}
    _, rows, rejects = _run(Book("morte", MORTE), ROMUALD, [reply], tmp_path)
    assert len(rows) == 1
    assert rejects == [{"reason": "repeated_in_reply", "times": 40, "citation": "— " + MY_LINE,
                        "book": "morte", "chunk": "morte#0000"}]


@pytest.mark.parametrize("mode", ["flag", "drop"])
def test_seraphions_line_given_to_clarimonde_is_flagged_or_dropped(tmp_path, mode):
    """The model gave "« Romuald, mon ami, … »" to Clarimonde; the rules see "me dit Sérapion"."""
    reply = {"citations": [_item("« Romuald, mon ami, il se passe quelque chose d’extraordinaire en vous »")]}
    _, rows, rejects = _run(Book("morte", MORTE), CLARIMONDE, [reply], tmp_path, disputed=mode)
    if mode == "flag":
        assert [r["disputed_by_rules"] for r in rows] == ["Sérapion"]
    else:
        assert rows == [] and [(r["reason"], r["rules_speaker"]) for r in rejects] == [("disputed_by_rules", "Sérapion")]


def test_the_characters_own_line_is_not_disputed(tmp_path):
    _, rows, _ = _run(Book("morte", MORTE), ROMUALD, [{"citations": [_item("— " + MY_LINE)]}], tmp_path)
    assert len(rows) == 1 and "disputed_by_rules" not in rows[0]


def test_short_replies_and_sentences_stay_fragments_and_names_go():
    names = {"sérapion", "romuald", "abbé", "l"}
    assert item_problem("Sérapion", names) == "bare_name"
    assert item_problem("l’abbé Sérapion", names) == "bare_name"
    assert item_problem("...", names) == "placeholder"
    assert item_problem("— Oui.", names) is None
    assert item_problem("Sérapion, venez !", names) is None  # "venez" is no name
    items, rejects = unique_items([_item("— Oui."), _item("--Oui."), _item("— Non.")])
    assert [i["citation"] for i in items] == ["— Oui.", "— Non."] and rejects[0]["times"] == 2


def _gemma_book() -> Book:
    scenes = []
    for i in range(8):
        scenes.append(f"Romuald entra dans la salle numéro {i}.\n\n— Je suis là, dit Romuald, la salle {i} est vide."
                      f"\n\nLa nuit tomba sur la salle {i}.")
    return Book("b", "\n\n".join(scenes) + "\n")


@pytest.mark.parametrize("reply", [
    {"citations": []},                                                             # empty where he speaks
    {"citations": [{"contexte": "...", "citation": "...", "kind": "parole"}]},     # the prompt's example
])
def test_gemmas_empty_or_example_replies_stop_the_run(tmp_path, reply):
    """Gemma 3 270M (a base model) answered {"citations": []} or the prompt's example for every chunk and
    extract exited 0 with an empty file."""
    llm = FakeLLM(default=reply)
    cfg = ExtractConfig(chunk_lines=3, overlap=0)
    with pytest.raises(ModelError, match="not following the extraction prompt"):
        extract_llm([_gemma_book()], CharacterConfig(name="Romuald", aliases=[]), cfg, tmp_path / "c.jsonl", llm,
                    progress=False)
    assert len(llm.calls) == 6  # stopped after the first six replies, not the eight chunks
    extract_llm([_gemma_book()], CharacterConfig(name="Romuald", aliases=[]),
                ExtractConfig(chunk_lines=3, overlap=0, check_replies=False), tmp_path / "d.jsonl", llm, progress=False)


def test_cut_and_non_json_replies_count_as_junk_and_good_ones_do_not():
    assert reply_problem('{"citations": [{"citation": "— Je', "length", True) == "cut_by_max_tokens"
    assert reply_problem("Voici les citations :", "stop", True) == "not_json"
    assert reply_problem('{"citations": []}', "stop", False) is None  # the rules do not hear him either
    watch = ReplyWatch("m", first=4)
    for text in ['{"citations": []}'] * 2 + ['{"citations": [{"citation": "— Je suis là."}]}'] * 2:
        watch.see(reply_problem(text, "stop", True))
    watch.verdict()  # 2 of 4: not most


def test_a_gguf_without_chat_template_is_refused_before_the_first_call(tmp_path):
    class BaseModel:
        model_id, path, _template = "gemma-3-270m.gguf", "gemma-3-270m.gguf", ""

    with pytest.raises(ModelError, match="no chat template") as info:
        check_chat_template(BaseModel())
    assert "llm.chat_template" in str(info.value)
    check_chat_template(FakeLLM())  # a server (no GGUF template to read): not checked


def test_cli_exits_non_zero_naming_the_model(tmp_path, monkeypatch):
    from dantes_mlx.cli import main
    import dantes_mlx.llm as base

    book = tmp_path / "b.txt"
    book.write_text(_gemma_book().text, encoding="utf-8")
    monkeypatch.setattr(base, "make_client", lambda cfg: fake_from_function(lambda m: '{"citations": []}', "gemma-base"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["extract", "--input", str(book), "--character", "Romuald", "--model", "x.gguf",
                                       "--method", "llm", "--chunk-lines", "3", "--overlap", "0", "-o", "c.jsonl",
                                       "--quiet"])
    assert result.exit_code == 1 and "gemma-base is not following the extraction prompt" in result.output
    assert not Path(tmp_path / "c.jsonl").exists()
