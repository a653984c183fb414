"""What the extraction LLM reads: the chunk pre-filter, and focus windows around the character inside a chunk."""

from __future__ import annotations

import bisect

from dantes_mlx.fr import dialogue
from dantes_mlx.fr.narrator import first_person_offsets, narration_spans

FOCUS_GAP = "\n\n[…]\n\n"  # stands for the paragraphs left out between two windows


def prefilter_keeps(text: str, name: str, aliases: list[str], narrator: bool = False) -> bool:
    """Whether the rules see the character in a chunk's text: a mention, a quote attributed to them, or,
    for a first-person narrator, narration that says "je"."""
    if dialogue.mentions_character(text, name, aliases):
        return True
    quotes = dialogue.find_quotations(text)
    return bool(dialogue.character_quotes(text, name, aliases, narrator, quotes)
                or narrator and first_person_offsets(text, narration_spans(text, quotes)))


def paragraph_offsets(text: str) -> list[tuple[int, int]]:
    """(start, end) of every non-blank line: the paragraphs chunks are counted in."""
    spans, pos = [], 0
    for line in text.split("\n"):
        content = line.rstrip("\r")
        if content.strip():
            spans.append((pos, pos + len(content)))
        pos += len(line) + 1
    return spans


def focus_paragraphs(text: str, name: str, aliases: list[str], narrator: bool = False) -> list[bool]:
    """For each paragraph of text, whether the rules see the character there.

    Seen: the paragraph names them (name or alias), holds a quotation attributed to them (for a narrator,
    one the narration's "je" speaks, or narration that says "je"), or belongs to an exchange involving
    them: a run of consecutive paragraphs holding quotations where one paragraph is seen, or right after
    a seen paragraph (the narration that opens the exchange).
    Unattributed replies in a long exchange ("--Oui.", "--Et vous?") are kept that way.
    """
    paras = paragraph_offsets(text)
    starts = [a for a, _ in paras]
    seen = [dialogue.mentions_character(text[a:b], name, aliases) for a, b in paras]
    speaking = [False] * len(paras)
    quotes = dialogue.find_quotations(text)
    mine = {id(q) for q in dialogue.character_quotes(text, name, aliases, narrator, quotes)}
    for quote in quotes:
        i = bisect.bisect_right(starts, quote.start) - 1
        if i < 0:
            continue
        speaking[i] = True
        if id(quote) in mine:
            seen[i] = True
    for offset in first_person_offsets(text, narration_spans(text, quotes)) if narrator else ():
        seen[max(0, bisect.bisect_right(starts, offset) - 1)] = True
    i = 0
    while i < len(paras):
        if not speaking[i]:
            i += 1
            continue
        j = i
        while j < len(paras) and speaking[j]:
            j += 1
        if any(seen[i:j]) or (i > 0 and seen[i - 1]):
            seen[i:j] = [True] * (j - i)
        i = j
    return seen


def focus_windows(text: str, name: str, aliases: list[str], window: int,
                  narrator: bool = False) -> list[tuple[int, int]]:
    """(start, end) offsets into text of the runs of paragraphs within `window` of a seen paragraph."""
    return window_runs(paragraph_offsets(text), focus_paragraphs(text, name, aliases, narrator), window)


def window_runs(paras: list[tuple[int, int]], seen: list[bool], window: int) -> list[tuple[int, int]]:
    """(start, end) of each run of consecutive paragraphs within `window` of a seen one."""
    keep = [False] * len(paras)
    for i, hit in enumerate(seen):
        if hit:
            for j in range(max(0, i - window), min(len(paras), i + window + 1)):
                keep[j] = True
    runs: list[tuple[int, int]] = []
    for i, kept in enumerate(keep):
        if kept and runs and keep[i - 1]:
            runs[-1] = (runs[-1][0], paras[i][1])
        elif kept:
            runs.append(paras[i])
    return runs


def focus_text(text: str, name: str, aliases: list[str], window: int, narrator: bool = False) -> str:
    """The windows of text joined by FOCUS_GAP; "" when they cover every paragraph (send the whole text)."""
    runs = focus_windows(text, name, aliases, window, narrator)
    paras = paragraph_offsets(text)
    if not runs or (len(runs) == 1 and runs[0] == (paras[0][0], paras[-1][1])):
        return ""
    return FOCUS_GAP.join(text[a:b] for a, b in runs)
