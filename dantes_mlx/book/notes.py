"""Footnotes and transcriber's notes of a Gutenberg text: moved out of the paragraphs, their anchors removed."""

from __future__ import annotations

import re

LABEL = r"(?:\d{1,3}|[A-Za-z]|\*{1,3})"
# "[Footnote 1: ...", "[Note A: ...", "[Note du transcripteur : ...", "[Transcriber's Note: ..."
BLOCK_RE = re.compile(rf"^\[(?:Footnote|Note|NOTE)\s*(?P<label>{LABEL})?\s*:"
                      r"|^\[(?:Note (?:du|de la|des) transcri|Note de l['’](?:auteur|éditeur)|Transcriber['’]s note)",
                      re.I)
LABELLED_RE = re.compile(rf"^\[(?P<label>{LABEL})\]\s*\S")  # "[1] Voir plus haut..." after the text it annotates
MAX_BLOCK_PARAGRAPHS = 10  # a bracketed note not closed within this many paragraphs is left as text


def anchor_re(label: str) -> re.Pattern:
    """An inline anchor `[label]` inside a paragraph, with the space before it ("mot [1]." -> "mot.")."""
    return re.compile(rf"[ \t]?\[{re.escape(label)}\]")


def _block_end(paragraphs: list[str], i: int) -> int | None:
    """Index of the paragraph that closes the bracketed note opened at paragraph i, or None."""
    depth = 0
    for j in range(i, min(len(paragraphs), i + MAX_BLOCK_PARAGRAPHS)):
        for char in paragraphs[j]:
            depth += (char == "[") - (char == "]")
        if depth <= 0:
            return j if paragraphs[j].rstrip().endswith("]") and depth == 0 else None
    return None


def _remove_anchor(paragraphs: list[str], before: int, label: str, moved: set[int]) -> bool:
    """Remove the nearest anchor `[label]` in the paragraphs before index `before`; whether one was found."""
    pattern = anchor_re(label)
    for k in range(before - 1, -1, -1):
        if k in moved:
            continue
        matches = [m for m in pattern.finditer(paragraphs[k]) if m.start() > 0 or not paragraphs[k].startswith("[")]
        if matches:
            m = matches[-1]
            paragraphs[k] = paragraphs[k][:m.start()] + paragraphs[k][m.end():]
            return True
    return False


def move_notes(paragraphs: list[str], source_lines: list[int]) -> tuple[list[str], list[int], list[dict]]:
    """(paragraphs, their source lines, notes) with notes taken out of the text.

    A note is a bracketed block opened by "[Footnote 1:", "[Note 1:", "[Note du transcripteur" ... and closed
    by "]" within a few paragraphs, or a paragraph "[1] text" whose anchor "[1]" occurs in an earlier
    paragraph. The anchor nearest before a labelled note is removed from the text. Anything else that
    looks like a note (an unclosed bracket, "[2] ..." with no anchor) stays text: a book's own words
    are never dropped on a guess. Each note keeps its label, text and first source line.
    """
    paragraphs = list(paragraphs)
    moved: set[int] = set()
    notes: list[dict] = []
    i = 0
    while i < len(paragraphs):
        note = _note_at(paragraphs, i)
        if note is None:
            i += 1
            continue
        last, label, needs_anchor = note
        anchored = bool(label) and _remove_anchor(paragraphs, i, label, moved)
        if needs_anchor and not anchored:
            i += 1
            continue
        notes.append({"label": label, "text": "\n".join(paragraphs[i:last + 1]), "line": source_lines[i],
                      "anchor_removed": anchored})
        moved.update(range(i, last + 1))
        i = last + 1
    kept = [k for k in range(len(paragraphs)) if k not in moved]
    return [paragraphs[k] for k in kept], [source_lines[k] for k in kept], notes


def _note_at(paragraphs: list[str], i: int) -> tuple[int, str | None, bool] | None:
    """(last paragraph, label, whether it counts only with an anchor) of a note starting at paragraph i."""
    para = paragraphs[i]
    if para[:1] != "[":
        return None
    block = BLOCK_RE.match(para)
    end = _block_end(paragraphs, i) if block else None
    if end is not None:
        return end, block.groupdict().get("label"), False
    labelled = LABELLED_RE.match(para)
    return (i, labelled.group("label"), True) if labelled else None
