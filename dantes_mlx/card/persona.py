"""The persona drawn from a card: one call, a bounded one-paragraph system prompt on one line."""

from __future__ import annotations

import json
import re

from dantes_mlx.card.merge import card_json
from dantes_mlx.card.schema import TRAIT_LISTS, persona_schema, read_json_object, set_traits, traits_at
from dantes_mlx.generate.pairs import Task, make_task
from dantes_mlx.llm.prompt import Prompt

_SENTENCE_END = re.compile(r"[.!?…»](?=\s|$)")


def traits_only(card: dict) -> dict:
    """The card without its evidence: what the persona is written from."""
    out = json.loads(json.dumps(card))
    for path in TRAIT_LISTS:
        set_traits(out, path, [t["trait"] for t in traits_at(card, path)])
    return out


def persona_task(prompt: Prompt, card: dict, values: dict, model_id: str, sampling: dict) -> Task:
    """The call that writes the persona from the card's traits."""
    messages = prompt.messages(**values, card=card_json(traits_only(card)))
    return make_task("card-persona", prompt.version, model_id, messages, persona_schema(), sampling)


def read_persona(text: str, max_chars: int) -> tuple[str, str | None]:
    """The persona of a reply, on one line and at most `max_chars` long (cut after its last whole sentence),
    and what was wrong: None, "cut" when it had to be shortened, or why there is none."""
    data, error = read_json_object(text)
    value = data.get("persona") if data else None
    if not isinstance(value, str) or not value.strip():
        return "", error or "no_persona"
    # One line without control characters and no \"\"\" : what a Modelfile's SYSTEM can hold.
    persona = " ".join(value.replace('"""', '"').split())
    return bound(persona, max_chars)


def bound(persona: str, max_chars: int) -> tuple[str, str | None]:
    """`persona` cut to `max_chars` after its last whole sentence (else its last word, with "…")."""
    if len(persona) <= max_chars:
        return persona, None
    head = persona[:max_chars + 1]
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    if ends and ends[-1] >= max_chars // 3:
        return head[:ends[-1]].strip(), "cut"
    return head[:max_chars - 1].rsplit(" ", 1)[0].rstrip(",;: ") + "…", "cut"
