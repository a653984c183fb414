"""Preference rows in TRL's prompt/chosen/rejected format: read, checked with file:line errors, as chat messages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dantes_mlx.errors import InputError
from dantes_mlx.store import read_jsonl

PREFERENCE_FORMAT = "preference"
ROLES = ("system", "user", "assistant")
_ROW_FIX = ('write {"prompt": "...", "chosen": "...", "rejected": "..."} (or TRL\'s conversational form: prompt a '
            'list of {"role", "content"} messages, chosen and rejected one assistant message each), or build the '
            "rows with `dantes-mlx prefs`")


@dataclass
class PreferencePair:
    """One question and two answers: the conversation before the answer, the preferred and the dispreferred one."""
    prompt: list[dict]
    chosen: str
    rejected: str

    def conversation(self, answer: str) -> list[dict]:
        """The prompt followed by `answer` as the assistant's turn."""
        return [*self.prompt, {"role": "assistant", "content": answer}]


@dataclass
class PreferenceData:
    """The preference rows a dpo/orpo run trains on (format: "preference", for the resolved config)."""
    train: list[PreferencePair]
    valid: list[PreferencePair]
    format: str = PREFERENCE_FORMAT


def _messages(value, field: str, path: Path, line: int) -> list[dict]:
    """A TRL field as chat messages: a string is one user turn (prompt) or one assistant turn (answers)."""
    if isinstance(value, str):
        if not value.strip():
            raise InputError(f"`{field}` is empty", path=path, line=line, fix="give it text, or drop the row")
        return [{"role": "user" if field == "prompt" else "assistant", "content": value}]
    if not isinstance(value, list) or not value:
        raise InputError(f"`{field}` is {type(value).__name__}, not a string or a list of messages", path=path,
                         line=line, fix=_ROW_FIX)
    for i, message in enumerate(value):
        ok = (isinstance(message, dict) and message.get("role") in ROLES and isinstance(message.get("content"), str)
              and message["content"].strip())
        if not ok:
            raise InputError(f"`{field}`[{i}] is not a message with a role ({', '.join(ROLES)}) and non-empty "
                             "content", path=path, line=line, fix=_ROW_FIX)
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _answer(value, field: str, path: Path, line: int) -> str:
    """chosen/rejected: a string, or exactly one assistant message."""
    messages = _messages(value, field, path, line)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise InputError(f"`{field}` must be one assistant answer; this row has {len(messages)} message(s) "
                         f"({', '.join(m['role'] for m in messages)})", path=path, line=line,
                         fix="put the conversation before the answer in `prompt` (TRL's explicit-prompt form)")
    return messages[0]["content"]


def parse_pair(row, path: Path, line: int) -> PreferencePair:
    """One JSONL row as a PreferencePair, or InputError naming file:line, the field and the fix."""
    missing = [key for key in ("prompt", "chosen", "rejected") if not isinstance(row, dict) or key not in row]
    if missing:
        hint = " (this is an SFT row: dpo/orpo need preference rows)" if isinstance(row, dict) and (
            "messages" in row or "completion" in row or "text" in row) else ""
        raise InputError(f"not a preference row: no {', '.join(repr(k) for k in missing)}{hint}", path=path,
                         line=line, fix=_ROW_FIX)
    prompt = _messages(row["prompt"], "prompt", path, line)
    if prompt[-1]["role"] == "assistant":
        raise InputError("`prompt` ends with an assistant turn: nothing is left to answer", path=path, line=line,
                         fix="end the prompt with the user's question")
    pair = PreferencePair(prompt, _answer(row["chosen"], "chosen", path, line),
                          _answer(row["rejected"], "rejected", path, line))
    if pair.chosen.strip() == pair.rejected.strip():
        raise InputError("`chosen` and `rejected` are the same answer: the pair teaches no preference",
                         path=path, line=line, fix="drop the row, or give a different rejected answer")
    return pair


def read_preferences(path: Path) -> list[PreferencePair]:
    """Every row of one preference JSONL file (none when the file is absent)."""
    return [parse_pair(row, path, line) for line, row in read_jsonl(path)] if path.is_file() else []


def load_preferences(data_dir: str | Path) -> PreferenceData:
    """train.jsonl (required, non-empty) and valid.jsonl (optional) of a preference folder."""
    data_dir = Path(data_dir)
    train_path = data_dir / "train.jsonl"
    if not train_path.is_file():
        raise InputError("no train.jsonl of preference rows in this folder", path=data_dir,
                         fix="run `dantes-mlx prefs` (it writes <dataset>/preferences/), or pass --data DIR "
                             "holding TRL prompt/chosen/rejected rows")
    train = read_preferences(train_path)
    if not train:
        raise InputError("train.jsonl is empty", path=train_path, fix="run `dantes-mlx prefs` again")
    return PreferenceData(train, read_preferences(data_dir / "valid.jsonl"))


def pair_row(pair: PreferencePair) -> dict:
    """A pair as TRL's conversational row (what `prefs` writes and TRL's trainers read)."""
    return {"prompt": pair.prompt, "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}]}
