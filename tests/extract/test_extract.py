"""Citation extraction: chunking, grounding, dedupe, pre-filter, provenance, kill -9 resume, CLI (fake LLMs, in-memory)."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dantes_mlx.config import CharacterConfig, ExtractConfig
from dantes_mlx.errors import ConfigError, InputError
from dantes_mlx.extract.chunks import Book, chunk_book, load_book
from dantes_mlx.extract.grounding import locate
from dantes_mlx.extract.llm_method import extract_llm
from dantes_mlx.extract.output import ExtractInterrupted
from dantes_mlx.extract.prompt import CITATION_SCHEMA
from dantes_mlx.extract.prompt import citation_prompt as load_prompt
from dantes_mlx.extract.checks import parse_reply
from dantes_mlx.extract.rows import Source, ground_reply
from dantes_mlx.extract.rules_method import extract_rules
from dantes_mlx.llm.fake import FakeLLM, fake_from_function

REPO = Path(__file__).resolve().parents[2]
DANTES = CharacterConfig(name="Edmond Dantès", aliases=["Dantès", "Edmond"], language="fr")

SCENE = """Le navire entra dans le port de Marseille.

— Un grand malheur, monsieur Morrel ! répondit Dantès, un grand malheur, pour moi surtout.

— Et le chargement ? demanda l'armateur.

— Il est en bon état, monsieur Morrel, je vous en réponds, dit Dantès.
"""


def numbered_text(n: int, every: int = 1, who: str = "Dantès") -> str:
    """n paragraphs separated by blank lines; every `every`-th one is a reply of `who`."""
    paras = []
    for i in range(n):
        if i % every == 0:
            paras.append(f"— Voici la réplique numéro {i} ! dit {who}.")
        else:
            paras.append(f"La mer était calme au matin numéro {i}.")
    return "\n\n".join(paras) + "\n"


def quotes_in(messages) -> dict:
    """A fake extractor: every line of the chunk that opens with a dash, cited with `--`."""
    chunk = messages[-1]["content"]
    lines = [ln for ln in chunk.split("\n") if ln.startswith("—")]
    return {"citations": [{"contexte": "c", "citation": "--" + ln[2:], "kind": "parole"} for ln in lines]}


def rows(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


# -- chunking ----------------------------------------------------------------------------------------
def test_chunks_cut_on_paragraphs_with_overlap():
    book = Book("b", numbered_text(25, every=1000))
    chunks = chunk_book(book, chunk_lines=10, overlap=3)
    assert [(c.first_line, c.last_line) for c in chunks] == [(1, 19), (15, 33), (29, 47), (43, 49)]
    for c in chunks:
        assert c.text == book.text[c.start:c.end]
        assert c.start == 0 or book.text[c.start - 1] == "\n"
        assert book.text[c.end] == "\n"
    # three shared paragraphs between consecutive chunks
    assert chunks[1].text.split("\n\n")[:3] == chunks[0].text.split("\n\n")[-3:]
    assert chunks[-1].text.endswith("numéro 24.")
    assert [c.id for c in chunks] == ["b#0000", "b#0001", "b#0002", "b#0003"]


def test_chunk_chapters_and_bad_overlap():
    book = Book("b", numbered_text(6, every=1000), chapters=((0, "I"), (40, "II")))
    chunks = chunk_book(book, chunk_lines=2, overlap=0)
    assert [c.chapter for c in chunks] == ["I", "II", "II"]
    with pytest.raises(ConfigError, match="overlap"):
        chunk_book(book, chunk_lines=5, overlap=5)


def test_chapters_read_from_the_cleaner_sidecar(tmp_path):
    (tmp_path / "b.txt").write_text(numbered_text(4), encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps({"chapters": [{"title": "II", "start": 50},
                                                              {"title": "I", "start": 0}]}))
    book = load_book(tmp_path / "b.txt")
    assert book.id == "b" and book.chapter_at(10) == "I" and book.chapter_at(60) == "II"


# -- prompt and replies ----------------------------------------------------------------------------
def test_prompt_puts_instructions_first_and_the_chunk_last(tmp_path):
    prompt = load_prompt()
    assert prompt.version == "extract_fr_v1"
    messages = prompt.messages("Edmond Dantès", ["Dantès"], "TEXTE DU CHUNK")
    assert messages[0]["role"] == "system" and "Edmond Dantès" in messages[0]["content"]
    assert "« Dantès »" in messages[0]["content"] and messages[1]["content"] == "TEXTE DU CHUNK"
    other = prompt.messages("Edmond Dantès", ["Dantès"], "UN AUTRE CHUNK")
    assert other[0] == messages[0]  # the shared prefix llama.cpp reuses
    custom = tmp_path / "mine.txt"
    custom.write_text("Relève les paroles de {{name}}.\n{{text}}", encoding="utf-8")
    assert load_prompt(custom).version.startswith("mine-")
    custom.write_text("Relève les paroles de {{name}}.", encoding="utf-8")
    with pytest.raises(InputError, match="text"):
        load_prompt(custom)
    with pytest.raises(ConfigError, match="language 'xx'"):
        load_prompt("", "xx")


def test_parse_reply_salvages_complete_objects_of_a_truncated_reply():
    items, error = parse_reply('```json\n{"citations": [{"contexte": "a", "citation": "--Oui.", "kind": "parole"}]}\n```')
    assert error is None and items[0]["citation"] == "--Oui."
    items, error = parse_reply('{"citations": [{"contexte": "a", "citation": "--Oui.", "kind": "parole"}, '
                               '{"contexte": "b", "citation": "--No')
    assert error == "invalid_json" and [i["citation"] for i in items] == ["--Oui."]
    book = Book("b", "— Oui.\n")
    cut = '{"citations": [{"contexte": "a", "citation": "--Oui.", "kind": "parole"}, {"contexte": "b", "cit'
    kept, rejects = ground_reply(book, chunk_book(book)[0], cut, Source("llm", "m", "v", "X"), 85.0, "length")
    assert [r["citation"] for r in kept] == ["— Oui."] and [r["reason"] for r in rejects] == ["truncated"]


# -- grounding -------------------------------------------------------------------------------------
def test_grounding_accepts_changed_punctuation_and_dashes_with_offsets():
    text = SCENE
    start = text.index("— Un grand")
    g = locate("--Un grand malheur, monsieur Morrel! répondit Dantès, un grand malheur pour moi surtout.", text)
    assert (g.start, g.end, g.score, g.how) == (start, text.index("\n", start), 100.0, "normalized")
    g = locate("— Il est en bon état, monsieur Morrel, je vous en réponds, dit Dantès.", text)
    assert g.how == "exact" and text[g.start:g.end].startswith("— Il est en bon état")
    g = locate("Il est en bon etat, monsieur Morel, je vous en reponds", text)  # accents and a typo
    assert g.how == "fuzzy" and g.score >= 85
    assert text[g.start:g.end] == "Il est en bon état, monsieur Morrel, je vous en réponds"


def test_grounding_rejects_an_invented_citation_with_its_score():
    book = Book("b", SCENE)
    chunk = chunk_book(book)[0]
    reply = json.dumps({"citations": [
        {"contexte": "vrai", "citation": "--Et le chargement? demanda l'armateur.", "kind": "parole"},
        {"contexte": "faux", "citation": "--Je serai bientôt capitaine du Pharaon et j'épouserai Mercédès.",
         "kind": "parole"}]})
    kept, rejects = ground_reply(book, chunk, reply, Source("llm", "m", "v", "Dantès"), 85.0)
    assert [r["citation"] for r in kept] == ["— Et le chargement ?"]  # the incise after it is narration
    assert SCENE[kept[0]["start"]:kept[0]["end"]] == "— Et le chargement ? demanda l'armateur."
    assert kept[0]["model_citation"] == "--Et le chargement? demanda l'armateur."
    assert len(rejects) == 1 and rejects[0]["reason"] == "low_grounding"
    assert 0 <= rejects[0]["score"] < 85 and rejects[0]["chunk"] == chunk.id


MORREL = """Le Pharaon entra dans le port.

--Un grand malheur, monsieur Morrel, répondit Dantès. Nous avons perdu notre brave capitaine Leclère.

--Et le chargement? demanda vivement l'armateur.

Tout est perdu, pensa-t-il, tout est fini.
"""
MORREL_WORDS = "--Un grand malheur, monsieur Morrel. Nous avons perdu notre brave capitaine Leclère."


def test_rules_citation_is_the_characters_words_not_the_incise(tmp_path):
    from dantes_mlx.generate.filters import narration_pattern

    extract_rules([Book("b", MORREL)], DANTES, ExtractConfig(), tmp_path / "c.jsonl", progress=False)
    (row,) = rows(tmp_path / "c.jsonl")
    assert row["citation"] == MORREL_WORDS  # "Morrel," took back the period the incise ended on
    assert MORREL[row["start"]:row["end"]] == MORREL.split("\n")[2]  # start/end: the whole reply
    assert [MORREL[a:b] for a, b in row["segments"]] == ["--Un grand malheur, monsieur Morrel,",
                                                         "Nous avons perdu notre brave capitaine Leclère."]
    assert narration_pattern(("Edmond Dantès", "Dantès")).search(row["citation"]) is None


def test_llm_citation_with_or_without_the_incise_gives_the_same_words():
    book = Book("b", MORREL)
    chunk = chunk_book(book)[0]
    whole = MORREL.split("\n")[2]
    cited = [whole,  # as the prompt asks: the reply with its incise
             "--Un grand malheur, monsieur Morrel. Nous avons perdu notre brave capitaine Leclère.",  # incise left out
             "— Un grand malheur, monsieur Morrel ; nous avons perdu notre brave capitaine Leclère !",
             "--Et le chargement? demanda vivement l'armateur.",  # a trailing incise
             "Tout est perdu, pensa-t-il, tout est fini.", "Tout est perdu, tout est fini."]  # unmarked thought
    found = []
    for text in cited:
        reply = json.dumps({"citations": [{"contexte": "c", "citation": text, "kind": "parole"}]})
        kept, rejects = ground_reply(book, chunk, reply, Source("llm", "m", "v", "Dantès"), 85.0)
        assert rejects == [] and len(kept) == 1, text
        found.append(kept[0])
    assert [r["grounding_method"] for r in found] == ["exact", "speech", "speech", "exact", "exact", "speech"]
    assert [r["citation"] for r in found[:3]] == [MORREL_WORDS] * 3  # the source's words and marks
    for row in found[:3]:
        assert MORREL[row["start"]:row["end"]] == whole and len(row["segments"]) == 2
    assert found[0]["model_citation"] == whole and "model_citation" not in found[1]  # kept when it differs
    assert found[3]["citation"] == "--Et le chargement?"
    assert found[4]["citation"] == found[5]["citation"] == "Tout est perdu, tout est fini."
    assert MORREL[found[5]["start"]:found[5]["end"]] == cited[4]  # the span runs over the incise
    # A citation that is not in the text stays rejected, incises cut out or not.
    invented = "--Un grand malheur, monsieur Morrel, le navire a coulé corps et biens."
    reply = json.dumps({"citations": [{"contexte": "c", "kind": "parole", "citation": invented}]})
    kept, rejects = ground_reply(book, chunk, reply, Source("llm", "m", "v", "Dantès"), 85.0)
    assert kept == [] and rejects[0]["reason"] == "low_grounding"


def test_join_spoken_gives_the_sentence_its_mark_back():
    from dantes_mlx.extract.grounding import join_spoken

    text = "« Oui, dit-il, je viens. » --Non, monsieur, répondit-elle. Jamais! --Soit, fit-il"
    assert join_spoken(text, [(0, 6), (15, 26)]) == "« Oui, je viens. »"
    assert join_spoken(text, [(27, 43), (59, 66)]) == "--Non, monsieur. Jamais!"
    assert join_spoken(text, [(27, 43)], tail=58) == "--Non, monsieur."  # the incise after the reply
    assert join_spoken(text, [(27, 43)]) == "--Non, monsieur,"  # no narration given after it
    assert join_spoken(text, [(67, 74)], tail=len(text)) == "--Soit,"  # no final mark to take back


# -- the stage with a fake LLM ---------------------------------------------------------------------
def test_overlap_duplicates_are_merged(tmp_path):
    book = Book("b", numbered_text(9, every=3))  # replies at paragraphs 0, 3, 6
    cfg = ExtractConfig(chunk_lines=4, overlap=1, prefilter=False)  # chunks 0-3, 3-6, 6-8
    llm = fake_from_function(quotes_in)
    summary = extract_llm([book], DANTES, cfg, tmp_path / "c.jsonl", llm, progress=False)
    out = rows(tmp_path / "c.jsonl")
    assert len(llm.calls) == 3 and summary.merged == 2
    assert [r["citation"] for r in out] == [f"— Voici la réplique numéro {i} !" for i in (0, 3, 6)]
    assert out[1]["chunk"] == "b#0000" and out[1]["also_in"] == ["b#0001"]
    assert out[2]["also_in"] == ["b#0002"]
    assert llm.calls[0]["json_schema"] == CITATION_SCHEMA


def test_every_citation_carries_provenance(tmp_path):
    (tmp_path / "17989.txt").write_text(SCENE, encoding="utf-8")
    (tmp_path / "17989.json").write_text(json.dumps({"chapters": [{"title": "I. Marseille", "start": 0}]}))
    llm = FakeLLM([quotes_in], model_id="fake-7b")
    summary = extract_llm([load_book(tmp_path / "17989.txt")], DANTES, ExtractConfig(prefilter=False),
                          tmp_path / "c.jsonl", llm, progress=False)
    (row, _, _) = rows(tmp_path / "c.jsonl")
    assert row == {**row, "book": "17989", "chapter": "I. Marseille", "chunk": "17989#0000", "method": "llm",
                   "model": "fake-7b", "prompt_version": "extract_fr_v1", "kind": "parole",
                   "grounding": 100.0, "character": "Edmond Dantès", "contexte": "c"}
    assert row["citation"] == "— Un grand malheur, monsieur Morrel ! un grand malheur, pour moi surtout."
    assert SCENE[row["start"]:row["end"]] == SCENE.split("\n")[2]  # the whole reply, incise included
    assert [SCENE[a:b] for a, b in row["segments"]] == ["— Un grand malheur, monsieur Morrel !",
                                                        "un grand malheur, pour moi surtout."]
    assert summary.kept == 3 and summary.tokens["prompt_tokens"] > 0


def test_an_invention_in_two_chunks_is_one_reject_and_a_line_grounded_elsewhere_none(tmp_path):
    """Rejects are the run's verdict: the overlap does not double an invention, and a chunk quoting a line
    that lies in the next chunk (its words outside the chunk, not outside the book) is no invention."""
    book = Book("b", numbered_text(9, every=3))  # replies at paragraphs 0, 3, 6; chunks 0-3, 3-6, 6-8
    later = "--Voici la réplique numéro 6 !"  # only in the third chunk

    def reply(messages):
        cited = quotes_in(messages)["citations"] + [
            {"contexte": "c", "citation": "Je n'ai jamais prononcé ces mots-là de ma vie.", "kind": "parole"},
            {"contexte": "c", "citation": later, "kind": "parole"}]
        return {"citations": cited}

    summary = extract_llm([book], DANTES, ExtractConfig(chunk_lines=4, overlap=1, prefilter=False),
                          tmp_path / "c.jsonl", fake_from_function(reply), progress=False)
    rejects = rows(tmp_path / "c.rejects.jsonl")
    assert [(r["reason"], r["chunk"], r.get("also_in")) for r in rejects] == [
        ("low_grounding", "b#0000", ["b#0001", "b#0002"])]
    assert summary.rejected == {"low_grounding": 1}
    assert "— Voici la réplique numéro 6 !" in [r["citation"] for r in rows(tmp_path / "c.jsonl")]


def test_rejects_file_lists_reasons(tmp_path):
    llm = FakeLLM(['{"citations": [{"contexte": "x", "citation": "Tout ceci est inventé de bout en bout.", '
                   '"kind": "écrit"}, {"contexte": "x", "citation": "", "kind": "parole"}]}'])
    summary = extract_llm([Book("b", SCENE)], DANTES, ExtractConfig(prefilter=False), tmp_path / "c.jsonl", llm,
                          progress=False)
    assert summary.kept == 0 and summary.rejected == {"low_grounding": 1, "empty_citation": 1}
    reasons = [r["reason"] for r in rows(tmp_path / "c.rejects.jsonl")]
    assert sorted(reasons) == ["empty_citation", "low_grounding"]


def test_store_makes_a_rerun_free_and_ctrl_c_reports_progress(tmp_path):
    book = Book("b", numbered_text(12))
    cfg = ExtractConfig(chunk_lines=4, overlap=0, prefilter=False)

    def interrupt_third(messages, calls=[]):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return quotes_in(messages)

    with pytest.raises(ExtractInterrupted) as info:
        extract_llm([book], DANTES, cfg, tmp_path / "c.jsonl", fake_from_function(interrupt_third), progress=False)
    assert (info.value.done, info.value.total) == (2, 3)
    llm = fake_from_function(quotes_in)
    summary = extract_llm([book], DANTES, cfg, tmp_path / "c.jsonl", llm, progress=False)
    assert len(llm.calls) == 1 and summary.cached == 2 and summary.kept == 12


def test_http_clients_get_concurrent_calls_and_failed_chunks_are_retried(tmp_path):
    from dantes_mlx.llm import batch

    class ConcurrentFake(FakeLLM):
        """Like OpenAICompatClient: exposes iter_chat(requests, concurrency, return_exceptions)."""
        seen: list = []

        def iter_chat(self, requests, concurrency=None, return_exceptions=False):
            self.seen.append(concurrency)
            return batch.iter_chat(self, requests, concurrency, return_exceptions)

    def flaky(messages):
        if "numéro 4 " in messages[-1]["content"]:
            raise ConnectionError("server went away")
        return quotes_in(messages)

    book = Book("b", numbered_text(12))
    cfg = ExtractConfig(chunk_lines=4, overlap=0, prefilter=False)
    llm = ConcurrentFake(default=flaky)
    summary = extract_llm([book], DANTES, cfg, tmp_path / "c.jsonl", llm, concurrency=4, progress=False)
    assert llm.seen == [4] and len(llm.calls) == 3
    assert (summary.called, summary.failed, summary.kept) == (2, 1, 8)
    assert "server went away" in (tmp_path / "c.errors.jsonl").read_text(encoding="utf-8")
    again = ConcurrentFake(default=quotes_in)
    summary = extract_llm([book], DANTES, cfg, tmp_path / "c.jsonl", again, concurrency=4, progress=False)
    assert len(again.calls) == 1 and (summary.cached, summary.kept) == (2, 12)


def test_prefilter_skips_chunks_without_the_character(tmp_path):
    text = numbered_text(4) + "\n" + numbered_text(4, who="Caderousse").replace("numéro", "n°") + "\n" + numbered_text(4)
    book = Book("b", text)
    llm = fake_from_function(quotes_in)
    summary = extract_llm([book], DANTES, ExtractConfig(chunk_lines=4, overlap=0), tmp_path / "c.jsonl", llm,
                          progress=False)
    assert summary.chunks == 3 and summary.skipped == 1 and len(llm.calls) == 2
    assert all("Caderousse" not in call["messages"][-1]["content"] for call in llm.calls)


def focus_book() -> Book:
    """Narration, an exchange opened by Dantès' name (two replies unattributed), other people, Dantès again."""
    paras = ([f"La mer était calme au matin numéro {i}." for i in range(6)]
             + ["Dantès entra dans le bureau de l'armateur.", "— Bonjour, monsieur Morrel.",
                "— Bonjour, Edmond. Quelles nouvelles ?", "— Le capitaine Leclère est mort.", "— Quel malheur !"]
             + [f"Le vent tourna au soir numéro {i}." for i in range(6)]
             + ["Caderousse parlait avec Danglars.", "— Il sera capitaine, dit Danglars.",
                "— Tant mieux pour lui, répondit Caderousse.", "Le navire dormait.", "Le port dormait.",
                "Dantès revint chez son père.", "La nuit tomba."])
    return Book("b", "\n\n".join(paras) + "\n")


def test_focus_paragraphs_follow_the_exchange_the_character_is_in():
    from dantes_mlx.extract.focus import FOCUS_GAP, focus_paragraphs, focus_text

    text = focus_book().text
    seen = focus_paragraphs(text, "Edmond Dantès", ["Dantès", "Edmond"])
    assert [i for i, hit in enumerate(seen) if hit] == [6, 7, 8, 9, 10, 22]  # the unattributed replies too
    sent = focus_text(text, "Edmond Dantès", ["Dantès", "Edmond"], 1)
    assert sent.split(FOCUS_GAP) == [text[text.index("La mer était calme au matin numéro 5"):
                                          text.index("\n", text.index("au soir numéro 0"))],
                                     text[text.index("Le port dormait"):].rstrip()]
    assert focus_text(text, "Edmond Dantès", ["Dantès"], 30) == ""  # every paragraph: the chunk as it is


def test_focus_window_sends_less_and_grounds_in_the_whole_chunk(tmp_path):
    book = focus_book()
    focused = fake_from_function(quotes_in)
    summary = extract_llm([book], DANTES, ExtractConfig(focus_window=1), tmp_path / "f.jsonl", focused,
                          progress=False)
    (sent,) = [call["messages"][-1]["content"] for call in focused.calls]
    assert "numéro 2" not in sent and "Caderousse" not in sent and "[…]" in sent
    assert "— Quel malheur !" in sent and len(sent) < 0.6 * len(book.text)
    out = rows(tmp_path / "f.jsonl")
    assert summary.kept == len(out) == 4
    assert all(book.text[r["start"]:r["end"]] == r["citation"] and r["chunk"] == "b#0000" for r in out)
    whole = fake_from_function(quotes_in)
    extract_llm([book], DANTES, ExtractConfig(focus_window=1, prefilter=False), tmp_path / "w.jsonl", whole,
                progress=False)
    assert whole.calls[0]["messages"][-1]["content"] == book.text.rstrip("\n")  # focus needs the pre-filter
    # The focused text is the store key: the default run asks the LLM again rather than reuse it.
    again = fake_from_function(quotes_in)
    extract_llm([book], DANTES, ExtractConfig(), tmp_path / "f.jsonl", again, progress=False)
    assert len(again.calls) == 1 and "Caderousse" in again.calls[0]["messages"][-1]["content"]
    with pytest.raises(ConfigError, match="focus_window"):
        extract_llm([book], DANTES, ExtractConfig(focus_window=-1), tmp_path / "x.jsonl", again, progress=False)


def test_rules_method_rows_have_the_same_shape(tmp_path):
    summary = extract_rules([Book("b", SCENE)], DANTES, ExtractConfig(), tmp_path / "c.jsonl", progress=False)
    out = rows(tmp_path / "c.jsonl")
    assert summary.kept == len(out) >= 1
    for row in out:
        assert row["method"] == "rules" and row["chunk"] == "b#0000"
        assert " ".join(SCENE[a:b] for a, b in row["segments"]).startswith(row["citation"][:-1])
        assert row["start"] == row["segments"][0][0] and row["end"] == row["segments"][-1][1]
    assert "Et le chargement" not in " ".join(r["citation"] for r in out)  # the shipowner's line


# -- resume after kill -9 --------------------------------------------------------------------------
def _run_helper(source: Path, out: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(REPO / "tests" / "slow_llm.py"), str(source), str(out),
                             str(delay)], env=env, cwd=REPO, stderr=subprocess.PIPE)


def test_kill_9_then_rerun_gives_the_uninterrupted_file(tmp_path):
    source = tmp_path / "book.txt"
    source.write_text(numbered_text(60, every=2), encoding="utf-8")  # 15 chunks of 5 paragraphs
    whole, killed = tmp_path / "whole" / "c.jsonl", tmp_path / "killed" / "c.jsonl"
    assert _run_helper(source, whole, 0.0).wait(timeout=120) == 0
    proc = _run_helper(source, killed, 0.25)
    store = killed.with_name("c.store.jsonl")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not store.exists() or store.read_bytes().count(b"\n") < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    stored = store.read_bytes().count(b"\n")
    assert 4 <= stored < 15 and not killed.exists()
    assert _run_helper(source, killed, 0.0).wait(timeout=120) == 0
    assert killed.read_bytes() == whole.read_bytes()
    assert killed.with_name("c.rejects.jsonl").read_bytes() == whole.with_name("c.rejects.jsonl").read_bytes()
    assert len(rows(whole)) == 30 and len(rows(whole.with_name("c.rejects.jsonl"))) == 15


# -- the command -----------------------------------------------------------------------------------
def test_cli_all_speakers_writes_offsets_into_the_file_as_read(tmp_path):
    from click.testing import CliRunner

    from dantes_mlx.cli import main

    source = tmp_path / "scene.txt"
    source.write_bytes(SCENE.replace("\n", "\r\n").encode("utf-8"))  # CRLF: offsets count the \r
    out = tmp_path / "quotes.jsonl"
    result = CliRunner().invoke(main, ["extract", "--method", "rules", "--all-speakers", "--input", str(source),
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    raw = source.read_bytes().decode("utf-8")
    found = rows(out)
    assert len(found) == 3
    for row in found:
        assert {"text", "speaker", "start", "end"} <= set(row)
        assert row["text"].replace("\r", "")[:12] in raw[row["start"]:row["end"]].replace("\r", "")
    assert found[0]["speaker"] == "Dantès"


def test_cli_rules_fallback_when_no_model(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from dantes_mlx.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "scene.txt").write_text(SCENE, encoding="utf-8")
    result = CliRunner().invoke(main, ["extract", "--input", "scene.txt", "-o", "c.jsonl", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "using the rule method" in result.output and "kept" in result.output
    assert all(r["method"] == "rules" for r in rows(tmp_path / "c.jsonl"))
    result = CliRunner().invoke(main, ["extract", "--all-speakers", "--input", "scene.txt"])
    assert result.exit_code != 0 and "-o OUT.jsonl" in result.output


def test_cli_books_come_from_project_books_or_every_clean_file(tmp_path, monkeypatch):
    """`fetch --file mine.txt` + `clean` leaves data/clean/mine.txt: extract finds it, or says how to name it."""
    from click.testing import CliRunner

    from dantes_mlx.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "clean").mkdir(parents=True)
    (tmp_path / "data" / "clean" / "mine.txt").write_text(SCENE, encoding="utf-8")
    (tmp_path / "none.yaml").write_text("project:\n  books: []\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["extract", "--config", "none.yaml", "-o", "c.jsonl", "--quiet"])
    assert result.exit_code == 0, result.output
    assert {r["book"] for r in rows(tmp_path / "c.jsonl")} == {"mine"}
    (tmp_path / "mc.yaml").write_text("project:\n  books: [17989]\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["extract", "--config", "mc.yaml", "-o", "d.jsonl", "--quiet"])
    assert result.exit_code != 0 and "no clean text for book(s) 17989" in result.output
    assert "books: [mine]" in result.output and "--input" in result.output


# -- the real llama.cpp on the tiny random model ---------------------------------------------------
@pytest.mark.slow
def test_end_to_end_on_the_tiny_gguf(tiny_gguf, tmp_path):
    from dantes_mlx.llm.llamacpp import LlamaCppClient

    client = LlamaCppClient(str(tiny_gguf), n_ctx=2048, n_threads=2)
    # A random model mostly answers {"citations": []}: ask for one short citation so grounding has work.
    schema = copy.deepcopy(CITATION_SCHEMA)
    array = schema["properties"]["citations"]
    array.update(minItems=1, maxItems=2)
    for key in ("contexte", "citation"):
        array["items"]["properties"][key]["maxLength"] = 24
    cfg = ExtractConfig(chunk_lines=2, overlap=0, prefilter=False)
    summary = extract_llm([Book("b", SCENE)], DANTES, cfg, tmp_path / "c.jsonl", client, schema=schema,
                          sampling={"temperature": 0.8, "max_tokens": 160, "seed": 0}, progress=False)
    assert summary.called == 2 and summary.failed == 0
    store = rows(tmp_path / "c.store.jsonl")
    finished = [r["value"] for r in store if r["value"]["completion_tokens"] < 160]
    for value in finished:  # grammar-forced: every reply that ended by itself is valid JSON
        assert parse_reply(value["text"])[1] is None
    assert len(finished) == 2
    rejects = rows(tmp_path / "c.rejects.jsonl")
    assert summary.rejected["low_grounding"] >= 2 and summary.kept == 0  # random text is not in the book
    assert all(0 <= r["score"] < 85 and r["citation"] for r in rejects if r["reason"] == "low_grounding")
    assert summary.tokens["evaluated_tokens"] < summary.tokens["prompt_tokens"]  # the instructions were reused


def test_cli_ctrl_c_says_how_many_chunks_are_done_and_how_to_resume(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import dantes_mlx.llm as base
    from dantes_mlx.cli import main

    def interrupt_second(messages, calls=[]):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return quotes_in(messages)

    monkeypatch.setattr(base, "make_client", lambda cfg: fake_from_function(interrupt_second))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "book.txt").write_text(numbered_text(8), encoding="utf-8")
    result = CliRunner().invoke(main, ["extract", "--input", "book.txt", "--model", "any.gguf", "--method", "llm",
                                       "--no-prefilter", "--chunk-lines", "4", "--overlap", "0", "-o", "c.jsonl",
                                       "--quiet"])
    assert result.exit_code == 130
    assert "interrupted: 1/2 chunks done" in result.output and "resume with: dantes-mlx" in result.output


def test_cli_focus_window_option_reaches_the_stage(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import dantes_mlx.llm as base
    from dantes_mlx.cli import main

    llm = fake_from_function(quotes_in)
    monkeypatch.setattr(base, "make_client", lambda cfg: llm)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "book.txt").write_text(focus_book().text, encoding="utf-8")
    result = CliRunner().invoke(main, ["extract", "--input", "book.txt", "--model", "any.gguf", "--method", "llm",
                                       "--focus-window", "1", "-o", "c.jsonl", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "[…]" in llm.calls[0]["messages"][-1]["content"] and "kept 4 citations" in result.output


def test_rules_offsets_point_into_a_crlf_input_as_read(tmp_path):
    source = tmp_path / "scene.txt"
    source.write_bytes(SCENE.replace("\n", "\r\n").encode("utf-8"))
    out = tmp_path / "c.jsonl"
    extract_rules([load_book(source)], DANTES, ExtractConfig(), out, progress=False)
    raw = source.read_bytes().decode("utf-8")
    found = rows(out)
    assert len(found) == 2
    for row in found:
        spoken = " ".join(raw[a:b] for a, b in row["segments"])
        assert spoken.startswith("— "), spoken
        assert row["citation"][2:12] in raw[row["start"]:row["end"]]


def test_grounding_never_matches_part_of_a_word():
    # A short reply the model invented must not ground inside a longer word ("oui" in "épanouissait").
    text = "Le vent épanouissait les voiles du navire.\n\n--Non, répondit Dantès, jamais.\n"
    for cited in ("--Oui.", "Oui", "oui !", "--Jam."):
        g = locate(cited, text)
        assert g.score < 85, (cited, g, text[g.start:g.end])
    book = Book("b", text)
    reply = json.dumps({"citations": [{"contexte": "c", "citation": "--Oui.", "kind": "parole"},
                                      {"contexte": "c", "citation": "— Non !", "kind": "parole"}]})
    kept, rejects = ground_reply(book, chunk_book(book)[0], reply, Source("llm", "m", "v", "Dantès"), 85.0)
    assert len(kept) == 1 and kept[0]["citation"].startswith("--Non")
    assert [(r["reason"], r["citation"]) for r in rejects] == [("low_grounding", "--Oui.")]
    assert rejects[0]["score"] < 85


TIRADE = """Il réfléchit longtemps, puis il ajouta d'une voix sourde:

--Et maintenant, adieu, bonté, humanité, reconnaissance... Adieu à tous les sentiments qui épanouissent le cœur! J'ai remplacé la Providence pour récompenser les bons.

--Que voulez-vous dire? demanda Mercédès.
"""


def test_a_citation_shortened_with_an_ellipsis_is_grounded_over_the_words_left_out():
    book = Book("b", TIRADE)
    whole = TIRADE.split("\n")[2]
    cited = {"--Et maintenant, adieu, bonté… Adieu à tous les sentiments qui épanouissent le cœur!": 100.0,
             "Et maintenant, adieu [...] J'ai remplacé la Providence pour récompenser les bons.": 100.0,
             "--Et maintenant, adieu, bonté (...) j'ai remplace la Providence pour recompenser les bons": 96.2}
    for text, score in cited.items():
        reply = json.dumps({"citations": [{"contexte": "c", "citation": text, "kind": "parole"}]})
        kept, rejects = ground_reply(book, chunk_book(book)[0], reply, Source("llm", "m", "v", "Dantès"), 85.0)
        assert rejects == [] and len(kept) == 1, (text, rejects)
        assert kept[0]["grounding_method"] == "elided" and kept[0]["grounding"] == score
        assert kept[0]["citation"].lstrip("-") in whole and "humanité" in kept[0]["citation"]
        assert kept[0]["model_citation"] == text
    # An invented piece, or pieces in the wrong order, are still rejected with the weakest piece's score.
    for text in ("--Et maintenant, adieu, bonté… Je pars ce soir pour Marseille retrouver mon vieux père.",
                 "J'ai remplacé la Providence pour récompenser les bons… Et maintenant, adieu, bonté"):
        reply = json.dumps({"citations": [{"contexte": "c", "citation": text, "kind": "parole"}]})
        kept, rejects = ground_reply(book, chunk_book(book)[0], reply, Source("llm", "m", "v", "Dantès"), 85.0)
        assert kept == [] and rejects[0]["reason"] == "low_grounding" and rejects[0]["score"] < 85, text


# -- provenance that survives --input ------------------------------------------------------------------
DEMO_SCENE = REPO / "dantes_mlx" / "resources" / "demo_scene.txt"


def _chapter_before(text: str, start: int, headings: dict[str, str]) -> str | None:
    """The title of the last chapter heading line before `start` (an independent reading of the text)."""
    found, text = None, "\n" + text  # a heading may open the text
    for heading, title in headings.items():
        at = max(text.rfind(f"\n{heading}\n", 0, start + 1), text.rfind(f"\n{heading}\r\n", 0, start + 1))
        if at >= 0 and (found is None or at > found[0]):
            found = (at, title)
    return found[1] if found else None


def test_every_citation_from_input_carries_its_chapter(tmp_path):
    """Rules and LLM, a raw file without a sidecar (chapters found by clean's rules) and a clean one with it."""
    from click.testing import CliRunner

    from dantes_mlx.cli import main

    headings = {"I": "I. LE RETOUR", "II": "II. LES CATALANS", "III": "III. LE CHÂTEAU D'IF"}
    raw = tmp_path / "scene.txt"
    raw.write_bytes(DEMO_SCENE.read_bytes())
    runner = CliRunner()
    result = runner.invoke(main, ["clean", str(raw), "-o", str(tmp_path / "clean" / "scene.txt")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "clean" / "scene.json").is_file()
    chapters = {}
    for source in (raw, tmp_path / "clean" / "scene.txt"):
        text = source.read_bytes().decode("utf-8")
        out = tmp_path / f"{source.parent.name}.jsonl"
        result = runner.invoke(main, ["extract", "--method", "rules", "--input", str(source), "-o", str(out),
                                      "--quiet"])
        assert result.exit_code == 0, result.output
        got = rows(out)
        assert len(got) >= 5 and all(r["chapter"] for r in got)
        assert [r["chapter"] for r in got] == [_chapter_before(text, r["start"], headings) for r in got]
        chapters[source.parent.name] = [r["chapter"] for r in got]
        quotes = tmp_path / f"{source.parent.name}.all.jsonl"
        result = runner.invoke(main, ["extract", "--all-speakers", "--input", str(source), "-o", str(quotes)])
        assert result.exit_code == 0 and all(r["chapter"] in headings.values() for r in rows(quotes))
    assert chapters["clean"] == chapters[tmp_path.name]  # same chapters from the sidecar as found in the raw file

    book = load_book(raw)
    cite = lambda messages: {"citations": [{"contexte": "c", "citation": line, "kind": "parole"}  # noqa: E731
                                           for line in messages[-1]["content"].split("\n")
                                           if line.startswith("--Un grand malheur")]}
    extract_llm([book], DANTES, ExtractConfig(), tmp_path / "llm.jsonl", fake_from_function(cite), progress=False)
    assert [r["chapter"] for r in rows(tmp_path / "llm.jsonl")] == ["I. LE RETOUR"]


def test_a_sidecar_that_no_longer_matches_its_text_gives_way_to_the_text(tmp_path, capsys):
    text = "I\n\nLE DÉPART\n\n" + numbered_text(20) + "\nII\n\nLE RETOUR\n\n" + numbered_text(20)
    (tmp_path / "b.txt").write_text(text, encoding="utf-8")
    second = text.index("\nII\n") + 1
    sidecar = {"chapters": [{"heading": "I", "title": "I. LE DÉPART", "start": 0},
                            {"heading": "II", "title": "II. LE RETOUR", "start": second}]}
    (tmp_path / "b.json").write_text(json.dumps(sidecar), encoding="utf-8")
    assert load_book(tmp_path / "b.txt").chapters == ((0, "I. LE DÉPART"), (second, "II. LE RETOUR"))
    (tmp_path / "b.txt").write_text("Une préface ajoutée.\n\n" + text, encoding="utf-8")  # edited after clean
    book = load_book(tmp_path / "b.txt")
    assert "do not match" in capsys.readouterr().err
    assert [title for _, title in book.chapters] == ["I. LE DÉPART", "II. LE RETOUR"]
    assert book.chapters[1][0] == second + len("Une préface ajoutée.\n\n")
