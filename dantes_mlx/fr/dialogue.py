"""Rule-based French direct speech: find quotations («», —, –, --) and attribute their speakers.

Offsets everywhere are Python str indices (Unicode code points) into the text as given. To get
offsets into a file, read it with `read_text` (UTF-8, newlines kept as they are in the file).
"""

from __future__ import annotations

import dataclasses
import re
from functools import lru_cache
from pathlib import Path

from dantes_mlx.fr.boundaries import (SECOND_PERSON, cut_narrative_clause, drop_narration, match_incise,
                                            split_incises, trim_span)
from dantes_mlx.fr.narrator import is_first_person
from dantes_mlx.fr.ranker import Ranker, default_ranker, ranker_chooser
from dantes_mlx.fr.speakers import attribute, is_character, normalise_speaker
from dantes_mlx.fr.text import fold_name
from dantes_mlx.errors import InputError

__all__ = ["Quote", "find_quotations", "character_quotes", "mentions_character", "all_speakers_rows",
           "normalise_speaker", "is_character", "paragraphs", "read_text", "split_incises", "trim_span"]


# --- quotations

@dataclasses.dataclass(frozen=True)
class Quote:
    """One direct-speech quotation.

    text == source[start:end]: the quotation from its opening marker to its last spoken word (or
    closing »), incises inside it included. `segments` are the spoken spans only (incises cut out,
    markers kept, as fr-litbank annotates them); `incises` the narrator's spans inside or right
    after the quote. `speaker` is the surface string naming the speaker (a pronoun's antecedent
    when resolved), `mention` the words at the cue itself ("il", "le jeune homme"), `cue` how it
    was attributed: incise, before, previous (narrative paragraph before the reply), alternation.
    """
    text: str
    start: int
    end: int
    segments: tuple[tuple[int, int], ...]
    marker: str
    incises: tuple[tuple[int, int], ...] = ()
    speaker: str | None = None
    speaker_start: int | None = None
    speaker_end: int | None = None
    mention: str | None = None
    cue: str | None = None

    def speech(self, source: str) -> str:
        """The spoken words only: segments joined, dialogue markers stripped."""
        parts = [source[a:b] for a, b in self.segments]
        joined = " ".join(p.strip() for p in parts if p.strip())
        joined = re.sub(r"^(?:--|[—–―-])\s*|^[«“]\s*", "", joined)
        return re.sub(r"\s*[»”]$", "", joined).strip()


_DASH = re.compile(r"(?:--|[—–―]|-(?=\s))[^\S\n]*")
_INNER_DASH = re.compile(r"(?<=[.!?…])\s+(?:--|[—–―])\s+(?=\S)")
_COLON_DASH = re.compile(r":\s*(?P<dash>--|[—–―])\s*(?=\w)")  # "il reprit : — Non."
_GUILLEMET = re.compile(r"[«»“”]")
_SPACES = " \t\u00a0\u202f"


def read_text(path: str | Path) -> str:
    """A UTF-8 file as one str with its newlines untouched, so that offsets are file code points."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read()
    except FileNotFoundError as exc:
        raise InputError("file not found", path=path, fix="check the --input path") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid UTF-8 at byte {exc.start}", path=path,
                         fix="convert it, e.g. `iconv -f latin1 -t utf-8 IN > OUT`") from exc


def paragraphs(text: str) -> list[tuple[int, int]]:
    """(start, end) of each paragraph, trimmed. Paragraphs are blocks separated by blank lines when
    the text has them (hard-wrapped or one paragraph per line), else single lines; a line opening
    with a dialogue dash always starts a new paragraph."""
    lines, pos = [], 0  # (start, end) of each line's text, without its edge whitespace
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped:
            lead = len(line) - len(line.lstrip())
            lines.append((pos + lead, pos + lead + len(stripped)))
        else:
            lines.append(None)
        pos += len(line) + 1
    n_text = sum(x is not None for x in lines)
    n_blank = len(lines) - n_text
    n_long = sum(x is not None and x[1] - x[0] > 90 for x in lines)
    hard_wrapped = n_long <= 0.02 * n_text  # Gutenberg's 70-column lines
    blank_layout = n_blank > 0 and (hard_wrapped or n_blank >= 0.3 * n_text)
    result: list[tuple[int, int]] = []
    open_block = False
    for line in lines:
        if line is None:
            open_block = False
        elif blank_layout and open_block and not _DASH.match(text, line[0]):
            result[-1] = (result[-1][0], line[1])
        else:
            result.append(line)
            open_block = True
    return result


def _quote(text: str, start: int, body: int, end: int, marker: str, closing: bool,
           inline: bool = False) -> Quote | None:
    segments, incises = split_incises(text, start, body, end)
    if not closing:
        segments, incises = drop_narration(text, segments, incises)
    if inline:
        segments, incises = cut_narrative_clause(text, segments, incises)
    if not segments:
        return None
    if closing and text[end - 1] in "»”" and not text[segments[-1][1]:end].strip(_SPACES + "»”"):
        segments[-1] = (segments[-1][0], end)
    s, e = segments[0][0], segments[-1][1]
    return Quote(text[s:e], s, e, tuple(segments), marker, tuple(incises))


def _closing_guillemet(text: str, a: int, b: int) -> int:
    """A reply inside a «...» dialogue ends at the » that closes the dialogue: « ... — Adieu. » Et..."""
    depth = 0
    for m in _GUILLEMET.finditer(text, a, b):
        if m.group() in "«“":
            depth += 1
        elif depth:
            depth -= 1
        else:
            return m.end()
    return b


def _dash_replies(text: str, start: int, end: int, inline: bool = False) -> list[Quote]:
    """The replies of a paragraph opened by a dialogue dash (a sentence-final "— " inside it
    starts the next speaker's reply). A run of replies closed by "etc." samples what a crowd
    says ("— Est-ce vrai ? — On le dit. — Qui l'a vue ? etc."): no one's words, none kept."""
    cuts = [start] + [m.end() - len(m.group().lstrip()) for m in _INNER_DASH.finditer(text, start, end)] + [end]
    out = []
    for a, b in zip(cuts, cuts[1:]):
        a, b = trim_span(text, a, _closing_guillemet(text, a, b))
        m = _DASH.match(text, a, b)
        if not m:
            continue
        q = _quote(text, a, m.end(), b, m.group().strip(), closing=False, inline=inline and a == start)
        if q:
            out.append(q)
    if len(out) > 1 and _ETC.search(text, out[-1].start, out[-1].end):
        return []
    return out


_ETC = re.compile(r"\betc\.?\W*$")


def _is_term(text: str, a: int, b: int) -> bool:
    """«» inside a sentence around a few words mark a term, a title or irony, not speech:
    'des personnes « arrivées »', 'un tas de choses « qui pourraient servir »'."""
    inner = text[a + 1:b - 1].strip(_SPACES + "\n")
    before = text[max(0, a - 3):a].strip()
    if not inner or before.endswith((":", ".", "!", "?", "…")) or not before:
        return False
    words = len(inner.split())
    lower = inner[:1].islower()
    return lower and words <= 6 or words <= 3 and not re.search(r"[.!?…]", inner)


def _after_incise(text: str, qend: int, para_end: int) -> tuple[int, int] | None:
    """An incise right after a closing guillemet: « Soit », dit-il."""
    m = re.compile(r"\s*,?\s*").match(text, qend, para_end)
    pos = m.end() if m else qend
    if pos >= para_end or pos == qend:
        return None
    found = match_incise(text, pos, para_end)
    return (qend, found[1]) if found else None


def _addressed(text: str, start: int, end: int) -> bool:
    """Whether a quotation over several paragraphs speaks to someone (tu, vous) in its first one."""
    first = text[start:text.find("\n", start, end) if "\n" in text[start:end] else end]
    return SECOND_PERSON.search(first) is not None


def _introduced(text: str, start: int) -> bool:
    """Whether the narration right before a quotation announces it with a colon."""
    return text[max(0, start - 40):start].rstrip(_SPACES + "\r\n").endswith(":")


class _Guillemets:
    """Scanner for «...» quotations: nesting, and quotes continued over paragraphs that open with «.
    A quotation over several paragraphs, or never closed, that no colon announces is a frame
    (a story told inside the story, a diary, a letter): dropped, the speech inside it is kept.
    French typography writes one » where a nested quotation and its outer one end together: when
    a paragraph leaves a quotation open after a nested one closed, both closed there."""

    def __init__(self, text: str):
        self.text, self.quotes = text, []
        self.start, self.depth, self.nested, self.multi, self.entry = None, 0, [], False, False
        self.merge: tuple[int, int] | None = None  # first nested » of this paragraph's quotation

    def scan(self, a: int, b: int, next_opens: bool, next_dash: bool = False, entry: bool = False) -> None:
        """One paragraph; entry: it follows a date heading, so a « opening it is a diary entry."""
        text = self.text
        for m in _GUILLEMET.finditer(text, a, b):
            c, p = m.group(), m.start()
            if c in "«“":
                if self.depth == 0:
                    self.start, self.depth, self.multi, self.entry = p, 1, False, entry and p == a
                    self.merge = None
                elif p == a:
                    self.multi = True
                else:
                    self.depth += 1
                    self.nested.append(p)
            elif self.depth > 1:
                self.depth -= 1
                inner = self.nested.pop()
                if self.depth == 1 and _introduced(text, inner):
                    self._add(inner, p + 1, b, closed=True)
                if self.depth == 1 and self.merge is None and not self.multi:
                    self.merge = (p, len(self.quotes))
            elif self.depth == 1:
                self.depth = 0
                if not self.entry and (not self.multi or _introduced(text, self.start)
                                       or _addressed(text, self.start, p)):
                    self._add(self.start, p + 1, b, closed=True)
        if self.depth == 1 and self.merge and not next_opens and self.start >= a:
            close, kept = self.merge
            del self.quotes[kept:]
            self.depth, self.nested, self.merge = 0, [], None
            if not self.entry:
                self._add(self.start, close + 1, b, closed=True)
            self.scan(close + 1, b, next_opens, next_dash)
            return
        if self.depth and not next_opens:
            # « opens a dialogue whose next replies come with dashes: keep the first reply
            if not self.multi and not self.entry and (next_dash or _introduced(text, self.start)):
                self._add(self.start, b, b, closed=False)
            self.depth, self.nested = 0, []

    def _add(self, start: int, end: int, para_end: int, closed: bool) -> None:
        text = self.text
        after = _after_incise(text, end, para_end) if closed else None
        if closed and not after and _is_term(text, start, end):
            return
        if not closed:  # a « paragraph never closed that turns to narration continues a told story
            segments, incises = split_incises(text, start, start + 1, end)
            if drop_narration(text, segments, incises)[0] != segments:
                return
        q = _quote(text, start, start + 1, end, text[start], closing=closed)
        if q is None:
            return
        if after:
            q = dataclasses.replace(q, incises=q.incises + (after,))
        self.quotes.append(q)


_MONTHS = "janvier février mars avril mai juin juillet août septembre octobre novembre décembre".split()
# "Mardi, 22 novembre.", "Paris, 4 décembre 1803." alone on a line: the heading of a diary entry or letter
_DATE_HEADING = re.compile(r"(?:[A-ZÀ-Ý][\w'’-]*(?:\s+[\w'’-]+){0,3},\s+)?(?:(?:lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche),?\s+)?(?:le\s+)?"
                           r"\d{1,2}(?:er)?\s+(?:" + "|".join(_MONTHS) + r")(?:\s+\d{4})?\s*[.:]?", re.I)


def detect_quotations(text: str, paras: list[tuple[int, int]] | None = None) -> list[Quote]:
    """Direct-speech quotations in text order, without speakers."""
    paras = paragraphs(text) if paras is None else paras
    scanner = _Guillemets(text)
    quotes: list[Quote] = []
    entry = False  # inside a diary: a date heading, then paragraphs that open with «
    for i, (a, b) in enumerate(paras):
        next_opens = i + 1 < len(paras) and text[paras[i + 1][0]] in "«»“"
        entry = text[a] in "«“" and (entry or i > 0 and _DATE_HEADING.fullmatch(text, *paras[i - 1]) is not None)
        if scanner.depth == 0 and _DASH.match(text, a, b):
            quotes.extend(_dash_replies(text, a, b))
            continue
        before = len(scanner.quotes)
        scanner.scan(a, b, next_opens, i + 1 < len(paras) and _DASH.match(text, *paras[i + 1]) is not None,
                     entry)
        found = scanner.quotes[before:]
        quotes.extend(found)
        for m in _COLON_DASH.finditer(text, a, b):
            d = m.start("dash")
            if not any(q.start <= d < q.end for q in found):
                quotes.extend(_dash_replies(text, d, b, inline=True))
    quotes.sort(key=lambda q: q.start)
    return quotes


def find_quotations(text: str, ranker: Ranker | None | str = "default", trace: list | None = None) -> list[Quote]:
    """Every direct-speech quotation of a French text with its attributed speaker (or None). Speakers come from
    the shipped speaker ranker over the rules' candidates (fr/ranker.py); ranker=None: the rules' cues
    alone. `trace` collects each quotation's candidates (for fitting a ranker)."""
    paras = paragraphs(text)
    ranker = default_ranker() if isinstance(ranker, str) else ranker
    chooser = ranker_chooser(ranker, trace) if ranker is not None or trace is not None else None
    return attribute(text, detect_quotations(text, paras), paras, chooser)


def character_quotes(text: str, name: str, aliases=(), narrator: bool = False,
                     quotes: list[Quote] | None = None) -> list[Quote]:
    """The rule method of extraction: quotations whose speaker is the character or an alias, and, when
    the character is the narrator, those the narration's "je" speaks (see narrator.py)."""
    return [q for q in (find_quotations(text) if quotes is None else quotes)
            if is_character(q.speaker, name, aliases) or narrator and is_first_person(q.speaker)]


@lru_cache(maxsize=64)
def _alias_regex(name: str, aliases: tuple[str, ...]) -> re.Pattern | None:
    forms = sorted({normalise_speaker(a) for a in (name, *aliases)} - {""}, key=len, reverse=True)
    if not forms:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(f) for f in forms) + r")(?!\w)")


def mentions_character(text: str, name: str, aliases=()) -> bool:
    """Whether text names the character or an alias (case, accents, hyphens and apostrophes ignored):
    the pre-filter that lets the LLM method skip chunks."""
    pattern = _alias_regex(name, tuple(aliases))
    return pattern is not None and pattern.search(fold_name(text)) is not None


def all_speakers_rows(text: str) -> list[dict]:
    """One row per quotation for `extract --all-speakers`: text (== source[start:end]), speaker (or
    None), start, end (str indices = code points), speech (incises cut out), segments, mention, cue."""
    rows = []
    for q in find_quotations(text):
        rows.append({"text": q.text, "speaker": q.speaker, "start": q.start, "end": q.end,
                     "speech": q.speech(text), "segments": [list(s) for s in q.segments],
                     "mention": q.mention, "cue": q.cue})
    return rows

