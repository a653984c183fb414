"""One Prompt type and its loader: the built-in `<kind>_<language>_v1.txt`, or a user file versioned by its hash."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from dantes_mlx.errors import ConfigError, InputError

PROMPTS_DIR = Path(__file__).parent / "prompts"
# The placeholders of each built-in prompt that carry the item's data: they come last, in the user message.
DATA_FIELDS = {"extract": ("text",), "hybrid": ("text",), "generate": ("contexte", "citation"), "facts": ("subject", "fact"),
               "conversation": ("contexte", "citations"), "ooc": ("topics",),
               "judge_rubric": ("question", "answer"), "judge_pairwise": ("question", "answer_a", "answer_b")}
_PLACEHOLDER = re.compile(r"{{(\w+)}}")


def read_prompt(kind: str, language: str, prompt_file: str | Path = "") -> tuple[str, str, Path]:
    """(text, version, path): a prompt file's version is `<stem>-<sha12>`, so editing it invalidates caches."""
    if prompt_file:
        path = Path(prompt_file)
        if not path.is_file():
            raise ConfigError("prompt file not found", path=path,
                              fix=f"check --prompt-file (or {kind}.prompt_file in dantes.yaml)")
        text = path.read_text(encoding="utf-8")
        return text, f"{path.stem}-{hashlib.sha256(text.encode()).hexdigest()[:12]}", path
    path = PROMPTS_DIR / f"{kind}_{language}_v1.txt"
    if not path.is_file():
        built_in = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob(f"{kind}_*.txt")))
        raise ConfigError(f"no built-in {kind} prompt for language '{language}'",
                          fix=f"write one and pass --prompt-file FILE (built-in: {built_in})")
    return path.read_text(encoding="utf-8"), path.stem, path


@dataclass(frozen=True)
class Prompt:
    """A versioned prompt: fixed instructions ({{name}}, {{persona}}...) first, the item's data fields last."""
    text: str
    version: str
    source: str
    data_fields: tuple[str, ...] = ("contexte", "citation")

    def placeholders(self) -> set[str]:
        return set(_PLACEHOLDER.findall(self.text))

    def messages(self, **values) -> list[dict]:
        """[system: the fixed instructions, user: the data]: llama.cpp then re-evaluates only the data."""
        unknown = sorted(self.placeholders() - set(values))
        if unknown:
            raise ConfigError(f"unknown placeholder(s) {', '.join('{{%s}}' % u for u in unknown)} in the prompt",
                              path=self.source, fix=f"use only {', '.join('{{%s}}' % k for k in sorted(values))}")
        first = min(self.text.index("{{%s}}" % f) for f in self.data_fields)
        cut = self.text.rfind("\n", 0, first) + 1  # the data section starts on the line of its first field
        fill = lambda part: _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), part).strip()
        return [{"role": "system", "content": fill(self.text[:cut])},
                {"role": "user", "content": fill(self.text[cut:])}]


def load_prompt(kind: str, language: str, prompt_file: str | Path = "",
                data_fields: tuple[str, ...] | None = None) -> Prompt:
    """The built-in prompt `<kind>_<language>_v1`, or a file overriding it (versioned by its hash); its data
    fields are the kind's (DATA_FIELDS) unless given."""
    fields = data_fields or DATA_FIELDS[kind]
    text, version, path = read_prompt(kind, language, prompt_file)
    missing = [f for f in fields if "{{%s}}" % f not in text]
    if missing:
        raise InputError(f"the prompt has no {', '.join('{{%s}}' % f for f in missing)} placeholder", path=path,
                         fix=f"end the prompt with the data: {', '.join('{{%s}}' % f for f in fields)}")
    return Prompt(text, version, str(path), fields)
