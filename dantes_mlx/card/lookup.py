"""Which persona prepare, chat, eval and export use: the user's character.persona, else the card's, else the default."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dantes_mlx.config import DANTES_PERSONA, PERSONAS, CharacterConfig, section
from dantes_mlx.errors import InputError
from dantes_mlx.workspace import Workspace


@dataclass(frozen=True)
class Persona:
    """A system prompt and where it came from (what the stages log)."""
    text: str
    source: str

    def note(self) -> str:
        return f"persona: {self.source}"


def is_default_persona(character: CharacterConfig) -> bool:
    """Whether character.persona is one dantes-mlx wrote (its default, or `init`'s for the name), not the user's."""
    written = {DANTES_PERSONA, *(template.format(name=character.name) for template in PERSONAS.values())}
    return " ".join(character.persona.split()) in {" ".join(p.split()) for p in written}


def card_persona(path: Path, character: CharacterConfig) -> str | None:
    """The persona of the card.json at `path` when it is a card of this character and holds one; else None."""
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
    return persona.strip() if isinstance(persona, str) and persona.strip() else None


def resolve_persona(config: dict, workspace: Workspace | None = None) -> Persona:
    """The persona for a loaded dantes.yaml: character.persona when the user wrote it, else the persona of the
    workspace's card (when it is of character.name), else character.persona (the default)."""
    character = section(CharacterConfig, config)
    if not is_default_persona(character):
        return Persona(character.persona, "character.persona of the settings file")
    card = (workspace or Workspace.from_config(config)).card_file
    persona = card_persona(card, character)
    if persona is not None:
        return Persona(persona, f"the character card ({card}), character.persona being a default")
    return Persona(character.persona, f"character.persona (a default; no card of {character.name} in {card.parent}: "
                                      "`dantes-mlx card` writes one)")

