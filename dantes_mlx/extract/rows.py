"""Citation rows: one stored reply grounded in its chunk, with provenance; the run's rejects settled once."""

from __future__ import annotations

from dataclasses import dataclass

from dantes_mlx.extract.chunks import Book, Chunk
from dantes_mlx.extract.grounding import (NormalizedText, fold_for_matching, incises_in_span, join_spoken, locate,
                                          quotes_in_span, spoken_segments)
from dantes_mlx.extract import checks
from dantes_mlx.extract.checks import parse_reply
from dantes_mlx.extract.prompt import normalize_kind

# Row keys in the order they are written, so reruns give byte-identical files.
ROW_KEYS = ("id", "book", "chapter", "start", "end", "segments", "chunk", "method", "model", "prompt_version", "kind",
            "grounding", "grounding_method", "character", "contexte", "citation", "model_citation", "also_in",
            "disputed_by_rules")


@dataclass
class Source:
    """Who produced the replies: method, model and prompt version (the provenance of every row)."""
    method: str
    model: str
    prompt_version: str
    character: str


def ground_reply(book: Book, chunk: Chunk, reply: str, source: Source, min_grounding: float,
                 finish_reason: str = "", names: set | None = None) -> tuple[list[dict], list[dict]]:
    """Rows grounded in the chunk's span and rejects (with reason and score) for one stored reply.

    A reply cut by max_tokens is rejected as `truncated` (its complete citations are still kept). A citation
    repeated in the reply counts once; a placeholder, or with `names` a bare name, is rejected (checks.py).
    The row's `citation` is the character's words only: the narrator's incises inside the grounded
    span are cut out, whether the model copied them (as the prompt asks) or left them out.
    """
    items, error = parse_reply(reply)
    if error and finish_reason == "length":
        error = "truncated"
    rejects = [] if error is None else [{"reason": error, "raw": reply[:2000]}]
    items, repeated = checks.unique_items(items)
    rejects += repeated
    rows, taken, norm, speech, quotes = [], set(), None, None, []
    for item in items:
        cited = item.get("citation")
        if not isinstance(cited, str) or not cited.strip():
            rejects.append({"reason": "empty_citation", "item": item})
            continue
        problem = checks.item_problem(cited, names or set())
        if problem:
            rejects.append({"reason": problem, "citation": cited})
            continue
        if norm is None:
            quotes = quotes_in_span(book.text, chunk.start, chunk.end)
            norm = NormalizedText(book.text, chunk.start, chunk.end)
            incises = incises_in_span(book.text, chunk.start, chunk.end, quotes)
            speech = NormalizedText(book.text, chunk.start, chunk.end, incises) if incises else None
        g = locate(cited, book.text, chunk.start, chunk.end, taken, norm, speech)
        if g.score < min_grounding:
            rejects.append({"reason": "low_grounding", "score": g.score, "citation": cited,
                            "best_match": book.text[g.start:g.end][:1000], "start": g.start, "end": g.end})
            continue
        taken.add(g.start)
        rows.append(make_row(book, chunk, g.start, g.end, source, normalize_kind(item.get("kind")),
                             g.score, g.how, str(item.get("contexte") or ""), model_text=cited,
                             spoken=spoken_segments(book.text, g.start, g.end, quotes)))
    for r in rejects:
        r.update(book=book.id, chunk=chunk.id)
    return rows, rejects


def make_row(book: Book, chunk: Chunk, start: int, end: int, source: Source, kind: str, score: float,
             how: str, contexte: str, model_text: str | None = None, spoken: tuple | None = None) -> dict:
    """One citation with its provenance; `id` is stable.

    `start`/`end` are the whole span in the source; `segments` the [start, end] offsets of the
    character's words inside it and `citation` those words joined (see grounding.join_spoken).
    """
    segments, tail = spoken or ([(start, end)], end)
    citation = join_spoken(book.text, segments, tail)
    row = {"id": f"{book.id}:{start}-{end}", "book": book.id, "chapter": book.chapter_at(start), "start": start,
           "end": end, "segments": [list(s) for s in segments], "chunk": chunk.id, "chunk_index": chunk.index,
           "method": source.method, "model": source.model, "prompt_version": source.prompt_version, "kind": kind,
           "grounding": score, "grounding_method": how, "character": source.character, "contexte": contexte,
           "citation": citation}
    if model_text is not None and model_text.strip() != citation:
        row["model_citation"] = model_text.strip()
    return row


def output_row(row: dict) -> dict:
    """A row in the written key order, internal fields dropped, empty `also_in` omitted."""
    return {k: row[k] for k in ROW_KEYS if k in row and not (k == "also_in" and not row[k])}


def settle_rejects(rejects: list[dict], rows: list[dict]) -> list[dict]:
    """Ungrounded citations as the run's verdict, not each chunk's: one seen in two overlapping chunks is one
    reject (listing both chunks), and one that another chunk grounded is no reject at all (its words lie
    outside the chunk that quoted them, not outside the book)."""
    grounded = {(r["book"], fold_for_matching(text)) for r in rows
                for text in (r["citation"], r.get("model_citation")) if text}
    first: dict[tuple, dict] = {}
    settled = []
    for reject in rejects:
        if reject["reason"] == "low_grounding":
            key = (reject["book"], fold_for_matching(reject["citation"]))
            if key in grounded:
                continue
            if key in first:
                first[key].setdefault("also_in", []).append(reject["chunk"])
                continue
            first[key] = reject
        settled.append(reject)
    return settled


def context_before(text: str, start: int, limit: int = 200) -> str:
    """The narration just before a quote (its previous paragraph, cut to `limit` characters)."""
    head = text[max(0, start - 2000):start].rstrip()
    paragraph = head.rsplit("\n", 1)[-1].strip() if head else ""
    return paragraph if len(paragraph) <= limit else "…" + paragraph[-limit:].lstrip()
