"""The map step: the citations cut into blocks that fit the LLM's context, one schema-forced call per block."""

from __future__ import annotations

import math
from typing import Callable

from dantes_mlx.card.evidence import Citation
from dantes_mlx.card.schema import card_schema
from dantes_mlx.errors import ConfigError
from dantes_mlx.extract.chunks import TEMPLATE_MARGIN
from dantes_mlx.generate.pairs import Task, make_task
from dantes_mlx.llm.prompt import Prompt

MIN_ROOM = 256  # fewer tokens left for the data than this: the context is too small for the stage


def citation_line(citation: Citation) -> str:
    """How the LLM reads one citation: its short id, its context in brackets, its words."""
    context = f"({citation.contexte}) " if citation.contexte else ""
    return f"[{citation.key}] {context}{citation.text}"


def data_budget(client, prompt: Prompt, values: dict, max_tokens: int, count: Callable[[str], int],
                data_field: str) -> int:
    """Most tokens of data (citations or summaries) one call may carry: what the client's context (`n_ctx`) holds
    after the instructions and `max_tokens` of reply; 0 (no limit) when the context is unknown."""
    n_ctx = int(getattr(client, "n_ctx", 0) or 0)
    if not n_ctx:
        return 0
    instructions = sum(count(m["content"]) for m in prompt.messages(**values, **{data_field: ""}))
    room = n_ctx - instructions - TEMPLATE_MARGIN - max_tokens
    if room < MIN_ROOM:
        raise ConfigError(f"llm.n_ctx={n_ctx} leaves {room} tokens for the {data_field} after about {instructions} "
                          f"tokens of instructions and {max_tokens} of reply", path="dantes.yaml [llm]",
                          fix="raise llm.n_ctx (e.g. 8192) or lower llm.max_tokens")
    return room


def fit_line(line: str, budget: int, count: Callable[[str], int]) -> str:
    """A line cut (with "…") to at most `budget` tokens; unchanged when it fits or there is no budget."""
    while budget and count(line) > budget:
        line = line[:max(1, int(len(line) * budget / count(line) * 0.9))].rstrip() + "…"
    return line


def even_groups(sizes: list[int], most: int, budget: int) -> list[list[int]]:
    """Consecutive groups of indices: ceil(n / most) groups as even as possible, each ending before `budget`
    tokens (0: no limit) of items; an item is never split. Blocks of citations, and reduce groups."""
    if not sizes:
        return []
    base, longer = divmod(len(sizes), math.ceil(len(sizes) / most))  # the first `longer` groups take one more
    groups, current, used = [], [], 0
    for index, size in enumerate(sizes):
        if current and (len(current) >= base + (len(groups) < longer) or (budget and used + size > budget)):
            groups.append(current)
            current, used = [], 0
        current.append(index)
        used += size
    return groups + [current]


def map_task(prompt: Prompt, block: list[Citation], lines: list[str], values: dict, model_id: str,
             sampling: dict, max_traits: int, max_chars: int) -> Task:
    """The call that summarises one block: its evidence may only name the block's citations."""
    messages = prompt.messages(**values, citations="\n".join(lines))
    schema = card_schema([c.key for c in block], max_traits, max_chars)
    return make_task("card-map", prompt.version, model_id, messages, schema, sampling)
