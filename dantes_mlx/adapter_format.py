"""An adapter folder's weight formats, in one place: which one a folder holds (mlx-lm's or PEFT's), both read into
one representation, and the mlx-lm form every MLX command loads (a PEFT adapter converted once, cached by content).

mlx-lm stores `lora_a` as (in, rank) and `lora_b` as (rank, out) and applies `scale` directly:
y = W x + scale * (x @ lora_a) @ lora_b. PEFT stores `lora_A.weight` as (rank, in) and
`lora_B.weight` as (out, rank) and applies lora_alpha / r (lora_alpha / sqrt(r) with rsLoRA). So a faithful
conversion transposes both matrices and carries the scale; DoRA's magnitudes (mlx-lm `m`, PEFT
`lora_magnitude_vector`) mean the same in both: the norm of each output row of the adapted weight.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dantes_mlx.errors import ModelError
from dantes_mlx.models.config import read_model_config
from dantes_mlx.models.embedded import cache_dir, sha256_of
from dantes_mlx.models.weights import check_weights
from dantes_mlx.store import write_text_atomic
from dantes_mlx.workspace import ADAPTER_CONFIG, MLX_WEIGHTS, PEFT_WEIGHTS

MLX, PEFT = "mlx", "peft"
CONVERTER_VERSION = "1"  # part of the cache key: a changed converter never reuses an older conversion
_MLX_KEY = re.compile(r"^model\.layers\.(\d+)\.(\w+\.\w+)\.(lora_a|lora_b|m)$")
_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(\w+\.\w+)\."
                       r"(lora_A\.weight|lora_B\.weight|lora_magnitude_vector(?:\.weight)?)$")
_ORIENTATION_HINT = ("A and B may be stored transposed: PEFT keeps lora_A as (rank, in) and lora_B as "
                     "(out, rank), mlx-lm keeps lora_a as (in, rank) and lora_b as (rank, out)")
_EXPECTED = (f"expected {MLX_WEIGHTS} (mlx-lm, `dantes-mlx train --backend mlx`) or {PEFT_WEIGHTS} (PEFT, "
             f"`--backend unsloth` or transformers + peft), each with {ADAPTER_CONFIG}")
_FOLDER_FIX = "point --adapter-path at the folder `dantes-mlx train` wrote (default: adapters/)"
# PEFT options whose weights an mlx-lm LoRA/DoRA layer cannot hold: (setting, what it is, is it set[, fix]).
_UNSUPPORTED_PEFT = (
    ("modules_to_save", "fully trained copies of whole modules", lambda v: bool(v)),
    ("bias", "trained biases", lambda v: v not in (None, "none")),
    ("lora_bias", "a trained bias on lora_B", lambda v: bool(v)),
    ("fan_in_fan_out", "Conv1D (GPT-2 style) weights", lambda v: bool(v)),
    ("layer_replication", "replicated layers", lambda v: bool(v)),
    ("trainable_token_indices", "trained token embeddings", lambda v: bool(v)),
    ("target_parameters", "adapted parameters (not linear layers)", lambda v: bool(v)),
    ("alora_invocation_tokens", "activated LoRA (on only after some tokens)", lambda v: bool(v)),
    ("use_qalora", "QA-LoRA (pooled inputs)", lambda v: bool(v)),
    ("use_bdlora", "block-diagonal LoRA", lambda v: bool(v)),
    ("arrow_config", "Arrow routing between adapters", lambda v: bool(v)),
    ("kasa_config", "KaSA (singular-value scaling)", lambda v: bool(v)),
    ("monteclora_config", "MonteCLoRA (sampled adapters)", lambda v: bool(v)),
    # These rewrite the base weights at initialisation: the adapter fits that residual base, not the original.
    ("init_lora_weights", "an adapter initialised from the base's weights, which were changed in place",
     lambda v: isinstance(v, str) and v.lower().startswith(("pissa", "olora", "corda", "loftq")),
     "save it converted to plain LoRA (peft's save_pretrained(..., path_initial_model_for_weight_conversion=...)), "
     "or train with init_lora_weights=True"),
)
_DAMAGED_FIX = ("train again (`dantes-mlx train --resume` continues from its last checkpoint), or copy the adapter "
                "folder again")
_SHAPE_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
               "intermediate_size")  # what check_adapter reads from the base's config.json
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16}


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

    @property
    def weights_file(self) -> Path:
        return self.path / (MLX_WEIGHTS if self.source == MLX else PEFT_WEIGHTS)


def to_peft_orientation(lora_a: np.ndarray, lora_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mlx-lm's (in, r) and (r, out) matrices as PEFT's lora_A (r, in) and lora_B (out, r)."""
    return np.ascontiguousarray(lora_a.T), np.ascontiguousarray(lora_b.T)


def to_mlx_orientation(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PEFT's lora_A (r, in) and lora_B (out, r) as mlx-lm's lora_a (in, r) and lora_b (r, out)."""
    return np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)


# ---------------------------------------------------------------- which format a folder holds
def folder_format(adapter_dir: str | Path) -> str:
    """"mlx" or "peft": the adapter an adapter folder holds, or a ModelError naming the folder and what was
    expected there."""
    folder = Path(adapter_dir)
    if not folder.is_dir():
        raise ModelError(f"no adapter folder here: {_EXPECTED}", path=folder, fix=_FOLDER_FIX)
    mlx, peft = (folder / MLX_WEIGHTS).is_file(), (folder / PEFT_WEIGHTS).is_file()
    if mlx and peft:
        raise ModelError(f"both an mlx-lm adapter ({MLX_WEIGHTS}) and a PEFT one ({PEFT_WEIGHTS}): which one "
                         "was trained last cannot be told", path=folder,
                         fix="remove the stale one (or train again into an empty folder)")
    if not (mlx or peft):
        if (folder / "adapter_model.bin").is_file():
            raise ModelError("PEFT adapter saved as adapter_model.bin (pickle), not safetensors", path=folder,
                             fix="save it again with model.save_pretrained(dir, safe_serialization=True)")
        raise ModelError(f"no adapter here: {_EXPECTED}", path=folder, fix=_FOLDER_FIX)
    if not (folder / ADAPTER_CONFIG).is_file():
        raise ModelError(f"{MLX_WEIGHTS if mlx else PEFT_WEIGHTS} without its {ADAPTER_CONFIG}", path=folder,
                         fix="copy the whole adapter folder, or train again")
    config = _read_json(folder / ADAPTER_CONFIG)
    if mlx and "peft_type" in config:
        raise ModelError(f"{MLX_WEIGHTS} (mlx-lm) next to a PEFT {ADAPTER_CONFIG}", path=folder / ADAPTER_CONFIG,
                         fix="copy the whole adapter folder from one run, or train again")
    if peft and "lora_parameters" in config:
        raise ModelError(f"{PEFT_WEIGHTS} (PEFT) next to an mlx-lm {ADAPTER_CONFIG}", path=folder / ADAPTER_CONFIG,
                         fix="copy the whole adapter folder from one run, or train again")
    return MLX if mlx else PEFT


def weights_file(adapter_dir: str | Path) -> Path:
    """The adapter's weights file, whichever format the folder holds."""
    return Path(adapter_dir) / (MLX_WEIGHTS if folder_format(adapter_dir) == MLX else PEFT_WEIGHTS)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"invalid JSON ({exc.msg})", path=path, line=exc.lineno,
                         fix="re-export the adapter; the file is damaged") from exc


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file as float32 numpy arrays, bf16 included (read in numpy: neither torch nor mlx)."""
    try:
        with open(path, "rb") as fh:
            length = struct.unpack("<Q", fh.read(8))[0]
            header, data = json.loads(fh.read(length)), fh.read()
        tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in _DTYPES:
                raise ValueError(f"tensor {name} has dtype {info['dtype']}, not a float type")
            start, end = info["data_offsets"]
            raw = np.frombuffer(data[start:end], dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])
            tensors[name] = ((raw.astype(np.uint32) << 16).view(np.float32) if info["dtype"] == "BF16"
                             else raw.astype(np.float32))
        return tensors
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot read the adapter weights ({exc})", path=path,
                         fix="re-export the adapter; the file may be truncated") from exc


# ---------------------------------------------------------------- reading either format
def load_adapter(adapter_dir: str | Path) -> Adapter:
    """Read an adapter folder written by mlx-lm (adapters.safetensors) or by PEFT (adapter_model.safetensors)."""
    folder = Path(adapter_dir)
    return load_mlx_adapter(folder) if folder_format(folder) == MLX else load_peft_adapter(folder)


def load_mlx_adapter(folder: Path) -> Adapter:
    """mlx-lm's adapter folder (what `dantes-mlx train` and `mlx_lm.lora` write)."""
    config = _read_json(folder / ADAPTER_CONFIG)
    kind = config.get("fine_tune_type", "lora")
    tensors = read_tensors(folder / MLX_WEIGHTS)
    if kind == "full":
        return Adapter("full", [], MLX, folder, config.get("model"), full_weights=tensors)
    if kind not in ("lora", "dora"):
        raise ModelError(f"fine_tune_type {kind!r} is not supported", path=folder / ADAPTER_CONFIG,
                         fix="export adapters trained with fine_tune_type lora, dora or full")
    params = config.get("lora_parameters") or {}
    if "scale" not in params:
        raise ModelError("lora_parameters has no 'scale'", path=folder / ADAPTER_CONFIG,
                         fix="mlx-lm adapters record lora_parameters.scale; re-train or add it")
    parts = _group(tensors, _MLX_KEY, {"lora_a": "a", "lora_b": "b", "m": "m"}, folder / MLX_WEIGHTS,
                   "only transformer-block linear layers (lora_a, lora_b, m) are supported")
    modules = []
    for (layer, module), p in sorted(parts.items()):
        a, b = to_peft_orientation(p["a"], p["b"])
        modules.append(LoraWeights(layer, module, a, b, float(params["scale"]), p.get("m")))
    return Adapter(kind, modules, MLX, folder, config.get("model"), float(params.get("dropout", 0.0)))


def _group(tensors: dict, pattern: re.Pattern, parts: dict[str, str], path: Path, fix: str) -> dict:
    """(layer, module) -> {"a", "b", maybe "m"} from the tensor names; unknown names and lone halves refused."""
    grouped: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        match = pattern.match(key)
        if not match:
            raise ModelError(f"unexpected tensor {key!r} in a LoRA adapter", path=path, fix=fix)
        part = parts.get(match.group(3), "m")
        grouped.setdefault((int(match.group(1)), match.group(2)), {})[part] = value
    for (layer, module), p in grouped.items():
        if "a" not in p or "b" not in p:
            raise ModelError(f"layer {layer} {module} lacks its A or B matrix", path=path,
                             fix="re-save the adapter; the file is incomplete")
    return grouped


def _pattern_value(patterns: dict, module_name: str, default):
    """PEFT's rank_pattern/alpha_pattern lookup: a key matches a module name by regex on its suffix."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default


def check_peft_options(config: dict, path: Path) -> None:
    """Refuse a PEFT adapter that is not LoRA/DoRA on linear layers, naming the setting."""
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise ModelError(f"peft_type {config.get('peft_type')!r} is not LoRA", path=path,
                         fix="only LoRA and DoRA adapters can be used")
    for setting, what, is_set, *fix in _UNSUPPORTED_PEFT:
        if is_set(config.get(setting)):
            raise ModelError(f"{setting}={config[setting]!r}: {what} cannot be held by an mlx-lm LoRA adapter",
                             path=path, fix=fix[0] if fix else f"train without {setting} (LoRA/DoRA on linear "
                                                                 "layers only)")


def load_peft_adapter(folder: Path) -> Adapter:
    """A PEFT LoRA/DoRA adapter (what the torch plugin, Unsloth or transformers + peft write)."""
    config = _read_json(folder / ADAPTER_CONFIG)
    check_peft_options(config, folder / ADAPTER_CONFIG)
    parts = _group(read_tensors(folder / PEFT_WEIGHTS), _PEFT_KEY, {"lora_A.weight": "a", "lora_B.weight": "b"},
                   folder / PEFT_WEIGHTS, "only transformer-block linear layers (lora_A, lora_B, DoRA magnitudes) "
                                          "are supported; embedding or lm_head adapters are not")
    use_dora, rslora = bool(config.get("use_dora")), bool(config.get("use_rslora"))
    if use_dora and any("m" not in p for p in parts.values()):
        raise ModelError("use_dora is set but some layers have no lora_magnitude_vector", path=folder / PEFT_WEIGHTS,
                         fix="re-save the adapter; the file is incomplete")
    modules = []
    for (layer, module), p in sorted(parts.items()):
        name = f"model.layers.{layer}.{module}"
        rank = int(p["a"].shape[0])
        alpha = float(_pattern_value(config.get("alpha_pattern"), name, config.get("lora_alpha", rank)))
        scale = alpha / math.sqrt(rank) if rslora else alpha / rank
        modules.append(LoraWeights(layer, module, p["a"], p["b"], scale, p.get("m") if use_dora else None))
    return Adapter("dora" if use_dora else "lora", modules, PEFT, folder,
                   config.get("base_model_name_or_path"), float(config.get("lora_dropout") or 0.0))


# ---------------------------------------------------------------- fitting a base model
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
    for m in adapter.modules:
        if m.module not in shapes or m.layer >= n_layers:
            raise ModelError(f"the adapter targets {m.hf_name}, which the base model does not have (its blocks "
                             f"have {n_layers} layers of {', '.join(shapes)})", path=adapter.weights_file,
                             fix="use the base model the adapter was trained on (--base-model / --model)")
        out_f, in_f = shapes[m.module]
        ok = (m.a.ndim == 2 and m.b.ndim == 2 and m.a.shape[1] == in_f and m.b.shape[0] == out_f
              and m.a.shape[0] == m.b.shape[1])
        if m.magnitude is not None:
            ok = ok and m.magnitude.shape == (out_f,)
        if not ok:
            raise ModelError(f"{m.hf_name}: A {tuple(m.a.shape)} and B {tuple(m.b.shape)} do not fit a base "
                             f"weight of shape (out, in) = {(out_f, in_f)}", path=adapter.weights_file,
                             fix=f"use the base model the adapter was trained on; {_ORIENTATION_HINT}")


# ---------------------------------------------------------------- writing mlx-lm's format
def save_tensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    """float32 safetensors, written to a temporary file then swapped in."""
    from safetensors.numpy import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(tmp),
              metadata={"format": "pt"})
    tmp.replace(path)


def write_mlx_adapter(adapter: Adapter, out_dir: str | Path, num_model_layers: int,
                      base_model: str | None = None) -> Path:
    """Write the adapter in mlx-lm's format, so `mlx_lm.load(base, adapter_path=...)` applies it.

    mlx-lm has one rank and one scale for all layers: smaller ranks are zero-padded and each layer's
    own scale is folded into its B, which leaves W + scale * B A (and DoRA's norm of it) unchanged.
    """
    if adapter.kind == "full":
        raise ModelError("full fine-tunes are already in mlx-lm's format", path=adapter.path,
                         fix="use the adapter folder as it is")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank, scale = max(m.rank for m in adapter.modules), adapter.modules[0].scale
    tensors: dict[str, np.ndarray] = {}
    for m in adapter.modules:
        a = np.zeros((rank, m.a.shape[1]), np.float32)
        b = np.zeros((m.b.shape[0], rank), np.float32)
        a[: m.rank], b[:, : m.rank] = m.a, m.b * (m.scale / scale)
        prefix = f"model.layers.{m.layer}.{m.module}"
        tensors[f"{prefix}.lora_a"], tensors[f"{prefix}.lora_b"] = to_mlx_orientation(a, b)
        if adapter.kind == "dora":
            tensors[f"{prefix}.m"] = m.magnitude
    save_tensors(tensors, out / MLX_WEIGHTS)
    config = {"model": base_model or adapter.base_model, "fine_tune_type": adapter.kind,
              "num_layers": num_model_layers - min(adapter.layers),
              "lora_parameters": {"rank": rank, "scale": scale, "dropout": adapter.dropout,
                                  "keys": adapter.target_modules},
              "converted_from": str(adapter.path)}
    write_text_atomic(out / ADAPTER_CONFIG, json.dumps(config, indent=2) + "\n")
    return out


# ---------------------------------------------------------------- the one entry the MLX commands use
def conversion_cache() -> Path:
    """Where PEFT adapters converted to mlx-lm's format are kept: <$DANTES_MLX_CACHE>/mlx-adapters."""
    return cache_dir() / "mlx-adapters"


def conversion_key(adapter_dir: Path, model_config: dict) -> str:
    """sha256 of the PEFT files, the base's shapes (the conversion was checked against them) and the converter's
    version."""
    shapes = {key: model_config.get(key) for key in _SHAPE_KEYS}
    digest = hashlib.sha256(f"{CONVERTER_VERSION}:{json.dumps(shapes, sort_keys=True)}".encode())
    for name in (ADAPTER_CONFIG, PEFT_WEIGHTS):
        digest.update(f"{name}:{sha256_of(adapter_dir / name)}".encode())
    return digest.hexdigest()


def mlx_adapter_dir(adapter_dir: str | Path, base_model_dir: str | Path) -> Path:
    """The folder `mlx_lm.load(base, adapter_path=...)` reads for this adapter: the folder itself when it holds
    mlx-lm's format; for a PEFT adapter, its mlx-lm conversion (checked against the base, written once into the
    cache, keyed by the files' content)."""
    folder = Path(adapter_dir)
    check_weights(weights_file(folder), fix=_DAMAGED_FIX)
    if folder_format(folder) == MLX:
        return folder
    config = read_model_config(base_model_dir)
    if "num_hidden_layers" not in config:
        raise ModelError("no num_hidden_layers in config.json: cannot place the PEFT adapter's layers",
                         path=Path(base_model_dir) / "config.json", fix="use a Hugging Face model folder")
    target = conversion_cache() / conversion_key(folder, config)
    if (target / MLX_WEIGHTS).is_file() and (target / ADAPTER_CONFIG).is_file():
        return target
    adapter = load_peft_adapter(folder)
    check_adapter(adapter, config)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write_mlx_adapter(adapter, tmp, config["num_hidden_layers"])
    try:
        tmp.rename(target)  # the whole folder appears at once
    except OSError:  # another process converted the same adapter first: same content
        shutil.rmtree(tmp, ignore_errors=True)
    return target
