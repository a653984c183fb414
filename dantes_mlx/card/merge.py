"""The reduce step: block summaries merged a few at a time, level after level, until one card is left."""

from __future__ import annotations

import json

from dantes_mlx.card.blocks import even_groups
from dantes_mlx.card.evidence import evidence_ids
from dantes_mlx.card.schema import card_schema
from dantes_mlx.errors import ConfigError
from dantes_mlx.generate.pairs import Task, make_task
from dantes_mlx.llm.prompt import Prompt


def card_json(card: dict) -> str:
    """A card as one compact JSON line (what a reduce call reads)."""
    return json.dumps(card, ensure_ascii=False, separators=(",", ":"))


def numbered(cards: list[dict]) -> str:
    """The summaries of one reduce call, numbered."""
    return "\n\n".join(f"#{i} {card_json(card)}" for i, card in enumerate(cards, 1))


def plan_groups(sizes: list[int], fan_in: int, budget: int) -> list[list[int]]:
    """The groups of summaries of one level (see blocks.even_groups); a group of one is carried to the next level
    without a call. ConfigError when no two summaries fit one call."""
    groups = even_groups(sizes, fan_in, budget)
    if len(sizes) > 1 and len(groups) == len(sizes):
        raise ConfigError(f"no two block summaries fit one reduce call ({budget} tokens of room; the smallest "
                          f"summaries take {sorted(sizes)[:2]})", path="dantes.yaml [llm]",
                          fix="raise llm.n_ctx, or lower card.max_traits / card.max_trait_chars")
    return groups


def reduce_task(prompt: Prompt, cards: list[dict], values: dict, model_id: str, sampling: dict,
                max_traits: int, max_chars: int) -> Task:
    """The call that merges a group of summaries: its evidence may only name what they name."""
    ids = sorted(set().union(*(evidence_ids(c) for c in cards)), key=lambda k: int(k[1:]))
    messages = prompt.messages(**values, summaries=numbered(cards))
    schema = card_schema(ids, max_traits, max_chars)
    return make_task("card-reduce", prompt.version, model_id, messages, schema, sampling)
