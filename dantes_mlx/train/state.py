"""What an adapter folder keeps between runs: the resume state, the resolved settings, the chat template, and
the checks that a run may start, resume or restart there."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from dantes_mlx.errors import ConfigError, DantesError, InputError
from dantes_mlx.store import write_text_atomic
from dantes_mlx.workspace import (BASE_FINGERPRINT_FILE, DATASET_MARKER, METRICS_FILE, OPTIMIZER_FILE, PEFT_WEIGHTS,
                                  PLOT_FILE, STATE_FILE, TEMPLATE_FILE, TRAIN_CONFIG_FILE, AdapterFolder)

if TYPE_CHECKING:
    from dantes_mlx.config import TrainConfig

# Settings that change the adapter's shape: a resumed run must keep them.
SHAPE_SETTINGS = ("base_model", "fine_tune_type", "rank", "num_layers", "target_modules", "quantize_base",
                  "method")


def read_state(adapter_dir: Path, cfg: "TrainConfig") -> dict:
    """The state a --resume continues from; errors when absent or when shape settings changed."""
    path = Path(adapter_dir) / STATE_FILE
    if not path.is_file():
        raise ConfigError("nothing to resume: no checkpoint state", path=path,
                          fix="run without --resume to start training from scratch")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", path=path, line=exc.lineno,
                         fix="delete the file and train without --resume") from exc
    saved = state.get("config", {})
    changed = [key for key in SHAPE_SETTINGS if key in saved and saved[key] != getattr(cfg, key)]
    if changed:  # every one at once, not one per attempt
        now = ", ".join(f"{key}={getattr(cfg, key)!r}" for key in changed)
        then = ", ".join(f"{key}={saved[key]!r}" for key in changed)
        raise ConfigError(f"--resume with {now}, but the checkpoint was trained with {then}", path=path,
                          fix=f"keep {then} or train without --resume")
    if not (Path(adapter_dir) / state["checkpoint"]).is_file():
        raise ConfigError(f"checkpoint {state['checkpoint']} is missing", path=path,
                          fix="train without --resume")
    return state


def write_state(adapter_dir: Path, cfg: "TrainConfig", step: int, iters: int, checkpoint: str) -> None:
    """Record the last complete checkpoint (written after the checkpoint file itself)."""
    state = {"step": step, "iters": iters, "checkpoint": checkpoint, "config": dataclasses.asdict(cfg)}
    write_text_atomic(Path(adapter_dir) / STATE_FILE, json.dumps(state, indent=2, ensure_ascii=False))


def clear_run_outputs(adapter_dir: Path) -> None:
    """Remove what a previous run left (our files only), so a fresh run does not mix with it."""
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        return
    for child in adapter_dir.iterdir():
        # adapter_model.safetensors: a PEFT adapter left by another backend would shadow this run's
        ours = child.name in (METRICS_FILE, PLOT_FILE, STATE_FILE, BASE_FINGERPRINT_FILE, OPTIMIZER_FILE,
                              PEFT_WEIGHTS)
        if ours or re.fullmatch(r"\d{7}_adapters\.safetensors", child.name):
            child.unlink()


def write_resolved_config(cfg: "TrainConfig", adapter_dir: Path, **extra) -> Path:
    """train_config.yaml: every setting the run used (after defaults < YAML < flags) plus what it derived."""
    data = {"train": dataclasses.asdict(cfg), "derived": extra}
    path = Path(adapter_dir) / TRAIN_CONFIG_FILE
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def write_chat_template(template: str | None, adapter_dir: Path) -> Path | None:
    """The tokenizer's chat template next to the adapter (export and chat use the same one)."""
    if not template:
        return None
    path = Path(adapter_dir) / TEMPLATE_FILE
    write_text_atomic(path, template)
    return path


def check_same_dataset(adapter_dir: Path, data_dir: Path, warn) -> None:
    """--resume continues only on the dataset the checkpoint was trained on."""
    same = AdapterFolder(adapter_dir).trained_on(data_dir)
    if same is None:
        warn(f"{adapter_dir} does not record its dataset (an older run): cannot check that --resume continues on "
             "the same one")
    elif not same:
        raise ConfigError(f"--resume on another dataset: {data_dir}/train.jsonl and valid.jsonl are not the files "
                          "the checkpoint was trained on", path=Path(adapter_dir) / DATASET_MARKER,
                          fix="resume with the --data folder of that run, or train this dataset from step 0 with "
                              "--restart (or another --adapter-path)")


def check_unfinished(adapter_dir: Path) -> None:
    """Refuse to start a fresh run over an interrupted one: starting clears its checkpoints."""
    path = Path(adapter_dir) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        step, iters = int(state["step"]), int(state["iters"])
    except (OSError, ValueError, KeyError, TypeError):  # no state, or one no resume could use anyway
        return
    if step < iters:
        raise ConfigError(f"{adapter_dir} holds an interrupted run (step {step} of {iters}); a fresh run would "
                          "delete its checkpoints", path=path,
                          fix="add --resume to continue it, or --restart to start again from step 0 "
                              "(or pick another --adapter-path)")


def interrupted(step: int, adapter_dir: Path) -> DantesError:
    """The error a Ctrl-C during training becomes: where to pick up."""
    if not step:
        return DantesError("training interrupted before its first optimizer update: nothing saved",
                           path=adapter_dir, fix="run the same command again (without --resume)")
    return DantesError(f"training interrupted; the adapter is saved at step {step}", path=adapter_dir,
                       fix="run the same command with --resume to continue from it")
