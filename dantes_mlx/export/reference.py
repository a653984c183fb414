"""The models a GGUF is compared with: the trained model (MLX, or a plugin's framework) and the base before it.

Plugins register a Reference class under their backend's name in the `dantes_mlx.references`
entry-point group; adapters that backend trained are then compared in its own framework.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import yaml

from dantes_mlx.adapter_format import mlx_adapter_dir
from dantes_mlx.models.config import mlx_model_config, read_model_config, rope_theta
from dantes_mlx.models.hub import resolve_model
from dantes_mlx.workspace import TRAIN_CONFIG_FILE

Messages = list[dict]


class Reference(Protocol):
    """The trained model the GGUF is compared with (MLX here; a plugin may pass a torch one).

    It may also have `rope_thetas`: {where: RoPE base} (config.json, the framework running it), which
    the gate checks against the GGUF's.
    """

    def render(self, messages: Messages) -> str:
        """The chat-templated text of a conversation, special tokens written out."""

    def encode(self, text: str) -> list[int]:
        """Token ids of templated text, adding no special token the text does not hold."""

    def logits(self, token_ids: list[int]) -> np.ndarray:
        """Next-token logits at every position: float array of shape (len(token_ids), vocab)."""


class MLXReference:
    """A Reference backed by mlx_lm: base model folder or repo, plus an optional adapter (mlx-lm or PEFT)."""

    def __init__(self, model_dir: str | Path, adapter_dir: str | Path | None = None):
        import mlx_lm

        self.name = str(model_dir) + (f" + {adapter_dir}" if adapter_dir else "")
        mlx_adapter = mlx_adapter_dir(adapter_dir, resolve_model(str(model_dir))) if adapter_dir else None
        self.model, self.tokenizer = mlx_lm.load(
            str(model_dir), adapter_path=str(mlx_adapter) if mlx_adapter else None,
            model_config=mlx_model_config(model_dir))
        self.rope_thetas = {"config.json": rope_theta(read_model_config(model_dir))}
        runs = getattr(getattr(self.model, "args", None), "rope_theta", None)
        if runs is not None:
            self.rope_thetas["mlx-lm"] = float(runs)

    def render(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def logits(self, token_ids: list[int]) -> np.ndarray:
        import mlx.core as mx

        if self.model is None:
            raise RuntimeError("this MLXReference was released; load a new one")
        out = self.model(mx.array([token_ids]))[0].astype(mx.float32)
        return np.array(out)

    def release(self) -> None:
        """Free the model's memory (tokenizer and chat template stay usable)."""
        import mlx.core as mx

        self.model = None
        mx.clear_cache()


# Plugins register a Reference class here under their backend's name (e.g. `unsloth`), constructed as
# Cls(model_dir, adapter_dir).
REFERENCE_GROUP = "dantes_mlx.references"


def trained_by(adapter_dir: str | Path | None) -> str | None:
    """The training backend recorded in an adapter folder's train_config.yaml (derived.backend), if any."""
    path = Path(adapter_dir) / TRAIN_CONFIG_FILE if adapter_dir else None
    if path is None or not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return None
    return (data.get("derived") or {}).get("backend") if isinstance(data, dict) else None


def _plugin_reference(adapter: str | Path | None):
    """The Reference class a plugin registered for the backend that trained `adapter`, or None."""
    backend = trained_by(adapter)
    for ep in importlib.metadata.entry_points(group=REFERENCE_GROUP):
        if backend and ep.name == backend:
            return ep.load()
    return None


def make_base_reference(model: str | Path, adapter: str | Path | None = None) -> Reference:
    """The model before fine-tuning, run by the framework that trained `adapter` (its plugin, else MLX)."""
    plugin = _plugin_reference(adapter)
    return plugin(model, None) if plugin is not None else MLXReference(model)


class LazyReference:
    """A Reference built on first use, so the base model loads only once the trained one was released."""

    def __init__(self, make: Callable[[], Reference]):
        self._make, self._reference = make, None

    def _get(self) -> Reference:
        if self._reference is None:
            self._reference = self._make()
        return self._reference

    def render(self, messages: Messages) -> str:
        return self._get().render(messages)

    def encode(self, text: str) -> list[int]:
        return self._get().encode(text)

    def logits(self, token_ids: list[int]) -> np.ndarray:
        return self._get().logits(token_ids)

    def release(self) -> None:
        if self._reference is not None and hasattr(self._reference, "release"):
            self._reference.release()


def make_reference(model: str | Path, adapter: str | Path | None = None) -> Reference:
    """The reference model for `adapter`: the plugin Reference of the backend that trained it when that
    plugin is installed, else MLX on the adapter's mlx-lm form (a PEFT adapter is converted once)."""
    plugin = _plugin_reference(adapter)
    return plugin(model, adapter) if plugin is not None else MLXReference(model, adapter)
