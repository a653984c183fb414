"""The French dialogue code is total: no text raises, whole books included (in-memory, no network).

Generated long exchanges (hypothesis), a real excerpt that used to crash, and every text of ../shared/data
glued into one book, run through detection, attribution, the LLM pre-filter, focus windows and the rule method.
Run: pytest tests/fr/test_dialogue_total.py -q
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dantes_mlx.cli import main
from dantes_mlx.config import CharacterConfig, ExtractConfig
from dantes_mlx.fr.dialogue import (all_speakers_rows, character_quotes, detect_quotations, find_quotations,
                                 paragraphs, read_text)
from dantes_mlx.fr.narrator import narrator_hint, quote_kind
from dantes_mlx.fr.mentions import Mention
from dantes_mlx.fr.speakers import _Attributor
from dantes_mlx.extract.chunks import Book
from dantes_mlx.extract.llm_method import chunks_to_send
from dantes_mlx.extract.rules_method import extract_rules
from dantes_mlx.extract.focus import focus_paragraphs, focus_text, focus_windows, prefilter_keeps

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LONG_EXCHANGE = SHARED / "gutenberg" / "monte_cristo_t1_long_exchange.txt"
DANTES = ("Edmond Dantès", ["Edmond", "Dantès", "le comte", "Monte-Cristo", "l'Anglais"])


def check_quotes(text: str, quotes) -> None:
    """Offsets point at the quoted text, segments and incises lie inside the text, speakers at their words."""
    for q in quotes:
        assert text[q.start:q.end] == q.text
        assert q.segments and q.segments[0][0] == q.start and q.segments[-1][1] == q.end
        assert all(q.start <= a < b <= q.end for a, b in q.segments)
        assert all(0 <= a <= b <= len(text) for a, b in q.incises)
        if q.speaker_start is not None:
            assert text[q.speaker_start:q.speaker_end].replace("’", "'") == q.speaker.replace("’", "'")
    assert [q.start for q in quotes] == sorted(q.start for q in quotes)


def run_everything(text: str, name: str, aliases: list[str]) -> list:
    """Every entry point of the dialogue code on one text; returns the attributed quotations."""
    paras = paragraphs(text)
    assert all(0 <= a < b <= len(text) for a, b in paras)
    check_quotes(text, detect_quotations(text, paras))
    quotes = find_quotations(text)
    check_quotes(text, quotes)
    for row in all_speakers_rows(text):
        assert text[row["start"]:row["end"]] == row["text"]
        json.dumps(row, ensure_ascii=False)
    for narrator in (False, True):
        mine = character_quotes(text, name, aliases, narrator, quotes)
        assert {q.start for q in mine} <= {q.start for q in quotes}
        assert {quote_kind(text, q) for q in mine} <= {"parole", "pensée"}
        prefilter_keeps(text, name, aliases, narrator)
        paras = len([1 for line in text.split("\n") if line.strip()])
        assert len(focus_paragraphs(text, name, aliases, narrator)) == paras
        for a, b in focus_windows(text, name, aliases, 1, narrator):
            assert 0 <= a < b <= len(text)
    focus_text(text, name, aliases, 2, narrator=True)
    narrator_hint(text, quotes, name, speaks=False)
    return quotes


def run_rule_extraction(text: str, name: str, aliases: list[str]) -> list[dict]:
    """The rule method and the LLM method's chunking, pre-filter and focus windows on one book (the character
    as a first-person narrator: every path of the rules runs)."""
    book = Book("generated", text)
    character = CharacterConfig(name=name, aliases=aliases, narrator=True)
    cfg = ExtractConfig(chunk_lines=40, overlap=5, focus_window=1)
    for chunk, _ in chunks_to_send(book, character, cfg):
        assert text[chunk.start:chunk.end] == chunk.text
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "citations.jsonl"
        extract_rules([book], character, cfg, out, progress=False)
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        assert all(row["start"] <= a < b <= row["end"] for a, b in row["segments"])
    return rows


# -- the excerpt that crashed ------------------------------------------------------------------------
@pytest.mark.skipif(not LONG_EXCHANGE.is_file(), reason=f"shared data absent: {LONG_EXCHANGE}")
def test_the_monte_cristo_long_exchange_no_longer_crashes():
    text = read_text(LONG_EXCHANGE)
    quotes = run_everything(text, *DANTES)
    assert len(quotes) >= 25
    speakers = {q.speaker for q in quotes}
    assert speakers <= {"M. de Boville", "l'Anglais", "l'inspecteur", None}
    said = {q.text.split(",")[0].split("?")[0]: q.speaker for q in quotes}
    assert said["--Pour le mort"] == "M. de Boville" and said["--En vérité"] == "l'Anglais"
    assert said["--Oui monsieur"] == "l'inspecteur"


def test_older_narration_comes_into_reach_when_recent_narration_holds_no_subject():
    """The root of the crash: narration stretches without a subject shrink the recent mentions, so
    older stretches come into the last 30 and must be read too before a pronoun is resolved."""
    named = "Mercédès entra dans la salle. Le vieux Dantès se leva.\n\n"
    filler = "".join(f"--Réplique numéro {i}.\n\nUn silence.\n\n" for i in range(40))
    [*_, last] = find_quotations(named + filler + "--Et maintenant? dit-il.\n")
    assert (last.mention, last.speaker) == ("il", "Le vieux Dantès")
    source = "Le vieux Dantès se leva. " + "Un silence. " * 40
    attributor = _Attributor(source, paragraphs(source))
    attributor.recent = [(0, 25)] + [(25 + 12 * i, 37 + 12 * i) for i in range(40)]
    assert attributor._expand_recent() == [Mention("Le vieux Dantès", 0, 15, "m")]
    assert attributor.recent == [Mention("Le vieux Dantès", 0, 15, "m")]  # expanded once, in place


# -- generated long exchanges ------------------------------------------------------------------------
NAMES = ["Dantès", "Mercédès", "M. de Boville", "l'Anglais", "le jeune homme", "la vieille femme", "Fernand",
         "l'abbé Faria", "Haydée", "Caderousse", "le comte", "Monte-Cristo", "l’inspecteur"]
INCISES = ["dit-il", "dit-elle", "reprit-il", "murmura-t-elle", "répondit-il", "s'écria-t-il", "fit-elle",
           "demanda-t-il", "lui dis-je", "répondis-je", "m’écriai-je", "dit celui-ci", "dit l'un d'eux",
           "dit quelqu'un", "continua l'inspecteur", "s'écria Dantès", "répondit le jeune homme",
           "dit enfin Haydée", "reprit M. de Boville", "fit l'Anglais, comme s'il avait la conception difficile",
           "dit-il en hochant la tête", "ajouta-t-elle, pâle de colère", "dit-on"]
SPOKEN = ["Oui.", "Non, monsieur.", "Comment cela?", "Comment ? vous ne comprenez pas ?", "Eh bien?", "Ah !",
          "…", "Je vous ai dit que c'était un homme fort dangereux; par bonheur il est mort.",
          "Où allez-vous, Dantès ?", "Mon père !", "C’est bien elle, c’est bien elle.",
          "Ç'eût été difficile.",
          "Et vous, Mercédès?", "Il est mort et bien mort?", "Demain ! demain !", "etc.", "Quoi ? — Rien.",
          "Vu la note ci-dessus, _rien à faire_."]
NARRATION = ["Dantès se leva.", "Il sortit.", "Elle regarda la mer.", "Je la regardai longtemps.",
             "La lampe fumait sur la table.", "Le jeune homme, pâle de colère, répondit :", "Il dit :",
             "Puis, après un silence :", "Et il éclata de rire.", "Un silence.", "Mercédès murmura :",
             "Je me disais :", "Et tous deux passèrent dans le cabinet de M. de Boville.",
             "On jette les morts à la mer.", "Celui-ci répondit :", "Chacun courut.", "Tout fut tiré des coffres.",
             "J'entendis :", "Je fis sauter le fermoir, il n'y avait que ces mots :", "je lui aurais dit :",
             "Je l’embrassai au front :", "Je poussai un cri."]
HEADINGS = ["CHAPITRE PREMIER", "CHAPITRE XII", "XII", "I.", "Le père et le fils.", "LXXIV. Le Départ",
            "Marseille.--L'arrivée.", "Paris, 4 mai 1815.", "Mardi, 22 novembre.", "Le 3 mars."]
SPACES = [" ", " ", " ", "\u00a0", "\u202f", "\t", "  "]
MARKERS = ["--", "—", "–", "- ", "― "]
JUNK_CHARS = "abcdeéèàçôAZ «»“”—–-:;,.!?…'’()[]_\t\u00a0\r\n0123456789"  # markers, punctuation, line ends
JUNK = st.text(alphabet=st.sampled_from(list(JUNK_CHARS)), max_size=40)


@st.composite
def reply(draw) -> str:
    """A reply with any marker, incises, nesting, colon introductions and odd spacing."""
    said, sp = draw(st.sampled_from(SPOKEN)), draw(st.sampled_from(SPACES))
    kind = draw(st.integers(0, 8))
    incise = draw(st.sampled_from(INCISES))
    if kind == 0:
        return f"{draw(st.sampled_from(MARKERS))}{sp}{said}"
    if kind == 1:
        more = draw(st.sampled_from(SPOKEN))
        return f"{draw(st.sampled_from(MARKERS))}{said[:-1] or said},{sp}{incise},{sp}{more}"
    if kind == 2:
        return f"«{sp}{said}{sp}»,{sp}{incise}."
    if kind == 3:  # nested guillemets, sometimes closed once for both (French typography)
        inner = draw(st.sampled_from(SPOKEN))
        close = draw(st.sampled_from(["»", "", "» »"]))
        return f"«{sp}{said} Il m'a dit : «{sp}{inner}{sp}{close}"
    if kind == 4:
        return f"{draw(st.sampled_from(NARRATION))}{sp}:{sp}{draw(st.sampled_from(MARKERS))}{sp}{said}"
    if kind == 5:
        return f"{draw(st.sampled_from(NARRATION))} : «{sp}{said}{sp}» {draw(st.sampled_from(NARRATION))}"
    if kind == 6:  # several replies in one paragraph
        return f"— {said} — {draw(st.sampled_from(SPOKEN))} — {draw(st.sampled_from(SPOKEN))}"
    if kind == 7:
        return f"«{sp}{said}"  # never closed
    return f"{said} »{sp}{incise}"  # a stray closing guillemet


@st.composite
def paragraph(draw) -> str:
    """A reply, narration, a heading, a letter's opening, junk, or nothing."""
    kind = draw(st.sampled_from(["reply"] * 6 + ["narration"] * 3 + ["heading", "letter", "junk", "empty"]))
    if kind == "reply":
        return draw(reply())
    if kind == "narration":
        return " ".join(draw(st.lists(st.sampled_from(NARRATION), min_size=1, max_size=4)))
    if kind == "heading":
        return draw(st.sampled_from(HEADINGS))
    if kind == "letter":
        return (f"{draw(st.sampled_from(HEADINGS))}\n\n« Mon cher {draw(st.sampled_from(NAMES))}, "
                f"{draw(st.sampled_from(SPOKEN))}")
    if kind == "junk":
        return draw(JUNK)
    return draw(st.sampled_from(["", " ", "\u00a0", "\t"]))


SEPARATORS = st.sampled_from(["\n\n", "\n", "\r\n\r\n", "\n\n\n", "\n \n", "\n\u00a0\n"])
BARE_REPLY = st.builds(lambda m, s: f"{m}{s}", st.sampled_from(MARKERS), st.sampled_from(SPOKEN))


@st.composite
def scene(draw) -> str:
    """A pattern of paragraphs played up to 60 times, then a reply: a long exchange where cues are rare
    (or frequent), narration recurs, and a pronoun may have to look far back."""
    pattern = draw(st.lists(st.one_of(BARE_REPLY, paragraph()), min_size=1, max_size=6))
    sep = draw(SEPARATORS)
    return sep.join(pattern * draw(st.integers(1, 60))) + sep + draw(reply())


@st.composite
def long_exchange(draw) -> str:
    """Hundreds of paragraphs: scenes, then a palette of paragraphs played in a drawn order."""
    scenes = draw(st.lists(scene(), min_size=1, max_size=4))
    palette = draw(st.lists(paragraph(), min_size=1, max_size=25))
    order = draw(st.lists(st.integers(0, len(palette) - 1), max_size=200))
    seps = draw(st.lists(SEPARATORS, min_size=1, max_size=4))
    mixed = "".join(palette[i] + seps[k % len(seps)] for k, i in enumerate(order))
    return draw(SEPARATORS).join(scenes + [mixed]) * draw(st.integers(1, 2))


@pytest.mark.slow  # about 30 s on a quiet 2-core machine
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(long_exchange())
def test_no_generated_exchange_raises(text):
    run_everything(text, *DANTES)
    run_rule_extraction(text, *DANTES)


# -- every text of the shared data as one book --------------------------------------------------------
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data absent: {SHARED}")
def test_all_speakers_over_every_shared_text_as_one_book(tmp_path):
    """fr-litbank-dev, the Gutenberg files (the raw one as is: header, CRLF, licence) and the original
    project's raw LLM outputs, concatenated: the CLI exits 0 and every offset points at its quotation."""
    sources = sorted(SHARED.rglob("*.txt"))
    assert len(sources) >= 12
    book = tmp_path / "book.txt"
    book.write_text("\n\n".join(read_text(p).lstrip("\ufeff") for p in sources), encoding="utf-8")
    text = read_text(book)
    out = tmp_path / "all.jsonl"
    result = CliRunner().invoke(main, ["extract", "--method", "rules", "--all-speakers", "--input", str(book),
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    one_by_one = sum(len(find_quotations(read_text(p).lstrip("\ufeff"))) for p in sources)
    assert abs(len(rows) - one_by_one) <= 0.05 * one_by_one  # measured 716 vs 728
    for row in rows:
        assert text[row["start"]:row["end"]] == row["text"]
    named = [r for r in rows if r["speaker"]]
    assert len(named) > 0.4 * len(rows)
    assert all("chapter" in row for row in rows)
    for who in (["--character", "Edmond Dantès"], ["--character", "Romuald", "--narrator"]):
        result = CliRunner().invoke(main, ["extract", "--method", "rules", "--input", str(book), "-o",
                                           str(tmp_path / "mine.jsonl"), "--quiet", *who])
        assert result.exit_code == 0, result.output + repr(result.exception)
        for row in (json.loads(line) for line in (tmp_path / "mine.jsonl").read_text(encoding="utf-8").splitlines()):
            assert all(row["start"] <= a < b <= row["end"] for a, b in row["segments"])
            assert text[row["segments"][0][0]:row["segments"][0][1]].strip()
