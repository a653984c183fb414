"""Merge an adapter into the (dequantized) base weights with mlx-lm's own LoRA/DoRA `fuse()`."""

from __future__ import annotations

from typing import Any, Mapping

from tqdm import tqdm

from dantes_mlx.errors import ModelError
from dantes_mlx.adapter_format import Adapter, LoraWeights


def _fused_layer(weight: Any, module: LoraWeights) -> Any:
    """W + scale * B A (DoRA: rows renormed to the learned magnitude), computed in float32 by mlx-lm."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.tuner.dora import DoRALinear
    from mlx_lm.tuner.lora import LoRALinear

    weight = mx.array(weight).astype(mx.float32)
    out_f, in_f = weight.shape
    linear = nn.Linear(in_f, out_f, bias=False)
    linear.weight = weight
    cls = DoRALinear if module.magnitude is not None else LoRALinear
    layer = cls.from_base(linear, r=module.rank, scale=module.scale)
    layer.lora_a, layer.lora_b = mx.array(module.a.T), mx.array(module.b.T)  # mlx-lm's (in, r), (r, out)
    if module.magnitude is not None:
        layer.m = mx.array(module.magnitude)
    return layer.fuse(dequantize=True).weight


def fuse_adapter(weights: Mapping[str, Any], adapter: Adapter) -> dict[str, Any]:
    """Base tensors (HF names -> arrays, already dequantized) with the adapter merged in.

    A full fine-tune's tensors replace the base ones. Shapes must have been checked with
    `peft.check_adapter` against the base config.
    """
    fused = dict(weights)
    for name, value in adapter.full_weights.items():
        if name not in fused or tuple(fused[name].shape) != tuple(value.shape):
            raise ModelError(f"fine-tuned tensor {name} {tuple(value.shape)} has no match in the base model",
                             path=adapter.path, fix="export with the base model it was trained on")
        fused[name] = value
    for module in tqdm(adapter.modules, desc="fuse adapter", unit="layer", leave=False,
                       disable=not adapter.modules):
        if module.hf_name not in fused:
            raise ModelError(f"the base model has no tensor {module.hf_name}", path=adapter.path,
                             fix="export with the base model the adapter was trained on")
        fused[module.hf_name] = _fused_layer(fused[module.hf_name], module)
    return fused
