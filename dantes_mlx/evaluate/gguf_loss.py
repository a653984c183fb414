"""Held-out loss measured on GGUF files by llama.cpp: what Ollama runs, computed the same way for the base and
the fine-tuned model, whichever backend trained the adapter (mlx and torch need no loading here)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dantes_mlx.errors import InputError
from dantes_mlx.export.parity import GGUFRunner

Render = Callable[[list[dict], bool], str]  # (messages, add_generation_prompt) -> the chat template's text


@dataclass
class HeldOutLoss:
    """Mean negative log-likelihood per answer token of the rows' last assistant message."""
    loss: float
    tokens: int
    rows: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


def answer_token_nll(logits: np.ndarray, ids: list[int], start: int) -> np.ndarray:
    """-log p(ids[i] | ids[:i]) for i >= start, from the logits of every position."""
    rows = logits[start - 1: len(ids) - 1].astype(np.float64)
    top = rows.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(rows - top).sum(axis=1)) + top[:, 0]
    return log_norm - rows[np.arange(len(rows)), ids[start:]]


def split_row(row: dict, index: int) -> tuple[list[dict], list[dict]]:
    """(the messages before the last assistant answer, the whole conversation) of a chat row."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages or messages[-1].get("role") != "assistant":
        raise InputError("a chat row whose last message is not the assistant's", path=f"row {index + 1}",
                         fix="measure the loss on `prepare`'s chat format (messages ending with the answer)")
    return messages[:-1], messages


def gguf_loss(gguf: str | Path, rows: list[dict], render: Render, n_ctx: int = 2048) -> HeldOutLoss:
    """The held-out loss of one GGUF on chat rows: only the last answer's tokens count (mlx-lm's mask_prompt)."""
    runner = GGUFRunner(gguf, n_ctx=n_ctx)
    try:
        total, count = 0.0, 0
        for index, row in enumerate(rows):
            prompt, whole = split_row(row, index)
            start = len(runner.encode(render(prompt, True)))
            ids = runner.encode(render(whole, False))[:n_ctx]
            if len(ids) <= start:
                continue
            nll = answer_token_nll(runner.logits(ids), ids, start)
            total, count = total + float(nll.sum()), count + len(nll)
    finally:
        runner.llm.close()
    if not count:
        raise InputError("no answer token to measure", path=str(gguf), fix="check the test split is not empty")
    return HeldOutLoss(total / count, count, len(rows))


def template_renderer(model_dir: str | Path) -> Render:
    """The model folder's own chat template (transformers' tokenizer, as training used it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return lambda messages, open_turn: tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=open_turn)
