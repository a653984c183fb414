"""LoRA/DoRA adapters in mlx-lm's and PEFT's formats: read either into one representation, write either.

mlx-lm stores `lora_a` as (in, rank) and `lora_b` as (rank, out) and applies `scale` directly:
y = W x + scale * (x @ lora_a) @ lora_b. PEFT stores `lora_A.weight` as (rank, in) and
`lora_B.weight` as (out, rank) and applies lora_alpha / r. So a faithful conversion transposes
both matrices and writes lora_alpha = scale x rank; dropping the scale leaves an adapter that
is `scale` times too weak (20x with mlx-lm's default scale).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dantes_mlx.errors import ModelError
from dantes_mlx.store import write_text_atomic
from dantes_mlx.workspace import ADAPTER_CONFIG, MLX_WEIGHTS, PEFT_WEIGHTS

PEFT_PREFIX = "base_model.model."
_MLX_KEY = re.compile(r"^model\.layers\.(\d+)\.(\w+\.\w+)\.(lora_a|lora_b|m)$")
_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(\w+\.\w+)\."
                       r"(lora_A\.weight|lora_B\.weight|lora_magnitude_vector(?:\.weight)?)$")
_ORIENTATION_HINT = ("A and B may be stored transposed: PEFT keeps lora_A as (rank, in) and lora_B as "
                     "(out, rank), mlx-lm keeps lora_a as (in, rank) and lora_b as (rank, out)")


@dataclass
class LoraWeights:
    """One adapted linear layer in PEFT's orientation: W' = W + scale * b @ a (DoRA: then renormed)."""

    layer: int
    module: str  # path inside the transformer block, e.g. "self_attn.q_proj"
    a: np.ndarray  # (rank, in_features)
    b: np.ndarray  # (out_features, rank)
    scale: float
    magnitude: np.ndarray | None = None  # DoRA's learned norm of each output row, shape (out,)

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    @property
    def hf_name(self) -> str:
        """The base weight this layer adapts (`model.layers.N.self_attn.q_proj.weight`)."""
        return f"model.layers.{self.layer}.{self.module}.weight"


@dataclass
class Adapter:
    """A trained adapter, whatever wrote it: LoRA/DoRA layers, or replaced tensors for full fine-tuning."""

    kind: str  # "lora", "dora" or "full"
    modules: list[LoraWeights]
    source: str  # "mlx" or "peft"
    path: Path
    base_model: str | None = None
    dropout: float = 0.0
    full_weights: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def target_modules(self) -> list[str]:
        return sorted({m.module for m in self.modules})

    @property
    def layers(self) -> list[int]:
        return sorted({m.layer for m in self.modules})


def lora_alpha(scale: float, rank: int) -> float:
    """PEFT's and llama.cpp's lora_alpha for mlx-lm's `scale`: they apply alpha / rank."""
    return float(scale) * int(rank)


def to_peft_orientation(lora_a: np.ndarray, lora_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mlx-lm's (in, r) and (r, out) matrices as PEFT's lora_A (r, in) and lora_B (out, r)."""
    return np.ascontiguousarray(lora_a.T), np.ascontiguousarray(lora_b.T)


def to_mlx_orientation(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PEFT's lora_A (r, in) and lora_B (out, r) as mlx-lm's lora_a (in, r) and lora_b (r, out)."""
    return np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"invalid JSON ({exc.msg})", path=path, line=exc.lineno,
                         fix="re-export the adapter; the file is damaged") from exc


def _load_tensors(path: Path) -> dict[str, np.ndarray]:
    """safetensors -> float32 numpy (through mlx, which also reads bf16)."""
    import mlx.core as mx

    try:
        return {k: np.array(v.astype(mx.float32)) for k, v in mx.load(str(path)).items()}
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"cannot read the adapter weights ({exc})", path=path,
                         fix="re-export the adapter; the file may be truncated") from exc


def load_adapter(adapter_dir: str | Path) -> Adapter:
    """Read an adapter folder written by mlx-lm (adapters.safetensors) or by PEFT (adapter_model.safetensors)."""
    folder = Path(adapter_dir)
    if (folder / MLX_WEIGHTS).is_file() and (folder / ADAPTER_CONFIG).is_file():
        return load_mlx_adapter(folder)
    if (folder / PEFT_WEIGHTS).is_file() and (folder / ADAPTER_CONFIG).is_file():
        return load_peft_adapter(folder)
    if (folder / "adapter_model.bin").is_file():
        raise ModelError("PEFT adapter saved as adapter_model.bin (pickle), not safetensors", path=folder,
                         fix="save it again with model.save_pretrained(dir, safe_serialization=True)")
    raise ModelError("no adapter here: expected adapters.safetensors (mlx-lm) or adapter_model.safetensors "
                     "(PEFT), each with adapter_config.json", path=folder,
                     fix="point --adapter-path at the folder `dantes-mlx train` wrote (default: adapters/)")


def load_mlx_adapter(folder: Path) -> Adapter:
    """mlx-lm's adapter folder (what `dantes-mlx train` and `mlx_lm.lora` write)."""
    config = _read_json(folder / ADAPTER_CONFIG)
    kind = config.get("fine_tune_type", "lora")
    tensors = _load_tensors(folder / MLX_WEIGHTS)
    if kind == "full":
        return Adapter("full", [], "mlx", folder, config.get("model"), full_weights=tensors)
    if kind not in ("lora", "dora"):
        raise ModelError(f"fine_tune_type {kind!r} is not supported", path=folder / ADAPTER_CONFIG,
                         fix="export adapters trained with fine_tune_type lora, dora or full")
    params = config.get("lora_parameters") or {}
    if "scale" not in params:
        raise ModelError("lora_parameters has no 'scale'", path=folder / ADAPTER_CONFIG,
                         fix="mlx-lm adapters record lora_parameters.scale; re-train or add it")
    parts: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        match = _MLX_KEY.match(key)
        if not match:
            raise ModelError(f"unexpected tensor {key!r} in an mlx-lm LoRA adapter", path=folder / MLX_WEIGHTS,
                             fix="only transformer-block linear layers (lora_a, lora_b, m) can be exported")
        parts.setdefault((int(match.group(1)), match.group(2)), {})[match.group(3)] = value
    modules = []
    for (layer, module), p in sorted(parts.items()):
        if "lora_a" not in p or "lora_b" not in p:
            raise ModelError(f"layer {layer} {module} lacks lora_a or lora_b", path=folder / MLX_WEIGHTS,
                             fix="re-export the adapter; the file is incomplete")
        a, b = to_peft_orientation(p["lora_a"], p["lora_b"])
        modules.append(LoraWeights(layer, module, a, b, float(params["scale"]), p.get("m")))
    return Adapter(kind, modules, "mlx", folder, config.get("model"), float(params.get("dropout", 0.0)))


def _pattern_value(patterns: dict, module_name: str, default):
    """PEFT's rank_pattern/alpha_pattern lookup: a key matches a module name by regex on its suffix."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default


def load_peft_adapter(folder: Path) -> Adapter:
    """A PEFT LoRA/DoRA adapter (what the CUDA plugin, Unsloth or transformers + peft write)."""
    config_path = folder / ADAPTER_CONFIG
    config = _read_json(config_path)
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise ModelError(f"peft_type {config.get('peft_type')!r} is not LoRA", path=config_path,
                         fix="only LoRA and DoRA adapters can be exported")
    if config.get("modules_to_save") or config.get("bias", "none") != "none":
        raise ModelError("modules_to_save or trained biases cannot be exported as a LoRA adapter",
                         path=config_path, fix="train with modules_to_save=None and bias='none'")
    tensors = _load_tensors(folder / PEFT_WEIGHTS)
    parts: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        match = _PEFT_KEY.match(key)
        if not match:
            raise ModelError(f"unexpected tensor {key!r} in a PEFT LoRA adapter", path=folder / PEFT_WEIGHTS,
                             fix="only transformer-block linear layers (lora_A, lora_B, DoRA magnitudes) "
                                 "can be exported; embedding or lm_head adapters are not supported")
        part = {"lora_A.weight": "a", "lora_B.weight": "b"}.get(match.group(3), "m")
        parts.setdefault((int(match.group(1)), match.group(2)), {})[part] = value
    use_dora, rslora = bool(config.get("use_dora")), bool(config.get("use_rslora"))
    modules = []
    for (layer, module), p in sorted(parts.items()):
        if "a" not in p or "b" not in p:
            raise ModelError(f"layer {layer} {module} lacks lora_A or lora_B", path=folder / PEFT_WEIGHTS,
                             fix="re-save the adapter; the file is incomplete")
        name = f"model.layers.{layer}.{module}"
        rank = int(p["a"].shape[0])
        alpha = float(_pattern_value(config.get("alpha_pattern"), name, config.get("lora_alpha", rank)))
        scale = alpha / math.sqrt(rank) if rslora else alpha / rank
        modules.append(LoraWeights(layer, module, p["a"], p["b"], scale, p.get("m") if use_dora else None))
    return Adapter("dora" if use_dora else "lora", modules, "peft", folder,
                   config.get("base_model_name_or_path"), float(config.get("lora_dropout") or 0.0))


def linear_shapes(model_config: dict) -> dict[str, tuple[int, int]]:
    """(out, in) of every linear layer of a Llama/Mistral block, from config.json."""
    hidden, heads = model_config["hidden_size"], model_config["num_attention_heads"]
    head_dim = model_config.get("head_dim") or hidden // heads
    kv = (model_config.get("num_key_value_heads") or heads) * head_dim
    inter = model_config["intermediate_size"]
    return {"self_attn.q_proj": (heads * head_dim, hidden), "self_attn.k_proj": (kv, hidden),
            "self_attn.v_proj": (kv, hidden), "self_attn.o_proj": (hidden, heads * head_dim),
            "mlp.gate_proj": (inter, hidden), "mlp.up_proj": (inter, hidden), "mlp.down_proj": (hidden, inter)}


def check_adapter(adapter: Adapter, model_config: dict) -> None:
    """Refuse an adapter whose layers or shapes do not fit the base model, naming the first bad tensor."""
    shapes, n_layers = linear_shapes(model_config), model_config["num_hidden_layers"]
    where = adapter.path / (MLX_WEIGHTS if adapter.source == "mlx" else PEFT_WEIGHTS)
    for m in adapter.modules:
        if m.module not in shapes or m.layer >= n_layers:
            raise ModelError(f"the adapter targets {m.hf_name}, which the base model does not have", path=where,
                             fix="export with the base model the adapter was trained on (--base-model)")
        out_f, in_f = shapes[m.module]
        ok = (m.a.ndim == 2 and m.b.ndim == 2 and m.a.shape[1] == in_f and m.b.shape[0] == out_f
              and m.a.shape[0] == m.b.shape[1])
        if m.magnitude is not None:
            ok = ok and m.magnitude.shape == (out_f,)
        if not ok:
            raise ModelError(f"{m.hf_name}: A {tuple(m.a.shape)} and B {tuple(m.b.shape)} do not fit a base "
                             f"weight of shape (out, in) = {(out_f, in_f)}", path=where,
                             fix=f"use the base model the adapter was trained on; {_ORIENTATION_HINT}")


def _save_safetensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(tmp),
              metadata={"format": "pt"})
    tmp.replace(path)


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
    tensors: dict[str, Any] = {}
    for m in adapter.modules:
        prefix = f"{PEFT_PREFIX}model.layers.{m.layer}.{m.module}"
        tensors[f"{prefix}.lora_A.weight"] = m.a
        tensors[f"{prefix}.lora_B.weight"] = m.b
        if adapter.kind == "dora":
            tensors[f"{prefix}.lora_magnitude_vector"] = m.magnitude
    _save_safetensors(tensors, out / PEFT_WEIGHTS)
    config = peft_config(adapter, base_model or adapter.base_model or "")
    write_text_atomic(out / ADAPTER_CONFIG, json.dumps(config, indent=2) + "\n")
    return out


def write_mlx_adapter(adapter: Adapter, out_dir: str | Path, num_model_layers: int,
                      base_model: str | None = None) -> Path:
    """Write the adapter in mlx-lm's format, so `mlx_lm.load(base, adapter_path=...)` applies it.

    mlx-lm has one rank and one scale for all layers: smaller ranks are zero-padded and each layer's
    own scale is folded into its B, which leaves W + scale * B A unchanged.
    """
    if adapter.kind == "full":
        raise ModelError("full fine-tunes are already in mlx-lm's format", path=adapter.path,
                         fix="use the adapter folder as it is")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank, scale = max(m.rank for m in adapter.modules), adapter.modules[0].scale
    tensors: dict[str, Any] = {}
    for m in adapter.modules:
        a = np.zeros((rank, m.a.shape[1]), np.float32)
        b = np.zeros((m.b.shape[0], rank), np.float32)
        a[: m.rank], b[:, : m.rank] = m.a, m.b * (m.scale / scale)
        lora_a, lora_b = to_mlx_orientation(a, b)
        prefix = f"model.layers.{m.layer}.{m.module}"
        tensors[f"{prefix}.lora_a"], tensors[f"{prefix}.lora_b"] = lora_a, lora_b
        if adapter.kind == "dora":
            tensors[f"{prefix}.m"] = m.magnitude
    _save_safetensors(tensors, out / MLX_WEIGHTS)
    config = {"model": base_model or adapter.base_model, "fine_tune_type": adapter.kind,
              "num_layers": num_model_layers - min(adapter.layers),
              "lora_parameters": {"rank": rank, "scale": scale, "dropout": adapter.dropout,
                                  "keys": adapter.target_modules},
              "converted_from": str(adapter.path)}
    write_text_atomic(out / ADAPTER_CONFIG, json.dumps(config, indent=2) + "\n")
    return out
