"""Versioned prompt files: the built-in `<kind>_<language>_v1.txt`, or a user file versioned by its hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

from dantes_mlx.errors import ConfigError

PROMPTS_DIR = Path(__file__).parent / "prompts"


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
