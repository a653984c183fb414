"""A general instruction dataset mixed into train only (RoleLLM-style), at a ratio of the persona rows, seeded."""

from __future__ import annotations

import random
from pathlib import Path

from dantes_mlx.dataset.formats import Example, conversation_problems, read_examples
from dantes_mlx.errors import ConfigError, InputError

MIX_FORMATS = {"chat": "chat {messages: [{role, content}]}", "completions": "prompt/completion {prompt, completion}"}
MIX_FIX = ('one JSON object per line: {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", '
           '"content": "..."}]} or {"prompt": "...", "completion": "..."}')


def check_mix(path: str, ratio: float) -> None:
    """The --mix settings checked before any work: a ratio of 0 or more, and a file when the ratio asks for one."""
    if ratio < 0:
        raise ConfigError(f"mix_ratio must be 0 or more, got {ratio}", path="prepare.mix_ratio (--mix-ratio)",
                          fix="give e.g. --mix-ratio 0.2 (one general row for five persona rows)")
    if ratio > 0 and not path:
        raise ConfigError("mix_ratio is set but no mix file is given", path="prepare.mix (--mix)",
                          fix="pass --mix FILE.jsonl, or set mix_ratio: 0")
    if path and not Path(path).is_file():
        raise InputError("mix file not found", path=path, fix="check the --mix path (prepare.mix)")


def read_mix(path: str | Path) -> list[Example]:
    """Every row of the mix file, each a valid conversation in chat or prompt/completion form; any other row is an
    error naming file:line."""
    examples, kind, _ = read_examples(path)
    if kind not in MIX_FORMATS:
        raise InputError(f"--mix rows must be {' or '.join(MIX_FORMATS.values())}, this file holds "
                         f"{kind} rows", path=path, line=examples[0].line, fix=MIX_FIX)
    for ex in examples:
        problems = conversation_problems(ex.messages)
        if problems:
            raise InputError(f"bad --mix row: {'; '.join(problems)}", path=path, line=ex.line,
                             fix=f"repair or delete that row ({MIX_FIX})")
        ex.source_id = f"mix:{Path(path).stem}:{ex.line}"
    return examples


def sample_mix(examples: list[Example], persona_rows: int, ratio: float, seed: int) -> tuple[list[Example], str]:
    """round(ratio x persona_rows) rows drawn without replacement with `seed` (all of them, and a note, when the
    file holds fewer)."""
    wanted = round(ratio * persona_rows)
    if wanted > len(examples):
        return list(examples), (f"--mix-ratio {ratio} of {persona_rows} persona rows asks for {wanted} general rows "
                                f"but the mix file holds {len(examples)}: all of them were mixed")
    chosen = sorted(random.Random(seed).sample(range(len(examples)), wanted))
    return [examples[i] for i in chosen], ""


def interleave(persona: list[dict], mixed: list[dict], seed: int) -> list[dict]:
    """Train rows with the mixed ones spread among them (a seeded shuffle of the mixed rows' positions only)."""
    if not mixed:
        return persona
    rng = random.Random(seed)
    slots = sorted(rng.sample(range(len(persona) + len(mixed)), len(mixed)))
    out, persona_iter, mixed_iter = [], iter(persona), iter(mixed)
    taken = set(slots)
    for position in range(len(persona) + len(mixed)):
        out.append(next(mixed_iter) if position in taken else next(persona_iter))
    return out
