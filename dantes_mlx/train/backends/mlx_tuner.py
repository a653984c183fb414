"""mlx-lm's pieces the mlx backend assembles: the settings it supports, schedule, optimizer, progress bar,
adapter_config.json and atomic checkpoint copies."""

from __future__ import annotations

import contextlib
import functools
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from dantes_mlx.config import QUANTIZE_BITS
from dantes_mlx.errors import ConfigError
from dantes_mlx.workspace import ADAPTER_CONFIG, MLX_WEIGHTS, PEFT_WEIGHTS

FINE_TUNE_TYPES = ("lora", "dora", "full")
SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adam", "adamw", "sgd", "adafactor")
QUANT_BITS = QUANTIZE_BITS  # 0 (as stored), 4 or 8: what the settings (and the plugin) accept


def build_lr_schedule(cfg, updates: int):
    """mlx-lm's build_schedule config for cfg.lr_schedule with warmup, over `updates` optimizer steps."""
    from mlx_lm.tuner.utils import build_schedule

    lr, warmup = cfg.learning_rate, min(cfg.warmup_steps, max(updates - 1, 0))
    decay = max(updates - warmup, 1)
    if cfg.lr_schedule == "constant":
        if not warmup:
            return lr
        spec = {"name": "linear_schedule", "arguments": [lr, lr, 1]}
    elif cfg.lr_schedule == "cosine":
        spec = {"name": "cosine_decay", "arguments": [lr, decay, 0.0]}
    else:
        spec = {"name": "linear_schedule", "arguments": [lr, 0.0, decay]}
    if warmup:
        spec["warmup"] = warmup
    return build_schedule(spec)


def make_optimizer(name: str, learning_rate):
    """The mlx optimizer mlx-lm's lora.py would build for `name` (default optimizer_config)."""
    import mlx.optimizers as optim

    return {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD,
            "adafactor": optim.Adafactor}[name](learning_rate=learning_rate)


class TqdmTrainUI:
    """Stands in for mlx-lm's rich TrainUI: one tqdm bar with loss and tokens/s, global step numbers."""

    def __init__(self, total_iters: int, rank: int = 0, offset: int = 0):
        self.offset = offset
        self.bar = tqdm(total=offset + total_iters, initial=offset, desc="train", unit="step",
                        disable=rank != 0, dynamic_ncols=True, file=sys.stderr)
        self.postfix: dict = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()
        return False

    def advance(self):
        self.bar.update(1)

    def report_train(self, it, train_loss, tokens_sec, trained_tokens):
        self.postfix.update(loss=f"{train_loss:.3f}", tok_s=f"{tokens_sec:.0f}")
        self.bar.set_postfix(self.postfix, refresh=True)

    @contextlib.contextmanager
    def val_task(self, total: int):
        yield lambda: None

    def report_val(self, it, val_loss, val_time):
        self.postfix.update(val=f"{val_loss:.3f}")
        self.bar.set_postfix(self.postfix, refresh=True)

    def report_save(self, checkpoint):
        pass


@contextlib.contextmanager
def tqdm_progress(offset: int):
    """Swap mlx-lm's trainer UI for TqdmTrainUI while training (restored afterwards)."""
    from mlx_lm.tuner import trainer

    original = getattr(trainer, "TrainUI", None)
    if original is None:  # another mlx-lm version: keep its own progress display
        yield
        return
    trainer.TrainUI = functools.partial(TqdmTrainUI, offset=offset)
    try:
        yield
    finally:
        trainer.TrainUI = original


def mlx_lm_adapter_config(cfg, data_dir: Path, iters: int, base: str) -> dict:
    """adapter_config.json in mlx-lm's own layout, so mlx_lm.load(base, adapter_path=...) reads it."""
    lora = None
    if cfg.fine_tune_type != "full":
        lora = {"rank": cfg.rank, "scale": cfg.scale, "dropout": cfg.dropout, "keys": list(cfg.target_modules)}
    return {
        "model": base, "fine_tune_type": cfg.fine_tune_type, "num_layers": cfg.num_layers,
        "lora_parameters": lora, "data": str(data_dir), "batch_size": cfg.batch_size, "iters": iters,
        "learning_rate": cfg.learning_rate, "lr_schedule": cfg.lr_schedule, "warmup_steps": cfg.warmup_steps,
        "optimizer": cfg.optimizer, "grad_accumulation_steps": cfg.grad_accumulation,
        "grad_checkpoint": cfg.grad_checkpoint, "max_seq_length": cfg.max_seq_length,
        "mask_prompt": cfg.mask_prompt, "seed": cfg.seed, "quantize_base": cfg.quantize_base,
        "train": True, "adapter_path": "adapters", "trainer": "dantes-mlx (mlx_lm.tuner)",
    }


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Atomic copy (a checkpoint is never seen half-written)."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def load_start_adapter(model, folder: Path) -> None:
    """The weights of an mlx-lm adapter folder in the adapter layers just added: the run starts from them
    (train.resume_adapter, e.g. an SFT adapter before dpo/orpo)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    weights = folder / MLX_WEIGHTS
    if not weights.is_file():
        what = "a PEFT adapter (the torch plugin's)" if (folder / PEFT_WEIGHTS).is_file() else "no mlx-lm adapter"
        raise ConfigError(f"train.resume_adapter holds {what}: backend 'mlx' starts only from {MLX_WEIGHTS}",
                          path=folder, fix="give the folder a `dantes-mlx train --backend mlx` run wrote, or "
                                           "train this run with the backend that wrote it")
    saved = mx.load(str(weights))
    ours = dict(tree_flatten(model.trainable_parameters()))
    differ = sorted(k for k in set(saved) | set(ours)
                    if k not in saved or k not in ours or saved[k].shape != ours[k].shape)
    if differ:
        raise ConfigError(f"the adapter in {folder} does not fit this run's adapter layers ({len(differ)} "
                          f"tensors differ, first: {differ[0]})", path="train.resume_adapter",
                          fix=f"use the rank, num_layers, target_modules and fine_tune_type recorded in "
                              f"{folder / ADAPTER_CONFIG}")
    model.load_weights(list(saved.items()), strict=False)
