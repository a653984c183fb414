"""Locate extracted citations in the source text (exact, normalised, fuzzy), keep the spoken words, merge duplicates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from rapidfuzz import fuzz

from dantes_mlx.fr import dialogue
from dantes_mlx.fr.dialogue import split_incises, trim_span
from dantes_mlx.fr.text import fold_char

# Characters that open or close a reply around its words: dialogue dashes, quotes, guillemets.
_OPENERS = set("-—–―‒«»\"“”„'‘’ \u00a0\u202f\t")
# What may follow the last word of a reply: sentence punctuation, closing quotes, thin spaces.
_CLOSERS = set(".!?…,;:»\"”’')] \u00a0\u202f")


# An ellipsis a model puts where it left words out of a citation: "…", "...", "[…]", "(...)".
_ELLIPSIS = re.compile(r"\s*(?:[\[(]\s*(?:…|\.{3,})\s*[\])]|…|\.{3,})\s*")
MAX_ELIDED = 1500  # most characters a model may leave out between two pieces of one citation


@dataclass(frozen=True)
class Grounding:
    """Where a citation was found: offsets into the source, a 0-100 score and how it was matched."""
    start: int
    end: int
    score: float
    how: str  # exact | normalized | speech | fuzzy | elided | none


class Spoken(NamedTuple):
    """A quotation as the dialogue rules cut it: its span, the spoken segments and the narrator's incises."""
    start: int
    end: int
    segments: tuple
    incises: tuple = ()


class NormalizedText:
    """A case- and punctuation-folded copy of text[lo:hi] that maps every character back to its offset.

    `skip` lists (start, end) spans left out (read as one space), e.g. the narrator's incises, so a
    citation whose author dropped "répondit Dantès" is still found, its span running over the incise.
    """

    def __init__(self, text: str, lo: int = 0, hi: int | None = None, skip=()):
        hi = len(text) if hi is None else hi
        chars: list[str] = []
        index: list[int] = []
        jumps = {a: b for a, b in sorted(skip) if lo <= a < b}
        pos = lo
        while pos < hi:
            if pos in jumps:
                if chars and chars[-1] != " ":
                    chars.append(" ")
                    index.append(pos)
                pos = max(pos + 1, jumps[pos])
                continue
            folded = fold_char(text[pos])
            pos += 1
            if folded == " ":
                if chars and chars[-1] != " ":
                    chars.append(" ")
                    index.append(pos - 1)
                continue
            for ch in folded:
                chars.append(ch)
                index.append(pos - 1)
        self.text = "".join(chars)
        self.index = index

    def span(self, nstart: int, nend: int) -> tuple[int, int]:
        """Offsets in the source of the normalised slice [nstart, nend)."""
        return self.index[nstart], self.index[nend - 1] + 1


def fold_for_matching(text: str) -> str:
    """Text folded the way NormalizedText folds a source span (quotes, dashes, punctuation, case)."""
    return NormalizedText(text).text.strip()


def _occurrences(haystack: str, needle: str, start: int = 0):
    """Where needle occurs in haystack, never inside a longer word ("oui" is not in "épanouissait")."""
    pos = haystack.find(needle, start)
    while pos >= 0:
        end = pos + len(needle)
        if not (pos > 0 and haystack[pos - 1].isalnum() and needle[0].isalnum()) and \
                not (end < len(haystack) and haystack[end].isalnum() and needle[-1].isalnum()):
            yield pos
        pos = haystack.find(needle, pos + 1)


def _extend(text: str, start: int, end: int, lo: int, hi: int, lead: bool, trail: bool) -> tuple[int, int]:
    """Widen a word-level match to the reply's opening dash/quote and closing punctuation."""
    if lead:
        s = start
        while s > lo and text[s - 1] in _OPENERS and text[s - 1] != "\n":
            s -= 1
        while s < start and text[s].isspace():
            s += 1
        start = s
    if trail:
        e = end
        while e < hi and text[e] in _CLOSERS and text[e] != "\n":
            e += 1
        while e > end and text[e - 1].isspace():
            e -= 1
        end = e
    return start, end


def _snap_to_words(text: str, start: int, end: int, lo: int, hi: int) -> tuple[int, int]:
    """Move fuzzy-match edges out to whole words so a slice never cuts a word in two."""
    while start > lo and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while end < hi and text[end - 1].isalnum() and text[end].isalnum():
        end += 1
    return start, end


def locate(citation: str, text: str, lo: int = 0, hi: int | None = None,
           taken: set[int] | frozenset = frozenset(), norm: NormalizedText | None = None,
           speech: NormalizedText | None = None) -> Grounding:
    """Find `citation` in text[lo:hi]: exact, then normalised, then fuzzy (rapidfuzz partial ratio).

    `taken` holds start offsets already given to other citations of the same chunk, so a reply
    repeated in the text ("--Oui.") is matched to its next occurrence rather than twice to the first.
    `speech` is the same span without the narrator's incises (NormalizedText's `skip`): a citation
    that left an incise out is found there (how "speech"), its span running over the incise.
    """
    hi = len(text) if hi is None else hi
    needle = citation.strip()
    if not needle:
        return Grounding(lo, lo, 0.0, "none")
    window = text[lo:hi]
    exact = [lo + p for p in _occurrences(window, needle)]
    for pos in exact:
        if pos not in taken:
            return Grounding(pos, pos + len(needle), 100.0, "exact")
    norm = norm or NormalizedText(text, lo, hi)
    nneedle = fold_for_matching(needle)
    if not nneedle:
        return Grounding(lo, lo, 0.0, "none")
    lead, trail = not needle[0].isalnum(), not needle[-1].isalnum()
    found = None
    for folded, how in ((norm, "normalized"), (speech, "speech")):
        for npos in _occurrences(folded.text, nneedle) if folded is not None else ():
            start, end = _extend(text, *folded.span(npos, npos + len(nneedle)), lo, hi, lead, trail)
            found = found or (start, end, how)
            if start not in taken:
                return Grounding(start, end, 100.0, how)
    if exact:  # every occurrence is taken: the model repeated itself; let dedupe merge it
        return Grounding(exact[0], exact[0] + len(needle), 100.0, "exact")
    if found:
        return Grounding(found[0], found[1], 100.0, found[2])
    best = _fuzzy(nneedle, text, norm, lo, hi, lead, trail)
    if speech is not None and speech.text != norm.text:
        other = _fuzzy(nneedle, text, speech, lo, hi, lead, trail)
        best = other if other.score > best.score else best
    elided = _elided(needle, text, lo, hi, taken, norm, speech)
    return elided if elided is not None and elided.score > best.score else best


def _elided(needle: str, text: str, lo: int, hi: int, taken, norm, speech) -> Grounding | None:
    """A citation the model shortened with "…" or "[...]" inside it: each piece found in order, close
    to the previous one; the span runs over the words left out, the score is the weakest piece's."""
    pieces = [p for p in _ELLIPSIS.split(needle) if fold_for_matching(p)]
    if len(pieces) < 2:
        return None
    found: list[Grounding] = []
    for piece in pieces:
        if not found:
            g = locate(piece, text, lo, hi, taken, norm, speech)
        else:
            end = min(hi, found[-1].end + MAX_ELIDED + 2 * len(piece))
            g = locate(piece, text, found[-1].end, end)
        if g.end <= g.start or g.score == 0:
            return None
        found.append(g)
    return Grounding(found[0].start, found[-1].end, min(g.score for g in found), "elided")


def _fuzzy(nneedle: str, text: str, norm: NormalizedText, lo: int, hi: int, lead: bool, trail: bool) -> Grounding:
    """The best partial-ratio window of a folded text, widened to whole words and the reply's marks."""
    if not norm.text:
        return Grounding(lo, lo, 0.0, "none")
    if len(nneedle) > len(norm.text):
        return Grounding(lo, hi, round(fuzz.ratio(nneedle, norm.text), 1), "fuzzy")
    al = fuzz.partial_ratio_alignment(nneedle, norm.text)
    if al.dest_end <= al.dest_start:
        return Grounding(lo, lo, round(al.score, 1), "fuzzy")
    # Whole words only: a window cut inside words is widened to them and scored as widened,
    # so "oui" is not found at 100 inside "épanouissait".
    nstart, nend, score = al.dest_start, al.dest_end, al.score
    while nstart > 0 and norm.text[nstart - 1] != " " and norm.text[nstart] != " ":
        nstart -= 1
    while nend < len(norm.text) and norm.text[nend - 1] != " " and norm.text[nend] != " ":
        nend += 1
    if (nstart, nend) != (al.dest_start, al.dest_end):
        score = min(score, fuzz.ratio(nneedle, norm.text[nstart:nend].strip()))
    start, end = norm.span(nstart, nend)
    start, end = _snap_to_words(text, start, end, lo, hi)
    start, end = _extend(text, start, end, lo, hi, lead, trail)
    return Grounding(start, end, round(score, 1), "fuzzy")


# -- the character's words only ---------------------------------------------------------------------
def spoken_parts(text: str, start: int, end: int, quotes) -> list[tuple[int, int]] | None:
    """The spoken segments inside text[start:end] of the rules' quotations (Spoken) overlapping it.

    Everything else in the span is narration (incises, "répondit Dantès", the story resuming after
    the reply). None when no quotation overlaps the span (a thought or a letter without marks).
    """
    inside = [q for q in quotes if q.start < end and start < q.end]
    if not inside:
        return None
    parts = []
    for q in inside:
        for a, b in q.segments:
            a, b = trim_span(text, max(a, start), min(b, end))
            if b > a and re.search(r"\w", text[a:b]):
                parts.append((a, b))
    return parts or None


def quotes_in_span(text: str, lo: int, hi: int) -> list[Spoken]:
    """The rules' quotations of text[lo:hi] (segments and incises), in offsets of `text`."""
    return [Spoken(q.start + lo, q.end + lo, tuple((a + lo, b + lo) for a, b in q.segments),
                   tuple((a + lo, b + lo) for a, b in q.incises)) for q in dialogue.detect_quotations(text[lo:hi])]


def incises_in_span(text: str, lo: int, hi: int, quotes: list[Spoken]) -> list[tuple[int, int]]:
    """Every incise of text[lo:hi]: those of its quotations and those of unmarked text ("…, pensa-t-il, …")."""
    found, pos = [], lo
    for q in [*quotes, Spoken(hi, hi, ())]:
        if q.start > pos:
            found += split_incises(text, pos, pos, q.start)[1]
        found += q.incises
        pos = max(pos, q.end, *(b for _, b in q.incises))
    return found


def spoken_segments(text: str, start: int, end: int, quotes: list[Spoken]) -> tuple[list, int]:
    """(segments of the character's words in text[start:end], where the narration after them ends).

    The segments of the rules' quotations overlapping the span; a span outside every quotation (a
    thought, a letter) is cut at incises only ("…, pensa-t-il, …").
    """
    parts = spoken_parts(text, start, end, quotes)
    incises = [i for q in quotes for i in q.incises]
    if parts is None:
        parts, incises = split_incises(text, start, start, end)
        parts = parts or [(start, end)]
    return parts, narration_end(parts, incises, end)


def narration_end(segments, incises, end: int) -> int:
    """Where the narration right after the last segment ends: the span's end, or an incise's end."""
    last = segments[-1][1]
    return max([end] + [b for a, b in incises if last <= a <= last + 2])


def join_spoken(text: str, segments, tail: int | None = None) -> str:
    """The segments joined by a space, each with its own marks ("--", «).

    A comma left before an incise that ended the sentence takes the incise's final mark back:
    "--Oui, monsieur, | répondit Dantès. |" gives "--Oui, monsieur." (tail: where the narration after
    the last segment ends).
    """
    parts = []
    for i, (a, b) in enumerate(segments):
        part = text[a:b].strip()
        nxt = segments[i + 1][0] if i + 1 < len(segments) else max(b, tail or b)
        final = re.search(r"[.!?…]+$", text[b:nxt].strip().rstrip("»”\"'’ \u00a0\u202f"))
        if final and part.endswith((",", ";")):
            part = part[:-1].rstrip() + final.group()
        parts.append(part)
    return " ".join(p for p in parts if p)


def _same_quote(a: dict, b: dict) -> bool:
    """Two grounded citations that overlap enough, or read nearly the same, are one quote."""
    overlap = min(a["end"], b["end"]) - max(a["start"], b["start"])
    if overlap <= 0:
        return False
    shorter = min(a["end"] - a["start"], b["end"] - b["start"]) or 1
    if overlap >= 0.5 * shorter:
        return True
    return fuzz.ratio(fold_for_matching(a["citation"]), fold_for_matching(b["citation"])) >= 90


def _better(a: dict, b: dict) -> dict:
    """The citation to keep of two duplicates: best grounding, then the longer, then the earlier chunk."""
    ka = (a["grounding"], a["end"] - a["start"], -a.get("chunk_index", 0))
    kb = (b["grounding"], b["end"] - b["start"], -b.get("chunk_index", 0))
    return a if ka >= kb else b


def dedupe(citations: list[dict]) -> tuple[list[dict], int]:
    """Merge citations of the same book found twice (chunk overlap): returns (kept, merged count).

    Rows need book, start, end, grounding, citation and chunk; the kept row lists the other chunks
    that found it under `also_in`. Output is sorted by (book order of first appearance, start, end).
    """
    book_order: dict[str, int] = {}
    for row in citations:
        book_order.setdefault(row["book"], len(book_order))
    rows = sorted(citations, key=lambda r: (book_order[r["book"]], r["start"], r["end"], r.get("chunk_index", 0)))
    kept: list[dict] = []
    merged = 0
    for row in rows:
        if kept and kept[-1]["book"] == row["book"] and _same_quote(kept[-1], row):
            winner, loser = (kept[-1], row) if _better(kept[-1], row) is kept[-1] else (row, kept[-1])
            also = (set(winner.get("also_in", [])) | set(loser.get("also_in", [])) | {loser["chunk"]})
            also.discard(winner["chunk"])
            kept[-1] = {**winner, "also_in": sorted(also)}
            merged += 1
        else:
            kept.append(row)
    return kept, merged
