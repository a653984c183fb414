"""TrainConfig -> PEFT / TRL / torch settings, and the checks that name what this backend cannot do."""

from __future__ import annotations

import json
from pathlib import Path

from dantes_mlx.train.sdk import ConfigError

BACKEND = "unsloth"
FINE_TUNE_TYPES = ("lora", "dora")
SCHEDULES = ("constant", "cosine", "linear")
# mlx names first (same meaning), then what only a CUDA machine with bitsandbytes offers.
OPTIMIZERS = ("adam", "adamw", "sgd", "adafactor")
BNB_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit")
QUANT_BITS = (0, 4, 8)
METHODS = ("sft", "dpo", "orpo")  # sft: SFTTrainer or the loop; dpo, orpo: TRL's DPOTrainer, ORPOTrainer
MLX_WEIGHT_DECAY = 0.01  # mlx.optimizers.AdamW's default, kept so `adamw` means the same on both backends


def unsupported(setting: str, value, fix: str) -> ConfigError:
    """The error for a setting this backend cannot honour: names the setting, its value and the backend."""
    return ConfigError(f"{setting}={value!r} is not supported by backend '{BACKEND}'", path=f"train.{setting}",
                       fix=fix)


def peft_module_names(mlx_keys: list[str]) -> list[str]:
    """mlx-lm layer keys (`self_attn.q_proj`) as PEFT target_modules (`q_proj`).

    PEFT matches a name against the end of each module path, so the last component is enough
    unless two keys share it; then the full key is kept (PEFT accepts dotted suffixes too).
    """
    last = [key.split(".")[-1] for key in mlx_keys]
    return sorted({short if last.count(short) == 1 else key for key, short in zip(mlx_keys, last)})


def layers_to_transform(num_layers: int, model_layers: int) -> list[int] | None:
    """mlx-lm adapts the LAST `num_layers` blocks (-1: all); PEFT wants their indices (None: all)."""
    if num_layers == -1 or num_layers >= model_layers:
        if num_layers > model_layers:
            raise ConfigError(f"num_layers={num_layers} but the model has {model_layers} layers",
                              path="train.num_layers", fix=f"use -1 (all) or at most {model_layers}")
        return None
    return list(range(model_layers - num_layers, model_layers))


def lora_alpha(scale: float, rank: int) -> float | int:
    """PEFT applies lora_alpha / r where mlx-lm applies `scale`: alpha = scale x rank."""
    alpha = float(scale) * int(rank)
    return int(alpha) if alpha.is_integer() else alpha


def lora_kwargs(cfg, model_layers: int) -> dict:
    """peft.LoraConfig keyword arguments equivalent to mlx-lm's LoRA/DoRA settings in cfg."""
    layers = layers_to_transform(cfg.num_layers, model_layers)
    kwargs = {"r": cfg.rank, "lora_alpha": lora_alpha(cfg.scale, cfg.rank), "lora_dropout": cfg.dropout,
              "target_modules": peft_module_names(list(cfg.target_modules)), "bias": "none",
              "use_dora": cfg.fine_tune_type == "dora", "task_type": "CAUSAL_LM"}
    if layers is not None:
        kwargs.update(layers_to_transform=layers, layers_pattern="layers")
    return kwargs


def scheduler_name(cfg) -> str:
    """transformers' lr_scheduler_type with the same shape as mlx-lm's schedule (warmup, then decay to 0)."""
    if cfg.lr_schedule == "constant":
        return "constant_with_warmup" if cfg.warmup_steps else "constant"
    return cfg.lr_schedule  # "cosine" and "linear" decay to 0 after warmup, as mlx-lm's do


def trl_optimizer(cfg) -> tuple[str, float]:
    """TrainingArguments.optim and weight_decay for cfg.optimizer (Adam = AdamW without decay)."""
    return {"adam": ("adamw_torch", 0.0), "adamw": ("adamw_torch", MLX_WEIGHT_DECAY), "sgd": ("sgd", 0.0),
            "adafactor": ("adafactor", 0.0), "adamw_8bit": ("adamw_8bit", MLX_WEIGHT_DECAY),
            "paged_adamw_8bit": ("paged_adamw_8bit", MLX_WEIGHT_DECAY)}[cfg.optimizer]


def read_model_config(model_dir: Path) -> dict:
    """config.json of a local model folder."""
    path = Path(model_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON ({exc.msg})", path=path, line=exc.lineno,
                          fix="re-download the model") from exc


def is_mlx_quantized(config: dict) -> bool:
    """An MLX conversion (mlx-community/...-4bit): `quantization` without transformers' quantization_config."""
    return "quantization" in config and "quantization_config" not in config


def is_bnb_quantized(config: dict) -> bool:
    """A bitsandbytes checkpoint such as unsloth/mistral-7b-instruct-v0.3-bnb-4bit."""
    return str((config.get("quantization_config") or {}).get("quant_method", "")) == "bitsandbytes"


def check_settings(cfg, *, cuda: bool, bnb: bool) -> None:
    """Raise ConfigError for the first setting this backend cannot run here (cheap: reads no model)."""
    checks = [
        ("fine_tune_type", cfg.fine_tune_type in FINE_TUNE_TYPES,
         "use lora or dora (peft use_dora); full fine-tuning is only in backend 'mlx'"),
        ("lr_schedule", cfg.lr_schedule in SCHEDULES, f"use {', '.join(SCHEDULES)}"),
        ("optimizer", cfg.optimizer in OPTIMIZERS + BNB_OPTIMIZERS,
         f"use {', '.join(OPTIMIZERS + BNB_OPTIMIZERS)}"),
        ("quantize_base", cfg.quantize_base in QUANT_BITS,
         "use 0 (as stored), 4 (QLoRA, bitsandbytes nf4) or 8 (bitsandbytes int8)"),
        ("rank", cfg.rank >= 1, "use a rank of 1 or more"),
        ("dropout", 0.0 <= cfg.dropout < 1.0, "use a dropout in [0, 1)"),
        ("num_layers", cfg.num_layers == -1 or cfg.num_layers >= 1, "use -1 (all) or a positive count"),
        ("grad_accumulation", cfg.grad_accumulation >= 1, "use 1 or more"),
        ("max_seq_length", cfg.max_seq_length >= 2, "use a length of 2 tokens or more"),
        ("warmup_steps", cfg.warmup_steps >= 0, "use 0 or more"),
        ("target_modules", bool(cfg.target_modules), "list mlx-lm layer keys such as self_attn.q_proj"),
        ("method", cfg.method in METHODS, f"use {', '.join(METHODS)}"),
        ("beta", cfg.beta > 0, "use a beta above 0 (0.1 is usual)"),
        ("orpo_lambda", cfg.orpo_lambda > 0, "use a lambda above 0 (0.1 is usual)"),
        ("save_every", cfg.save_every >= 1 and cfg.save_every % cfg.grad_accumulation == 0,
         f"use a positive multiple of grad_accumulation={cfg.grad_accumulation} (checkpoints fall on updates)"),
    ]
    for setting, ok, fix in checks:
        if not ok:
            raise unsupported(setting, getattr(cfg, setting), fix)
    if cfg.quantize_base and not (cuda and bnb):
        need = "a CUDA GPU" if not cuda else "bitsandbytes (pip install bitsandbytes)"
        raise unsupported("quantize_base", cfg.quantize_base,
                          f"QLoRA in this backend needs bitsandbytes and a CUDA GPU; here {need} is missing: "
                          "set quantize_base: 0, or train with backend 'mlx' (its own quantization)")
    if cfg.optimizer in BNB_OPTIMIZERS and not (cuda and bnb):
        raise unsupported("optimizer", cfg.optimizer, "8-bit optimizers need bitsandbytes and a CUDA GPU; "
                                                      "use adam or adamw")
    check_base_name(cfg.base_model, cuda=cuda, bnb=bnb)


def check_base_name(base_model: str, *, cuda: bool, bnb: bool) -> None:
    """Refuse bases that transformers cannot load here, from their name or local config.json."""
    folder = Path(base_model).expanduser()
    config = read_model_config(folder) if (folder / "config.json").is_file() else {}
    if base_model.startswith("mlx-community/") or is_mlx_quantized(config):
        raise unsupported("base_model", base_model,
                          "this is an MLX conversion, which transformers cannot load: use the original "
                          "weights, e.g. mistralai/Mistral-7B-Instruct-v0.3 (add quantize_base: 4 for QLoRA "
                          "on CUDA) or unsloth/mistral-7b-instruct-v0.3-bnb-4bit")
    if ("bnb-4bit" in base_model or is_bnb_quantized(config)) and not (cuda and bnb):
        raise unsupported("base_model", base_model,
                          "a bitsandbytes 4-bit base needs bitsandbytes and a CUDA GPU: on this machine use the "
                          "full-precision repo (mistralai/Mistral-7B-Instruct-v0.3)")
