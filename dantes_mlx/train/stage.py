"""The train stage: pick a backend, check the adapter folder (resume, restart, dataset), train, and summarize."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from dantes_mlx.config import TrainConfig, section
from dantes_mlx.errors import ConfigError, ModelError
from dantes_mlx.outputs import check_output, output_lock
from dantes_mlx.stage import Log
from dantes_mlx.train.backends import TrainResult, get_backend
from dantes_mlx.train.metrics import MetricsLog
from dantes_mlx.train.state import check_same_dataset, check_unfinished
from dantes_mlx.workspace import METRICS_FILE, AdapterFolder, Workspace, write_base_fingerprint


def train(cfg: TrainConfig, data_dir: str | Path, adapter_dir: str | Path, resume: bool = False,
          warn=lambda message: print(f"warning: {message}", file=sys.stderr), restart: bool = False,
          note=lambda message: print(message, file=sys.stderr)) -> TrainResult:
    """Pick the backend cfg.backend names (or auto), say which and why through `note`, check the settings
    against it, and train.

    Without `resume`, an interrupted run in `adapter_dir` is an error unless `restart` says to discard it;
    with it, the dataset must be the one the checkpoint was trained on."""
    if resume and restart:
        raise ConfigError("--resume and --restart contradict each other", fix="pass one of them")
    adapter_dir = check_output(adapter_dir, kind="dir", inputs=[data_dir], flag="--adapter-path")
    # Under mlx.launch (or MPI) every rank trains into one folder: rank 0 holds its lock for all of them.
    with output_lock(adapter_dir) if distributed_rank() == 0 else contextlib.nullcontext():
        return _train(cfg, Path(data_dir), adapter_dir, resume, warn, restart, note)


def distributed_rank() -> int:
    """This process's rank in a data-parallel launch (mlx.launch sets MLX_RANK; MPI its own), else 0."""
    for name in ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def _train(cfg: TrainConfig, data_dir: Path, adapter_dir: Path, resume: bool, warn, restart: bool,
           note) -> TrainResult:
    if not resume and not restart:
        check_unfinished(adapter_dir)
    if resume:
        check_same_dataset(adapter_dir, data_dir, warn)
    choice = get_backend(cfg.backend)
    backend = choice.backend
    note(f"training with backend {backend.name}: {choice.reason}")
    if choice.warning:
        warn(choice.warning)
    backend.check(cfg)
    adapter_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        AdapterFolder(adapter_dir).mark_dataset(data_dir)
    result = backend.train(cfg, data_dir, adapter_dir, resume=resume)
    result.choice = choice.reason
    check_diverged(result, cfg)
    fingerprint = write_base_fingerprint(cfg.base_model, adapter_dir)
    if fingerprint:
        result.files["base_fingerprint"] = fingerprint
    else:
        warn(f"no fingerprint of {cfg.base_model} recorded (not found locally): export cannot check its base")
    return result


def check_diverged(result: TrainResult, cfg: TrainConfig) -> None:
    """A run whose loss became NaN or infinite left an unusable adapter: say so instead of a success."""
    losses = {"train": result.train_loss, "valid": result.val_loss}
    bad = [name for name, value in losses.items() if isinstance(value, float) and not math.isfinite(value)]
    metrics = MetricsLog(Path(result.adapter_dir) / METRICS_FILE)
    first = next((r.get("step") for r in metrics.rows() if r.get("non_finite")), None)
    if bad or first is not None:
        where = f" from step {first}" if first is not None else ""
        raise ModelError(f"training diverged: the {' and '.join(bad) or 'reported'} loss is not a number{where}; "
                         "the adapter is unusable", path=metrics.path,
                         fix=f"lower learning_rate (now {cfg.learning_rate:g}), check the data with "
                             "`dantes-mlx validate`, then train again with --restart")


@dataclass
class TrainSummary:
    """A finished run: its backend, steps, last losses, speed and the files it wrote."""
    result: TrainResult

    def summary(self) -> str:
        r = self.result
        parts = [f"backend {r.backend}", f"{r.steps} steps"]
        for label, value, fmt in (("train loss", r.train_loss, ".3f"), ("valid loss", r.val_loss, ".3f"),
                                  ("tokens/s", r.tokens_per_sec, ".0f"), ("peak memory GB", r.peak_memory_gb, ".2f")):
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                parts.append(f"{label} {value:{fmt}}")
        why = [f"  why {r.backend}: {r.choice}"] if r.choice else []
        return "\n".join([", ".join(parts), *why] + [f"  {role}: {path}" for role, path in r.files.items()])

    def failure(self) -> None:
        return None  # a diverged run raises ModelError instead of returning


@dataclass
class Settings:
    """What one train run reads: the train section, the dataset and adapter folders, and how to treat a previous
    run there (resume, restart, or None: resume only a run on this very dataset, else start again)."""
    train: TrainConfig
    data_dir: str | None = None       # else data/dataset
    adapter_path: str | None = None   # else project.adapters_dir
    resume: bool | None = False
    restart: bool = False

    @classmethod
    def from_config(cls, config: dict, *, data_dir: str | None = None, adapter_path: str | None = None,
                    resume: bool | None = False, restart: bool = False, **overrides) -> "Settings":
        return cls(section(TrainConfig, config, overrides), data_dir, adapter_path, resume, restart)


def run(settings: Settings, workspace: Workspace, log: Log) -> TrainSummary:
    """Train into the adapter folder; with `resume` None, continue the last checkpoint only when it was trained
    on this very dataset (a new dataset starts from step 0)."""
    default = workspace.dataset if settings.train.method == "sft" else workspace.preferences
    data = Path(settings.data_dir) if settings.data_dir else default
    adapters = workspace.adapter(settings.adapter_path)
    resume, restart = settings.resume, settings.restart
    if resume is None:
        resume = adapters.has_checkpoint_state() and bool(adapters.trained_on(data))
        restart = not resume
        log("resuming from the last checkpoint" if resume else "training from scratch")
        adapters.mark_dataset(data)  # train() marks it too; here it also marks a run stopped before it starts
    return TrainSummary(train(settings.train, data, adapters.path, resume=resume, restart=restart,
                              warn=lambda message: log(f"warning: {message}"), note=log))
