"""The extraction prompt: the character's names and narrator note in the fixed instructions, the chunk last,
replies forced to a schema and read back tolerantly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dantes_mlx.llm.prompt import Prompt, load_prompt

KINDS = ("parole", "pensée", "écrit")
CITATION_SCHEMA = {
    "type": "object",
    "properties": {"citations": {"type": "array", "items": {
        "type": "object",
        "properties": {"contexte": {"type": "string"}, "citation": {"type": "string"},
                       "kind": {"type": "string", "enum": list(KINDS)}},
        "required": ["contexte", "citation", "kind"]}}},
    "required": ["citations"],
}
# Told to the LLM when the character is the first-person narrator (character.narrator).
NARRATOR_NOTE = ("{{name}} est le narrateur : le récit parle de lui à la première personne. Ses paroles et ses "
                 "pensées sont celles que la narration donne à « je » (« dis-je », « répondis-je », « je lui dis : », "
                 "« je me disais : »). Un « je » dans les paroles d'un autre personnage désigne ce personnage, "
                 "pas le narrateur.")


@dataclass(frozen=True)
class CitationPrompt:
    """The extraction Prompt filled for one character: names and narrator note in the fixed instructions."""
    prompt: Prompt

    @property
    def version(self) -> str:
        return self.prompt.version

    def messages(self, name: str, aliases: list[str], text: str, narrator: bool = False) -> list[dict]:
        """[system: fixed instructions, user: the chunk]: llama.cpp then re-evaluates only the chunk. For a
        first-person narrator, NARRATOR_NOTE at {{narrator}} (or after the instructions)."""
        note = NARRATOR_NOTE.replace("{{name}}", name) if narrator else ""
        names = ", ".join(f"« {a} »" for a in aliases) if aliases else "(aucun autre nom)"
        messages = self.prompt.messages(name=name, aliases=names, narrator=note, text=text)
        if note and "narrator" not in self.prompt.placeholders():
            messages[0]["content"] += "\n\n" + note
        return messages

    def instructions(self, name: str, aliases: list[str], narrator: bool = False) -> str:
        """The fixed part, the same for every chunk of a character."""
        return self.messages(name, aliases, "", narrator)[0]["content"]


def citation_prompt(prompt_file: str | Path = "", language: str = "fr", kind: str = "extract") -> CitationPrompt:
    """The built-in extraction prompt for `language` (`kind` hybrid: the hybrid method's questions), or a file
    whose content hash becomes part of the version."""
    return CitationPrompt(load_prompt(kind, language, prompt_file))


def normalize_kind(kind) -> str:
    """parole, pensée or écrit; anything unknown counts as speech."""
    folded = str(kind or "").strip().lower().replace("é", "e")
    return {"pensee": "pensée", "ecrit": "écrit"}.get(folded, "parole")
