"""Canned LLM behaviour for the card tests: a fake that answers map, reduce and persona calls from what it is sent."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dantes_mlx.card.schema import TRAIT_LISTS, empty_card, set_traits, traits_at

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REFERENCE = SHARED / "reference" / "dantes_citations.jsonl"


def step_of(messages: list[dict]) -> str:
    """Which call this is, from the data it carries: citation lines, numbered summaries, or a card."""
    user = messages[-1]["content"]
    return "map" if user.startswith("[c") else "reduce" if user.startswith("#1 ") else "persona"


def cited(messages: list[dict]) -> list[tuple[str, str]]:
    """(id, words) of the citation lines a map call carries."""
    out = []
    for line in messages[-1]["content"].splitlines():
        match = re.match(r"\[(c\d+)\] (?:\([^)]*\) )?(.*)", line)
        if match:
            out.append((match[1], match[2]))
    return out


def summaries(messages: list[dict]) -> list[dict]:
    """The cards a reduce call carries."""
    return [json.loads(part.split(" ", 1)[1]) for part in messages[-1]["content"].split("\n\n")]


def map_reply(messages: list[dict]) -> dict:
    """One trait per list of the first two headings and the register, each quoting the first words of a citation."""
    card, lines = empty_card(), cited(messages)
    card["summary"] = f"Résumé de {len(lines)} citations."
    for n, path in enumerate([("identity",), ("psychology",), ("verbal_style", "register")]):
        key, words = lines[n % len(lines)]
        quote = " ".join(words.split()[:3])
        set_traits(card, path, [{"trait": f"trait {path[-1]} de {key}", "evidence": [{"id": key, "quote": quote}]}])
    return card


def reduce_reply(messages: list[dict]) -> dict:
    """The traits of the summaries list by list (the first two), evidence unchanged."""
    parts, card = summaries(messages), empty_card()
    card["summary"] = f"Fusion de {len(parts)} fiches."
    for path in TRAIT_LISTS:
        set_traits(card, path, [t for p in parts for t in traits_at(p, path)][:2])
    return card


def card_reply(messages: list[dict]) -> dict:
    """What a good model would send back to any card call."""
    step = step_of(messages)
    if step == "map":
        return map_reply(messages)
    if step == "reduce":
        return reduce_reply(messages)
    name = re.search(r"comme (.+?), personnage|as (.+?), a character", messages[0]["content"])
    return {"persona": f"Tu es {name[1] or name[2]}. Tu parles peu, et bien."}


def read_json(path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path

