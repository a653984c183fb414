"""DPO and ORPO on mlx: preference pairs as token batches, sequence log-probs, the two losses, and the run.

DPO (Rafailov et al. 2023): -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), with pi and ref the summed
log-probabilities of the answer tokens under the adapter and under the reference: the model as the run starts (the
base, or base + train.resume_adapter such as an SFT adapter), its log-probs computed once before training. ORPO (Hong et al. 2024): the chosen answer's mean token NLL
- lambda * log sigmoid(log odds(chosen) - log odds(rejected)), odds from mean token log-probs; no reference.
Only answer tokens count: the prompt is masked as mlx-lm's mask_prompt masks it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dantes_mlx.errors import ConfigError
from dantes_mlx.train.backends.mlx_run import MLXRun
from dantes_mlx.train.backends.mlx_tuner import load_start_adapter
from dantes_mlx.train.data import check_answers_fit, validation_note
from dantes_mlx.train.preferences import PreferencePair, load_preferences

PAD_TO = 32  # widths rounded up as mlx-lm's iterate_batches rounds them (fewer compiled shapes)


@dataclass
class PairItem:
    """One pair as tokens: each answer's ids and where it starts, and the reference log-probs (DPO)."""
    chosen: list[int]
    chosen_offset: int
    rejected: list[int]
    rejected_offset: int
    reference: tuple[float, float] = (0.0, 0.0)

    def __len__(self) -> int:
        return max(len(self.chosen), len(self.rejected))


def template_ids(tokenizer, messages: list[dict], **kwargs) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tokenize=True, **kwargs))


def encode_pair(tokenizer, pair: PreferencePair) -> PairItem:
    """Both conversations through the chat template; the answer starts after the prompt's generation prompt."""
    offset = len(template_ids(tokenizer, pair.prompt, add_generation_prompt=True))
    return PairItem(template_ids(tokenizer, pair.conversation(pair.chosen)), offset,
                    template_ids(tokenizer, pair.conversation(pair.rejected)), offset)


def collate(items: list[PairItem], max_seq_length: int):
    """(tokens, lengths, reference): the chosen rows then the rejected rows, right-padded; lengths holds each
    row's (answer start, length) after truncation, as mlx-lm's batches do."""
    import mlx.core as mx

    rows = [(i.chosen, i.chosen_offset) for i in items] + [(i.rejected, i.rejected_offset) for i in items]
    longest = max(len(ids) for ids, _ in rows)
    width = min(1 + PAD_TO * ((longest + PAD_TO - 1) // PAD_TO), max_seq_length)
    tokens = np.zeros((len(rows), width), np.int32)
    lengths = np.zeros((len(rows), 2), np.int32)
    for j, (ids, offset) in enumerate(rows):
        n = min(len(ids), width)
        tokens[j, :n], lengths[j] = ids[:n], (offset, n)
    reference = [i.reference[0] for i in items] + [i.reference[1] for i in items]
    return mx.array(tokens), mx.array(lengths), mx.array(np.array(reference, np.float32))


def iterate_pairs(dataset, batch_size, max_seq_length, loop=False, seed=None, comm_group=None):
    """mlx-lm's batching for pairs: sorted by length, full batches of neighbours, shuffled each epoch."""
    if comm_group is not None and comm_group.size() > 1:
        raise ConfigError("dpo/orpo train in one process", path="train.method",
                          fix="run without mlx.launch, or train with method: sft")
    order = sorted(range(len(dataset)), key=lambda i: len(dataset[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    if seed is not None:
        np.random.seed(seed)
    while True:
        for b in np.random.permutation(len(batches)):
            yield collate([dataset[i] for i in batches[b]], max_seq_length)
        if not loop:
            break


def sequence_logps(model, tokens, lengths):
    """Summed log-probability of each row's answer tokens and their count."""
    import mlx.core as mx
    import mlx.nn as nn

    logits = model(tokens[:, :-1]).astype(mx.float32)
    token_logps = -nn.losses.cross_entropy(logits, tokens[:, 1:])
    steps = mx.arange(1, tokens.shape[1])  # position of each target token
    mask = mx.logical_and(steps >= lengths[:, 0:1], steps < lengths[:, 1:])
    return (token_logps * mask).sum(axis=1), mask.sum(axis=1)


def dpo_loss(model, tokens, lengths, reference, beta: float):
    """DPO's sigmoid loss over the batch's pairs, and the answer tokens it saw."""
    import mlx.core as mx
    import mlx.nn as nn

    logps, ntoks = sequence_logps(model, tokens, lengths)
    half = logps.shape[0] // 2
    margin = (logps[:half] - reference[:half]) - (logps[half:] - reference[half:])
    return mx.mean(-nn.log_sigmoid(beta * margin)), ntoks.sum()


def orpo_loss(model, tokens, lengths, reference, orpo_lambda: float):
    """ORPO: the chosen answers' token NLL plus lambda x the odds-ratio term (`reference` unused)."""
    import mlx.core as mx
    import mlx.nn as nn

    logps, ntoks = sequence_logps(model, tokens, lengths)
    half = logps.shape[0] // 2
    mean = logps / mx.maximum(ntoks, 1)
    log_odds = lambda x: x - mx.log1p(-mx.exp(mx.minimum(x, -1e-6)))  # log(p / (1 - p)) for p = exp(x)
    ratio = log_odds(mean[:half]) - log_odds(mean[half:])
    nll = -logps[:half].sum() / mx.maximum(ntoks[:half].sum(), 1)
    return nll - orpo_lambda * mx.mean(nn.log_sigmoid(ratio)), ntoks.sum()


def reference_logps(model, items: list[PairItem], batch_size: int, max_seq_length: int) -> None:
    """Each pair's (chosen, rejected) log-probs under `model` as it is now (the reference), stored on the items."""
    import mlx.core as mx

    model.eval()
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        tokens, lengths, _ = collate(chunk, max_seq_length)
        logps, _ = sequence_logps(model, tokens, lengths)
        values = np.array(mx.stop_gradient(logps)).tolist()
        for k, item in enumerate(chunk):
            item.reference = (values[k], values[len(chunk) + k])
    model.train()


class PreferenceRun(MLXRun):
    """An mlx run on preference pairs: DPO or ORPO loss, same adapters, checkpoints, resume and metrics."""

    def load_data(self):
        return load_preferences(self.data_dir)

    def datasets(self, tokenizer, data):
        """Pairs as PairItems (train, and valid when it fills a batch); every answer must keep a token."""
        train = [encode_pair(tokenizer, pair) for pair in data.train]
        note = validation_note(self.data_dir, len(data.valid), self.cfg.batch_size)
        if note:
            self.say(note)
        valid = None if note else [encode_pair(tokenizer, pair) for pair in data.valid]
        for name, items in (("train", train), ("valid", valid or [])):
            for side in ("chosen", "rejected"):
                rows = [(len(getattr(i, side)), getattr(i, f"{side}_offset")) for i in items]
                check_answers_fit(rows, self.cfg.max_seq_length, self.cfg.batch_size,
                                  self.data_dir / f"{name}.jsonl", self.say)
        return train, valid, True

    def start_from(self, model, tokenizer, train_set, valid_set) -> None:
        """The start adapter (train.resume_adapter), then DPO's reference log-probs from the model as it starts:
        the base (the new adapter is still zero), or base + that adapter, as TRL's DPOTrainer copies it."""
        if self.cfg.resume_adapter:
            load_start_adapter(model, Path(self.cfg.resume_adapter))
        if self.cfg.method == "dpo":
            start = f"base + {self.cfg.resume_adapter}" if self.cfg.resume_adapter else "the base model"
            self.say(f"reference log-probs of {len(train_set) + len(valid_set or [])} pairs ({start})")
            for items in (train_set, valid_set or []):
                reference_logps(model, items, self.cfg.batch_size, self.cfg.max_seq_length)

    def iterate_batches(self):
        return iterate_pairs

    def loss(self):
        if self.cfg.method == "dpo":
            return functools.partial(dpo_loss, beta=self.cfg.beta)
        return functools.partial(orpo_loss, orpo_lambda=self.cfg.orpo_lambda)
