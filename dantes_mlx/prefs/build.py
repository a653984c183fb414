"""Preference rows from the SFT splits: each question's in-character answer (chosen) against the base model's own
answer (rejected), the base answers stored so that a killed run resumes without asking again."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dantes_mlx.errors import InputError, Interrupted
from dantes_mlx.stage import Log
from dantes_mlx.store import Store, item_key, read_jsonl, write_jsonl_atomic
from dantes_mlx.train.preferences import PreferencePair, pair_row

STAGE, VERSION = "prefs", "v1"
SPLITS = ("train", "valid")  # test stays held out: eval compares models on it
STORE_FILE = "base_answers.store.jsonl"


class Answerer(Protocol):
    """What answers a question as the base model: a name (part of the store key) and `answer`."""

    name: str

    def answer(self, messages: list[dict]) -> str:
        """The reply to a conversation ending with the user's turn."""
        ...


def question(row: dict, path: Path, line: int) -> tuple[list[dict], str]:
    """(the conversation before the answer, the answer) of a chat or completions row."""
    messages = row.get("messages")
    if isinstance(messages, list) and len(messages) >= 2 and isinstance(messages[-1], dict) \
            and messages[-1].get("role") == "assistant":
        return [{"role": m["role"], "content": m["content"]} for m in messages[:-1]], messages[-1]["content"]
    if isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
        return [{"role": "user", "content": row["prompt"]}], row["completion"]
    raise InputError("row has no question and answer (a chat row ending with the assistant's answer, or a "
                     "prompt/completion row)", path=path, line=line,
                     fix="build the dataset with `dantes-mlx prepare --format chat` (text rows hold no question)")


@dataclass
class PrefsSummary:
    """What one prefs run wrote: pairs per split, base answers asked now and reused, rows left out."""
    files: dict = field(default_factory=dict)      # split -> (path, pairs)
    asked: int = 0
    reused: int = 0
    skipped: list = field(default_factory=list)    # (file:line, reason)
    model: str = ""

    def summary(self) -> str:
        lines = [f"{split}: {n} pairs -> {path}" for split, (path, n) in self.files.items()]
        lines.append(f"base answers by {self.model}: {self.asked} generated now, {self.reused} reused from the store")
        if self.skipped:
            lines.append(f"{len(self.skipped)} rows left out (first: {self.skipped[0][0]}: {self.skipped[0][1]})")
        return "\n".join(lines)

    def failure(self) -> None:
        return None


def base_answer(answerer: Answerer, store: Store, prompt: list[dict], summary: PrefsSummary) -> str:
    """The stored answer to `prompt`, else the base model's, stored before it is used."""
    key = item_key(STAGE, VERSION, answerer.name, prompt)
    if key in store:
        summary.reused += 1
        return store.get(key)
    text = answerer.answer(prompt).strip()
    store.put(key, text)
    summary.asked += 1
    return text


def split_pairs(path: Path, answerer: Answerer, store: Store, summary: PrefsSummary, log: Log) -> list[dict]:
    """The preference rows of one SFT split file, in its order (same split: no question crosses splits)."""
    rows = []
    for line, row in read_jsonl(path):
        prompt, chosen = question(row, path, line)
        rejected = base_answer(answerer, store, prompt, summary)
        if not rejected or rejected == chosen.strip():
            summary.skipped.append((f"{path}:{line}", "the base answer is empty" if not rejected
                                    else "the base answer is the in-character answer"))
            continue
        rows.append(pair_row(PreferencePair(prompt, chosen, rejected)))
        if (summary.asked + summary.reused) % 50 == 0:
            log(f"{path.name}: {len(rows)} pairs ({summary.asked} base answers generated)")
    return rows


def build_preferences(dataset: Path, out_dir: Path, answerer: Answerer, log: Log) -> PrefsSummary:
    """<out_dir>/train.jsonl and valid.jsonl of TRL prompt/chosen/rejected rows, one per SFT row of the same split."""
    if not (dataset / "train.jsonl").is_file():
        raise InputError("no train.jsonl in the dataset folder", path=dataset,
                         fix="run `dantes-mlx prepare` first, or pass --data DIR")
    store = Store(out_dir / STORE_FILE)
    summary = PrefsSummary(model=answerer.name)
    for split in SPLITS:
        path = dataset / f"{split}.jsonl"
        if not path.is_file():
            continue
        try:
            rows = split_pairs(path, answerer, store, summary, log)
        except KeyboardInterrupt:
            raise Interrupted(f"stopped with {len(store)} base answers stored in {store.path}",
                              path=store.path) from None
        summary.files[split] = (out_dir / f"{split}.jsonl", write_jsonl_atomic(out_dir / f"{split}.jsonl", rows))
    return summary
