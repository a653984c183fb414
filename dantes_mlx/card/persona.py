"""The persona drawn from a card: one call, a bounded one-paragraph system prompt; and where later stages find it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dantes_mlx.card.merge import card_json
from dantes_mlx.card.schema import TRAIT_LISTS, persona_schema, read_json_object, set_traits, traits_at
from dantes_mlx.commands.project import PERSONAS
from dantes_mlx.config import DANTES_PERSONA, CardConfig, CharacterConfig, ProjectConfig, section
from dantes_mlx.errors import InputError
from dantes_mlx.generate import Prompt, Task, make_task

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


def card_dir(project: ProjectConfig, cfg: CardConfig) -> Path:
    """Where the card is written: card.output_dir, else <data_dir>/card."""
    return Path(cfg.output_dir) if cfg.output_dir else Path(project.data_dir) / "card"


def is_default_persona(character: CharacterConfig) -> bool:
    """Whether character.persona is one dantes-mlx wrote (its default, or `init`'s for the name), not the user's."""
    written = {DANTES_PERSONA, *(template.format(name=character.name) for template in PERSONAS.values())}
    return " ".join(character.persona.split()) in {" ".join(p.split()) for p in written}


def persona_for(config: dict) -> str | None:
    """The card's persona for a loaded dantes.yaml, when the user wrote no persona of their own and the card is of
    this character; else None (the stage then keeps character.persona)."""
    character = section(CharacterConfig, config)
    if not is_default_persona(character):
        return None
    path = card_dir(section(ProjectConfig, config), section(CardConfig, config)) / "card.json"
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not a card ({exc})", path=path,
                         fix="run `dantes-mlx card` again to rewrite it, or delete it") from None
    if not isinstance(card, dict) or card.get("character") != character.name:
        return None
    persona = card.get("persona")
    return persona if isinstance(persona, str) and persona.strip() else None
