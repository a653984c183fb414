"""Loss on every assistant turn for mlx-lm: chat rows as (ids, per-token mask), their batches and the masked loss.

mlx-lm's mask_prompt trains only a conversation's last message; multi-turn rows (`generate --turns`) need each
assistant turn trained, so these stand in for its ChatDataset, iterate_batches and default_loss.
"""

from __future__ import annotations

import numpy as np

from dantes_mlx.train.data import assistant_token_mask

PAD_TO = 32  # batch widths rounded up as mlx-lm rounds them (fewer compiled shapes)


class TurnMaskDataset:
    """Chat rows whose process() gives (token ids, 0/1 mask on every assistant turn); wrap it in CacheDataset."""

    def __init__(self, rows: list[dict], tokenizer):
        self._data, self.tokenizer = rows, tokenizer

    def process(self, row: dict) -> tuple[list[int], list[int]]:
        return assistant_token_mask(self.tokenizer, row["messages"], row.get("tools"))

    def __getitem__(self, index: int) -> dict:
        return self._data[index]

    def __len__(self) -> int:
        return len(self._data)


def batch_indices(lengths: list[int], batch_size: int, offset: int = 0, step: int = 1) -> list[list[int]]:
    """mlx-lm's batching: rows sorted by length, cut into full batches of neighbours (this process's share)."""
    if len(lengths) < batch_size:
        raise ValueError(f"Dataset must have at least batch_size={batch_size} examples but only has {len(lengths)}.")
    if batch_size % step:
        raise ValueError("The batch size must be divisible by the number of workers")
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i + offset: i + offset + batch_size: step] for i in range(0, len(order) - batch_size + 1, batch_size)]


def pad_batch(items: list[tuple[list[int], list[int]]], max_seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) arrays, right-padded with zeros to one plus a multiple of PAD_TO, cut at max_seq_length."""
    longest = max(len(ids) for ids, _ in items)
    width = min(1 + PAD_TO * ((longest + PAD_TO - 1) // PAD_TO), max_seq_length)
    ids_arr = np.zeros((len(items), width), np.int32)
    mask_arr = np.zeros((len(items), width), np.float32)
    for row, (ids, mask) in enumerate(items):
        n = min(len(ids), width)
        ids_arr[row, :n], mask_arr[row, :n] = ids[:n], mask[:n]
    return ids_arr, mask_arr


def iterate_masked_batches(dataset, batch_size, max_seq_length, loop=False, seed=None, comm_group=None):
    """mlx-lm's iterate_batches (same order, same seeded shuffle) yielding (ids, mask) pairs of mx arrays."""
    import mlx.core as mx

    offset, step = (comm_group.rank(), comm_group.size()) if comm_group is not None else (0, 1)
    batches = batch_indices([dataset.itemlen(i) for i in range(len(dataset))], batch_size, offset, step)
    if seed is not None:
        np.random.seed(seed)
    while True:
        for i in np.random.permutation(len(batches)):
            ids, mask = pad_batch([dataset[j] for j in batches[i]], max_seq_length)
            yield mx.array(ids), mx.array(mask)
        if not loop:
            break


def masked_loss(model, batch, mask):
    """Mean cross-entropy over the target tokens the mask trains; (loss, trained token count) as mlx-lm's."""
    import mlx.core as mx
    import mlx.nn as nn

    logits = model(batch[:, :-1])
    weights = mask[:, 1:]
    ce = nn.losses.cross_entropy(logits, batch[:, 1:]) * weights
    ntoks = weights.sum().astype(mx.int32)
    return ce.astype(mx.float32).sum() / ntoks, ntoks
