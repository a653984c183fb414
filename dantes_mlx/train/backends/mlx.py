"""The built-in `mlx` backend: LoRA, DoRA, QLoRA and full fine-tuning through mlx-lm's own trainer (SFT, DPO, ORPO)."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from dantes_mlx.config import TRAIN_METHODS
from dantes_mlx.errors import ConfigError
from dantes_mlx.train.backends.base import TrainResult
from dantes_mlx.train.backends.mlx_prefs import PreferenceRun
from dantes_mlx.train.backends.mlx_run import MLXRun
from dantes_mlx.train.backends.mlx_tuner import FINE_TUNE_TYPES, OPTIMIZERS, QUANT_BITS, SCHEDULES


def _bad(setting: str, value, allowed: str) -> ConfigError:
    return ConfigError(f"{setting}={value!r} is not supported by backend 'mlx'", path=f"train.{setting}",
                       fix=f"use {allowed}")


class MLXBackend:
    """Fine-tuning with mlx-lm (Metal on Apple Silicon, else MLX's CPU or CUDA build)."""

    name = "mlx"
    priority = 0

    def available(self) -> tuple[bool, str]:
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
            ("method", cfg.method in TRAIN_METHODS, ", ".join(TRAIN_METHODS)),
            ("beta", cfg.beta > 0, "a beta above 0 (0.1 is usual)"),
            ("orpo_lambda", cfg.orpo_lambda > 0, "a lambda above 0 (0.1 is usual)"),
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
        self.check(cfg)
        run = MLXRun if cfg.method == "sft" else PreferenceRun
        return run(cfg, Path(data_dir), Path(adapter_dir), resume).run()
