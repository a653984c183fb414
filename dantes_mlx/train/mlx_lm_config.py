"""A YAML written for `mlx_lm.lora` given as --config: refused with its translation into dantes.yaml's train section."""

from __future__ import annotations

from pathlib import Path

import yaml

from dantes_mlx.config import SECTIONS
from dantes_mlx.errors import ConfigError

# mlx_lm.lora key (or lora_parameters key) -> the train setting with the same meaning.
MLX_LM_KEYS = {"model": "base_model", "grad_accumulation_steps": "grad_accumulation", "keys": "target_modules",
               **{k: k for k in ("fine_tune_type", "optimizer", "num_layers", "batch_size", "iters", "val_batches",
                                 "learning_rate", "steps_per_report", "steps_per_eval", "save_every", "seed",
                                 "max_seq_length", "grad_checkpoint", "mask_prompt", "rank", "scale", "dropout")}}
# mlx_lm.lora's defaults (lora.py CONFIG_DEFAULTS) where ours differ: written out, the run stays mlx-lm's.
# Without lora_parameters.keys mlx-lm adapts every linear layer of a block (these for Llama/Mistral).
MLX_LM_DEFAULTS = {"iters": 1000, "learning_rate": 1e-5, "steps_per_eval": 200, "mask_prompt": False, "rank": 8,
                   "scale": 20.0, "dropout": 0.0, "lr_schedule": "constant", "warmup_steps": 0,
                   "target_modules": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                      "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]}
MLX_LM_SCHEDULES = {"cosine_decay": "cosine", "linear_schedule": "linear"}
_NO_REPORTING = "not supported: metrics.jsonl and loss.png in the adapter folder record the run"
MLX_LM_ELSEWHERE = {
    "data": "pass --data {value}", "adapter_path": "pass --adapter-path {value}",
    "resume_adapter_file": "no equivalent: --resume continues this tool's own last checkpoint in --adapter-path "
                           "(train_state.json, optimizer state included); it cannot start from another adapter file",
    "test": "run `dantes-mlx eval` after training (test loss and perplexity)", "test_batches": "see test",
    "report_to": _NO_REPORTING, "project_name": _NO_REPORTING,
    "optimizer_config": "not supported: the optimizer's own defaults apply",
    "hf_dataset": "not supported: `dantes-mlx prepare` writes a local dataset folder for --data",
    "trust_remote_code": "not supported: remote code is never run",
    "clear_cache_threshold": "not supported",
    **{k: "not supported: name the field prompt, completion, messages or text"
       for k in ("prompt_feature", "completion_feature", "chat_feature", "text_feature")},
}


def _as_float(value):
    """mlx_lm.lora's YAML loader reads 1e-5 as a float; PyYAML's safe loader as a string."""
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def translate_mlx_lm_config(data: dict) -> tuple[dict, list[str]]:
    """An mlx_lm.lora YAML as dantes.yaml's train settings, and one note per key that has no setting there."""
    settings, notes = {}, []
    flat = {**{k: v for k, v in data.items() if k != "lora_parameters"}, **(data.get("lora_parameters") or {})}
    for key, value in flat.items():
        if key in MLX_LM_KEYS:
            settings[MLX_LM_KEYS[key]] = _as_float(value) if key in ("learning_rate", "scale", "dropout") else value
        elif key == "lr_schedule" and value:
            notes.append(_translate_schedule(value, settings))
        elif key in MLX_LM_ELSEWHERE:
            notes.append(f"{key}: " + MLX_LM_ELSEWHERE[key].format(value=value))
        elif key not in ("train", "config", "lr_schedule"):
            notes.append(f"{key}: not an mlx_lm.lora setting either")
    defaults = {k: v for k, v in MLX_LM_DEFAULTS.items() if k not in settings}
    if "lr_schedule" in settings:
        defaults.pop("warmup_steps", None)
    if settings.get("fine_tune_type") == "full":
        defaults = {k: v for k, v in defaults.items() if k not in ("rank", "scale", "dropout", "target_modules")}
    if defaults:
        notes.append(f"mlx_lm.lora's defaults, written out where ours differ: {', '.join(defaults)}")
    return {**settings, **defaults}, notes


def _translate_schedule(spec, settings: dict) -> str:
    """mlx-lm's lr_schedule {name, arguments, warmup, warmup_init} as lr_schedule/warmup_steps (a note)."""
    name = spec.get("name") if isinstance(spec, dict) else None
    if name not in MLX_LM_SCHEDULES:
        return f"lr_schedule: {name!r} not supported: use lr_schedule constant, cosine or linear (with warmup_steps)"
    settings["lr_schedule"] = MLX_LM_SCHEDULES[name]
    settings["warmup_steps"] = int(spec.get("warmup", 0))
    if spec.get("arguments"):
        settings["learning_rate"] = _as_float(spec["arguments"][0])  # mlx-lm's peak rate, not learning_rate
    return (f"lr_schedule: {name} becomes {settings['lr_schedule']} with warmup_steps; its length and end value "
            "are not kept (ours goes from warmup to 0 over the run's updates) nor warmup_init (ours starts at 0)")


def read_mlx_lm_config(path: str | Path | None) -> dict | None:
    """The file's keys when it is a flat mlx_lm.lora config (no dantes.yaml section), else None."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) if path else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or any(isinstance(data[k], dict) for k in set(data) & set(SECTIONS)):
        return None
    return data if set(data) & {"model", "data", "lora_parameters", "fine_tune_type", "adapter_path"} else None


def mlx_lm_config_error(path: str | Path, data: dict) -> ConfigError:
    """The error for a flat mlx_lm.lora YAML given as --config: its translation, ready to paste."""
    settings, notes = translate_mlx_lm_config(data)
    snippet = yaml.safe_dump({"train": settings}, sort_keys=False, allow_unicode=True, default_flow_style=None)
    return ConfigError("this is an mlx_lm.lora config (flat keys); dantes-mlx reads sections, training "
                       "settings under `train:`", path=path,
                       fix="put this in a dantes.yaml and pass it with --config:\n" + snippet
                           + (f"and for the other keys of {Path(path).name}:\n" if notes else "")
                           + "".join(f"  {note}\n" for note in notes))
