"""The built-in `mlx` backend: LoRA, DoRA, QLoRA and full fine-tuning through mlx-lm's own trainer."""

from __future__ import annotations

import contextlib
import functools
import platform
import shutil
import sys
from pathlib import Path

from dantes_mlx.backends.base import TrainResult
from dantes_mlx.config import QUANTIZE_BITS
from dantes_mlx.errors import ConfigError, DantesError

FINE_TUNE_TYPES = ("lora", "dora", "full")
SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adam", "adamw", "sgd", "adafactor")
QUANT_BITS = QUANTIZE_BITS  # 0 (as stored), 4 or 8: what the settings (and the plugin) accept


def _bad(setting: str, value, allowed: str) -> ConfigError:
    return ConfigError(f"{setting}={value!r} is not supported by backend 'mlx'", path=f"train.{setting}",
                       fix=f"use {allowed}")


class MLXBackend:
    """Fine-tuning with mlx-lm (Metal on Apple Silicon, else MLX's CPU or CUDA build)."""

    name = "mlx"
    priority = 0

    def available(self) -> tuple[bool, str]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            import mlx.core as mx
            mlx_lm_version = version("mlx-lm")  # not `import mlx_lm`: it pulls in transformers
        except (ImportError, PackageNotFoundError) as exc:
            return False, f"{getattr(exc, 'name', None) or 'mlx-lm'} is not installed (pip install mlx-lm)"
        device = self.device()
        where = {"metal": "Metal (Apple Silicon)", "cuda": "CUDA",
                 "cpu": "the CPU build: works, but slow (MLX's fast path is Metal)"}[device]
        return True, f"mlx {mx.__version__}, mlx-lm {mlx_lm_version} on {where}"

    def device(self) -> str:
        import mlx.core as mx

        if sys.platform == "darwin" and platform.machine() == "arm64" and mx.metal.is_available():
            return "metal"
        if getattr(mx, "cuda", None) is not None and mx.cuda.is_available():
            return "cuda"
        return "cpu"

    def check(self, cfg) -> None:
        checks = [
            ("fine_tune_type", cfg.fine_tune_type in FINE_TUNE_TYPES, ", ".join(FINE_TUNE_TYPES)),
            ("lr_schedule", cfg.lr_schedule in SCHEDULES, ", ".join(SCHEDULES)),
            ("optimizer", cfg.optimizer in OPTIMIZERS, ", ".join(OPTIMIZERS)),
            ("quantize_base", cfg.quantize_base in QUANT_BITS, "0 (as stored), 4 or 8"),
            ("rank", cfg.rank >= 1, "a rank of 1 or more"),
            ("dropout", 0.0 <= cfg.dropout < 1.0, "a dropout in [0, 1)"),
            ("num_layers", cfg.num_layers == -1 or cfg.num_layers >= 1, "-1 (all) or a positive count"),
            ("grad_accumulation", cfg.grad_accumulation >= 1, "1 or more"),
            ("max_seq_length", cfg.max_seq_length >= 2, "a length of 2 tokens or more"),
            ("warmup_steps", cfg.warmup_steps >= 0, "0 or more"),
            ("target_modules", bool(cfg.target_modules) or cfg.fine_tune_type == "full",
             "a list of mlx-lm layer keys such as self_attn.q_proj"),
            ("save_every", cfg.save_every >= 1 and cfg.save_every % max(1, cfg.grad_accumulation) == 0,
             f"a positive multiple of grad_accumulation={cfg.grad_accumulation} (checkpoints fall on updates)"),
        ]
        for setting, ok, allowed in checks:
            if not ok:
                raise _bad(setting, getattr(cfg, setting), allowed)
        if cfg.quantize_base and cfg.fine_tune_type == "full":
            raise _bad("quantize_base", cfg.quantize_base, "0 with fine_tune_type=full (quantized weights "
                       "cannot be trained)")

    def train(self, cfg, data_dir: Path, adapter_dir: Path, resume: bool = False) -> TrainResult:
        from dantes_mlx.backends.mlx_run import MLXRun

        self.check(cfg)
        return MLXRun(cfg, Path(data_dir), Path(adapter_dir), resume).run()


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
        from tqdm import tqdm

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


def interrupted(step: int, adapter_dir: Path) -> DantesError:
    """The error a Ctrl-C during training becomes: where to pick up."""
    if not step:
        return DantesError("training interrupted before its first optimizer update: nothing saved",
                           path=adapter_dir, fix="run the same command again (without --resume)")
    return DantesError(f"training interrupted; the adapter is saved at step {step}", path=adapter_dir,
                       fix="run the same command with --resume to continue from it")


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Atomic copy (a checkpoint is never seen half-written)."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)

