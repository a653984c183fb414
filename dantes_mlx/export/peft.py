"""mlx-lm (or PEFT) adapters written in PEFT's format: what `export` ships for transformers + peft.

The formats themselves (reading either, mlx-lm's from PEFT's) live in dantes_mlx/adapter_format.py. PEFT applies
lora_alpha / r where mlx-lm applies `scale`, so the PEFT copy records lora_alpha = scale x rank; dropping the scale
leaves an adapter that is `scale` times too weak (20x with mlx-lm's default scale).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dantes_mlx.adapter_format import Adapter, save_tensors
from dantes_mlx.errors import ModelError
from dantes_mlx.store import write_text_atomic
from dantes_mlx.workspace import ADAPTER_CONFIG, PEFT_WEIGHTS

PEFT_PREFIX = "base_model.model."


def lora_alpha(scale: float, rank: int) -> float:
    """PEFT's and llama.cpp's lora_alpha for mlx-lm's `scale`: they apply alpha / rank."""
    return float(scale) * int(rank)


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def peft_config(adapter: Adapter, base_model: str) -> dict:
    """adapter_config.json as PEFT writes it; per-layer ranks or scales that differ go to the patterns."""
    ref = adapter.modules[0]
    rank_pattern, alpha_pattern = {}, {}
    for m in adapter.modules:
        name = f"model.layers.{m.layer}.{m.module}"
        if m.rank != ref.rank:
            rank_pattern[name] = m.rank
        if lora_alpha(m.scale, m.rank) != lora_alpha(ref.scale, ref.rank) or m.rank != ref.rank:
            alpha_pattern[name] = _number(lora_alpha(m.scale, m.rank))
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": ref.rank, "lora_alpha": _number(lora_alpha(ref.scale, ref.rank)),
        "lora_dropout": adapter.dropout, "target_modules": sorted({m.module.split(".")[-1] for m in adapter.modules}),
        "layers_to_transform": adapter.layers, "layers_pattern": "layers", "bias": "none",
        "use_dora": adapter.kind == "dora", "use_rslora": False, "fan_in_fan_out": False,
        "inference_mode": True, "init_lora_weights": True, "modules_to_save": None,
        "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern, "revision": None,
    }


def write_peft_adapter(adapter: Adapter, out_dir: str | Path, base_model: str | None = None) -> Path:
    """Write adapter_model.safetensors + adapter_config.json that peft.PeftModel.from_pretrained loads."""
    if adapter.kind == "full":
        raise ModelError("a full fine-tune has no LoRA layers to write as a PEFT adapter", path=adapter.path,
                         fix="use the fused GGUF (the export writes it), or train with fine_tune_type lora")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for m in adapter.modules:
        prefix = f"{PEFT_PREFIX}model.layers.{m.layer}.{m.module}"
        tensors[f"{prefix}.lora_A.weight"] = m.a
        tensors[f"{prefix}.lora_B.weight"] = m.b
        if adapter.kind == "dora":
            tensors[f"{prefix}.lora_magnitude_vector"] = m.magnitude
    save_tensors(tensors, out / PEFT_WEIGHTS)
    config = peft_config(adapter, base_model or adapter.base_model or "")
    write_text_atomic(out / ADAPTER_CONFIG, json.dumps(config, indent=2) + "\n")
    return out
