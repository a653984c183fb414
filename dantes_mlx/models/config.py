"""What a model's config.json says, wherever a transformers version keeps it (rope_theta, rope scaling).

transformers 5 re-saves a config with `rope_theta` and the scaling only under `rope_parameters`;
mlx-lm's llama reads the top-level keys alone and silently falls back to 10000. Every reader of
these values in dantes-mlx goes through here, and `mlx_model_config` hands mlx-lm the same values.
"""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_ROPE_THETA = 10000.0
# Written by `dantes-mlx import-gguf` into the folder: the GGUF it came from and what it said.
SOURCE_FILE = "gguf_source.json"
_PLAIN_ROPE = (None, "default")


def _rope_parameters(config: dict) -> dict:
    """transformers 5's rope_parameters (one dict; the first layer type's when keyed by layer type)."""
    params = config.get("rope_parameters") or {}
    if params and all(isinstance(v, dict) for v in params.values()):
        params = next(iter(params.values()))
    return params


def rope_theta(config: dict) -> float:
    """The RoPE base frequency: top-level rope_theta, else rope_parameters' (transformers 5), else 10000."""
    value = config.get("rope_theta")
    if value is None:
        value = _rope_parameters(config).get("rope_theta")
    return float(value if value is not None else DEFAULT_ROPE_THETA)


def rope_scaling(config: dict) -> dict | None:
    """The RoPE scaling settings (llama3, yarn, linear...), or None for plain RoPE."""
    if config.get("rope_scaling"):
        return config["rope_scaling"]
    params = _rope_parameters(config)
    kind = params.get("rope_type", params.get("type"))
    return params if kind not in _PLAIN_ROPE else None


def read_model_config(model_dir: str | Path) -> dict:
    """config.json of a model folder as a dict ({} when there is none)."""
    path = Path(model_dir) / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def imported_from(model_dir: str | Path) -> dict:
    """The SOURCE_FILE record of a folder imported from a GGUF ({} for any other folder)."""
    path = Path(model_dir) / SOURCE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def mlx_model_config(model_dir: str | Path) -> dict:
    """Overrides for `mlx_lm.load(..., model_config=...)` so mlx-lm runs the RoPE the config declares
    even when transformers 5 keeps it only under rope_parameters ({} when nothing needs overriding)."""
    config = read_model_config(model_dir)
    overrides = {}
    if "rope_theta" not in config and _rope_parameters(config).get("rope_theta") is not None:
        overrides["rope_theta"] = rope_theta(config)
    if not config.get("rope_scaling") and rope_scaling(config):
        overrides["rope_scaling"] = rope_scaling(config)
    return overrides
