"""The prepared dataset as token ids and loss masks, built exactly as mlx-lm builds them, and torch batches."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from dantes_mlx.train.sdk import assistant_token_mask, assistant_turns, first_trained

IGNORE = -100  # label of a token the loss skips (transformers' convention)


@dataclass
class Example:
    """One row: its token ids and where the trained part starts (tokens before `offset` are prompt); multi-turn
    rows also carry a 0/1 `mask` per token (every assistant turn trained, not only the part after `offset`)."""
    ids: list[int]
    offset: int = 0
    mask: list[int] | None = None

    def trained(self, n: int) -> list[int]:
        """0/1 per token of the first n: the mask, else everything from the offset on."""
        if self.mask is not None:
            return self.mask[:n]
        return [0] * min(self.offset, n) + [1] * max(n - self.offset, 0)


def _template(tokenizer, messages: list[dict], **kwargs) -> list[int]:
    out = tokenizer.apply_chat_template(messages, return_dict=False, **kwargs)
    return list(out)


def encode_row(row: dict, fmt: str, tokenizer, mask_prompt: bool, every_turn: bool = False) -> Example:
    """mlx-lm's ChatDataset / CompletionsDataset / TextDataset `process`, row by row.

    Chat and completions rows go through the tokenizer's chat template; with mask_prompt the loss
    starts after the templated prompt (the conversation minus its last message, with the
    generation prompt when that message is the assistant's), as mlx-lm computes it. `every_turn` (multi-turn
    datasets) masks each assistant turn instead, as dantes-mlx's mlx backend does.
    """
    if fmt == "text":
        ids = list(tokenizer.encode(row["text"]))
        if not ids or ids[-1] != tokenizer.eos_token_id:
            ids.append(tokenizer.eos_token_id)
        return Example(ids)
    if fmt == "completions":
        messages = [{"role": "user", "content": row["prompt"]},
                    {"role": "assistant", "content": row["completion"]}]
    else:
        messages = row["messages"]
    tools = row.get("tools")
    if mask_prompt and every_turn:
        ids, mask = assistant_token_mask(tokenizer, messages, tools)
        return Example(ids, first_trained(mask), mask)
    ids = _template(tokenizer, messages, tools=tools)
    if not mask_prompt:
        return Example(ids)
    prompt = _template(tokenizer, messages[:-1], tools=tools,
                       add_generation_prompt=messages[-1].get("role") == "assistant")
    return Example(ids, len(prompt))


def multi_turn(rows: list[dict], fmt: str) -> bool:
    """True when a chat row holds more than one assistant turn: the dataset is masked turn by turn."""
    return fmt == "chat" and any(assistant_turns(row["messages"]) > 1 for row in rows)


def encode_rows(rows: list[dict], fmt: str, tokenizer, mask_prompt: bool, every_turn: bool = False) -> list[Example]:
    """Every row of a split (see encode_row)."""
    return [encode_row(row, fmt, tokenizer, mask_prompt, every_turn) for row in rows]


def warn_if_truncated(examples: list[Example], max_seq_length: int, split: str) -> None:
    """Say how many rows are longer than max_seq_length (they are cut, as mlx-lm cuts them)."""
    long = sum(len(e.ids) > max_seq_length for e in examples)
    if long:
        print(f"note: {long} {split} rows are longer than max_seq_length={max_seq_length} tokens and are "
              "truncated", file=sys.stderr)


def length_batches(examples: list[Example], batch_size: int) -> list[list[int]]:
    """mlx-lm's batching: rows sorted by length, cut into full batches of neighbours (the rest dropped)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    return [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


def batch_order(n_batches: int, seed: int):
    """Endless batch indices: a fresh permutation per epoch from one seeded generator (mlx-lm's loop)."""
    rng = np.random.default_rng(seed)
    while True:
        yield from rng.permutation(n_batches).tolist()


class Collator:
    """Rows -> right-padded input_ids, attention_mask and labels (-100 on prompt and padding).

    Also counts the trained tokens it hands out (those the loss sees, as mlx-lm counts them for tokens/s).
    """

    def __init__(self, pad_id: int, max_seq_length: int):
        self.pad_id, self.max_seq_length = pad_id, max_seq_length
        self.tokens = 0

    def __call__(self, features: list) -> dict:
        import torch

        rows = [f if isinstance(f, Example) else Example(list(f["input_ids"]), int(f["offset"]), f.get("mask"))
                for f in features]
        width = min(max(len(r.ids) for r in rows), self.max_seq_length)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            seq = torch.tensor(row.ids[:width], dtype=torch.long)
            n = len(seq)
            ids[i, :n], mask[i, :n] = seq, 1
            trained = torch.tensor(row.trained(n), dtype=torch.bool)
            labels[i, :n] = torch.where(trained, seq, IGNORE)
            self.tokens += int(trained[1:].sum())  # the first token is never a target
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def as_hf_dataset(examples: list[Example]):
    """A datasets.Dataset of {input_ids, offset (, mask)} rows for TRL's SFTTrainer (preparation skipped)."""
    from datasets import Dataset

    columns = {"input_ids": [e.ids for e in examples], "offset": [e.offset for e in examples]}
    if any(e.mask is not None for e in examples):
        columns["mask"] = [e.trained(len(e.ids)) for e in examples]
    return Dataset.from_dict(columns)
