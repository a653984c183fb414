"""GGUF LoRA adapter (what llama.cpp's `--lora` and an Ollama Modelfile's `ADAPTER` load), gguf package.

llama.cpp reads general.type = adapter, adapter.type = lora and adapter.lora.alpha, and for each
adapted base tensor `blk.N.attn_q.weight` a pair `...lora_a` / `...lora_b` with ggml shapes
[in, rank] and [rank, out] (numpy (rank, in) and (out, rank): PEFT's own layout). It applies
W x + (alpha / rank) * B (A x). Where the base GGUF's q/k rows are permuted for llama.cpp's RoPE
layout (architecture llama), the B of q_proj/k_proj (whose rows are those same output features) is
permuted too; qwen2 keeps HF's order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dantes_mlx.adapter_format import Adapter, check_adapter
from dantes_mlx.errors import ConfigError, ModelError
from dantes_mlx.export.gguf import ARCHITECTURES, finish_gguf, gguf_tensor_name, read_config, rope_layout
from dantes_mlx.export.peft import lora_alpha

LORA_OUTTYPES = ("f32", "f16")


def lora_tensors(adapter: Adapter, config: dict) -> tuple[float, dict[str, np.ndarray]]:
    """(adapter.lora.alpha, {gguf name: array}) for an adapter on a Llama/Mistral base.

    One alpha serves the whole file: a layer whose scale or rank differs from the first layer's has
    the ratio folded into its B, so llama.cpp's alpha / rank gives every layer its own scale back.
    """
    if adapter.kind != "lora":
        raise ModelError(f"a {adapter.kind} adapter cannot be written as a GGUF LoRA (llama.cpp applies "
                         "plain low-rank deltas only)", path=adapter.path,
                         fix="use the fused GGUF, which the export also writes")
    check_adapter(adapter, config)
    ref = adapter.modules[0]
    tensors = {}
    for m in adapter.modules:
        b = rope_layout(m.b * ((m.scale * m.rank) / (ref.scale * ref.rank)), m.hf_name, config)
        base = gguf_tensor_name(m.hf_name)
        tensors[base + ".lora_a"], tensors[base + ".lora_b"] = m.a, b
    return lora_alpha(ref.scale, ref.rank), tensors


def write_gguf_lora(adapter: Adapter, base_model_dir: str | Path, out_path: str | Path, *,
                    outtype: str = "f16", name: str | None = None) -> Path:
    """Write the adapter as a llama.cpp GGUF LoRA for the base model in `base_model_dir` (atomic)."""
    import gguf

    if outtype not in LORA_OUTTYPES:
        raise ConfigError(f"unknown GGUF LoRA type {outtype!r}", fix=f"use one of {', '.join(LORA_OUTTYPES)}")
    config = read_config(base_model_dir)
    alpha, tensors = lora_tensors(adapter, config)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), ARCHITECTURES[config["model_type"]])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name or f"{Path(base_model_dir).name} LoRA")
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    dtype = np.float16 if outtype == "f16" else np.float32
    for tensor_name, array in tensors.items():
        writer.add_tensor(tensor_name, np.ascontiguousarray(array, dtype=dtype))
    return finish_gguf(writer, tmp, out_path)
