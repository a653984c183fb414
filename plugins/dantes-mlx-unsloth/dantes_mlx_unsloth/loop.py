"""The compact torch training loop (no TRL): mlx-lm's step, report, eval and checkpoint rhythm, in PyTorch."""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

from dantes_mlx_unsloth.data import Collator, Example, batch_order, length_batches
from dantes_mlx_unsloth.settings import MLX_WEIGHT_DECAY

OPTIMIZER_STATE = "optimizer.pt"


def make_optimizer(name: str, params, lr: float):
    """The torch optimizer with the meaning mlx's has (mlx Adam has no weight decay; AdamW's is 0.01)."""
    import torch

    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=MLX_WEIGHT_DECAY)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, relative_step=False, scale_parameter=False, warmup_init=False)
    raise ValueError(f"optimizer {name!r} needs the TRL path (bitsandbytes)")


def make_scheduler(optimizer, name: str, warmup: int, updates: int):
    """transformers' schedule over `updates` optimizer steps (warmup capped as mlx-lm caps it)."""
    from transformers import get_scheduler

    return get_scheduler(name, optimizer, num_warmup_steps=min(warmup, max(updates - 1, 0)),
                         num_training_steps=max(updates, 1))


def batch_loss(model, batch: dict) -> tuple:
    """Mean cross-entropy over the batch's trained tokens, and how many there are."""
    out = model(**batch)
    return out.loss, int((batch["labels"][:, 1:] != -100).sum())


def peak_memory_gb(device) -> float:
    """Peak memory so far: the CUDA allocator's, else this process's peak resident set."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.max_memory_allocated() / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kilobytes on Linux


def evaluate(model, examples: list[Example], collator: Collator, batch_size: int, num_batches: int,
             device) -> float:
    """Token-weighted mean validation loss over the first `num_batches` length-sorted batches (-1: all)."""
    import torch

    batches = length_batches(examples, batch_size)
    if num_batches >= 0:
        batches = batches[:num_batches]
    counted = collator.tokens
    was_training, total, ntoks = model.training, 0.0, 0
    model.eval()
    with torch.no_grad():
        for idx in batches:
            batch = {k: v.to(device) for k, v in collator([examples[i] for i in idx]).items()}
            loss, n = batch_loss(model, batch)
            total, ntoks = total + float(loss) * n, ntoks + n
    collator.tokens = counted  # validation tokens are not training throughput
    model.train(was_training)
    return total / max(ntoks, 1)


class TorchLoop:
    """Train `model` (PEFT-wrapped) for `iters` micro-batches, reporting to a MetricsLog."""

    def __init__(self, model, cfg, train: list[Example], valid: list[Example], collator: Collator,
                 metrics, device, checkpoint=None):
        self.model, self.cfg, self.train_set, self.valid = model, cfg, train, valid
        self.collator, self.metrics, self.device = collator, metrics, device
        self.checkpoint = checkpoint  # callable(step, optimizer, scheduler) writing a resumable checkpoint
        self.last_train: dict = {}
        self.last_val: dict = {}
        self.updated = 0  # micro-batch step of the last optimizer update (where a Ctrl-C saves)

    def build(self, iters: int):
        """Optimizer and schedule over the updates `iters` micro-batches make."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = make_optimizer(self.cfg.optimizer, params, self.cfg.learning_rate)
        from dantes_mlx_unsloth.settings import scheduler_name

        updates = max(iters // self.cfg.grad_accumulation, 1)
        return optimizer, make_scheduler(optimizer, scheduler_name(self.cfg), self.cfg.warmup_steps, updates)

    def batches(self, start: int):
        """Endless training batches in mlx-lm's order, the first `start` skipped (resume)."""
        batches = length_batches(self.train_set, self.cfg.batch_size)
        order = batch_order(len(batches), self.cfg.seed)
        for i in itertools.islice(order, start, None):
            yield {k: v.to(self.device) for k, v in self.collator([self.train_set[j] for j in batches[i]]).items()}

    def validate(self, step: int) -> None:
        if len(self.valid) < self.cfg.batch_size:
            return
        tic = time.perf_counter()
        loss = evaluate(self.model, self.valid, self.collator, self.cfg.batch_size, self.cfg.val_batches,
                        self.device)
        self.last_val = {"step": step, "val_loss": round(loss, 5), "val_time": round(time.perf_counter() - tic, 3)}
        self.metrics.append(self.last_val)

    def run(self, iters: int, optimizer, scheduler, start: int = 0, prior_tokens: int = 0) -> None:
        """Micro-batch steps start+1..iters: update every grad_accumulation steps, report, evaluate, save."""
        from tqdm import tqdm

        cfg, model = self.cfg, self.model
        model.train()
        # Throughput counts step time only (not batching, validation or saving), as mlx-lm's trainer does.
        window, step_time, window_tokens = [], 0.0, self.collator.tokens
        self.updated = start
        batches = self.batches(start)
        with tqdm(total=iters, initial=start, desc="train", unit="step", file=sys.stderr,
                  dynamic_ncols=True) as bar:
            for step in range(start + 1, iters + 1):
                if step == start + 1 or step % cfg.steps_per_eval == 0 or step == iters:
                    self.validate(step)  # before the step, as mlx-lm's trainer does
                batch = next(batches)
                tic = time.perf_counter()
                loss, _ = batch_loss(model, batch)
                (loss / cfg.grad_accumulation).backward()
                if step % cfg.grad_accumulation == 0:
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    self.updated = step
                window.append(float(loss.detach()))
                step_time += time.perf_counter() - tic
                bar.update(1)
                if step % cfg.steps_per_report == 0 or step == iters:
                    self.report(step, window, step_time, self.collator.tokens - window_tokens, prior_tokens,
                                scheduler)
                    bar.set_postfix(loss=f"{self.last_train['train_loss']:.3f}",
                                    tok_s=f"{self.last_train['tokens_per_sec']:.0f}")
                    window, step_time, window_tokens = [], 0.0, self.collator.tokens
                if self.checkpoint and (step % cfg.save_every == 0 or step == iters):
                    self.checkpoint(step, optimizer, scheduler)

    def report(self, step: int, window: list[float], elapsed: float, tokens: int, prior_tokens: int,
               scheduler) -> None:
        self.last_train = {
            "step": step, "train_loss": round(sum(window) / len(window), 5),
            "lr": float(scheduler.get_last_lr()[0]), "tokens_per_sec": round(tokens / max(elapsed, 1e-9), 1),
            "iters_per_sec": round(len(window) / max(elapsed, 1e-9), 3),
            "trained_tokens": int(prior_tokens + self.collator.tokens),
            "peak_memory_gb": round(peak_memory_gb(self.device), 4)}
        self.metrics.append(self.last_train)


def save_optimizer(path: Path, optimizer, scheduler) -> None:
    """Optimizer and schedule state (atomically), so --resume continues the same run."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp)
    tmp.replace(path)


def load_optimizer(path: Path, optimizer, scheduler) -> bool:
    """Restore what save_optimizer wrote; False when the file is missing."""
    import torch

    if not path.is_file():
        return False
    state = torch.load(path, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return True
