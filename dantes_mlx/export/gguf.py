"""Our own GGUF writer for Mistral/Llama models (gguf package) and in-process llama.cpp quantization.

Why not `mlx_lm.fuse --export-gguf`: on this stack its file is refused by llama.cpp ("invalid gguf
type for tokenizer.ggml.token_type": token types written as uint32 instead of int32), and it writes
every token score as -1000, so llama.cpp's SentencePiece merges pick different pieces than the
training tokenizer. This writer takes pieces, scores and types from tokenizer.model itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from dantes_mlx.errors import ConfigError, MissingDependency, ModelError
from dantes_mlx.export.bpe import is_byte_level, load_bpe_vocab, supported_pre_tokenizers
from dantes_mlx.export.vocab import Vocab, load_vocab
from dantes_mlx.models.config import rope_scaling, rope_theta

OUTTYPES = ("f32", "f16", "bf16")
# quantization name -> llama.cpp's LLAMA_FTYPE_* value (include/llama.h).
QUANT_TYPES = {
    "f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10,
    "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16,
    "q5_k_m": 17, "q6_k": 18, "iq4_nl": 25, "iq4_xs": 30, "bf16": 32,
}
# HF model_type -> the llama.cpp architecture the GGUF is written as.
ARCHITECTURES = {"mistral": "llama", "llama": "llama", "qwen2": "qwen2"}
# llama-quantize's short names for the K-quant mixes it recommends.
QUANT_ALIASES = {"q3_k": "q3_k_m", "q4_k": "q4_k_m", "q5_k": "q5_k_m"}


def quant_name(qtype: str) -> str:
    """The canonical quantization name: lower case, llama-quantize's aliases resolved (Q4_K -> q4_k_m)."""
    key = qtype.strip().lower()
    key = QUANT_ALIASES.get(key, key)
    if key not in QUANT_TYPES:
        raise ConfigError(f"unknown quantization {qtype!r}",
                          fix=f"use one of {', '.join(QUANT_TYPES)} (or {', '.join(QUANT_ALIASES)})")
    return key


_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_GGUF_LAYER = re.compile(r"^blk\.(\d+)\.(.+)\.(weight|bias)$")
_LAYER_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
_TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight",
              "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
_SKIPPED = re.compile(r"rotary_emb\.inv_freq$")


def gguf_tensor_name(hf_name: str) -> str:
    """llama.cpp's name for a HF/MLX Llama-family tensor (`blk.N.attn_q.weight`...)."""
    if hf_name in _TOP_NAMES:
        return _TOP_NAMES[hf_name]
    match = _LAYER.match(hf_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"blk.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.{match.group(3)}"
    raise ModelError(f"tensor {hf_name!r} has no llama.cpp equivalent in the llama/qwen2 architectures",
                     fix=f"export a model of model_type {', '.join(ARCHITECTURES)}")


def hf_tensor_name(gguf_name: str) -> str | None:
    """The HF/MLX name of a llama.cpp tensor (`blk.N.attn_q.weight` -> `model.layers.N.self_attn.q_proj.weight`),
    or None when the Llama-family layout has no such tensor."""
    top = {v: k for k, v in _TOP_NAMES.items()}
    if gguf_name in top:
        return top[gguf_name]
    layer = {v: k for k, v in _LAYER_NAMES.items()}
    match = _GGUF_LAYER.match(gguf_name)
    if match and match.group(2) in layer:
        return f"model.layers.{match.group(1)}.{layer[match.group(2)]}.{match.group(3)}"
    return None


def permute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows from HF's rotate-half RoPE layout to llama.cpp's interleaved pairs.

    Applies to q_proj (n_head = attention heads), k_proj (n_head = KV heads) and to a LoRA B
    matrix of those projections, whose rows are the projection's output features.
    """
    head_dim = weight.shape[0] // n_head
    return (weight.reshape(n_head, 2, head_dim // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def unpermute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of `permute_qk`: llama.cpp's interleaved q/k rows back to HF's rotate-half layout."""
    head_dim = weight.shape[0] // n_head
    return (weight.reshape(n_head, head_dim // 2, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def read_config(model_dir: str | Path) -> dict:
    """config.json of a model folder, checked to be an architecture this writer turns into a GGUF."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ModelError("no config.json in the model folder", path=model_dir,
                         fix="point to a Hugging Face or MLX model folder")
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("model_type") not in ARCHITECTURES:
        raise ModelError(f"model_type {config.get('model_type')!r} is not supported", path=path,
                         fix=f"the GGUF writer handles model_type {', '.join(map(repr, ARCHITECTURES))} "
                             "(Mistral, Llama 2/3 without rope scaling, SmolLM/SmolLM2, Qwen2/2.5)")
    if rope_scaling(config):
        raise ModelError("rope scaling (rope_scaling, or a rope_type in rope_parameters) is not supported by "
                         "this writer", path=path, fix="use a model without rope scaling (Mistral-7B v0.3, "
                                                       "Llama 3 before 3.1, SmolLM2 and Qwen2.5 have none)")
    if config.get("use_sliding_window"):
        raise ModelError("use_sliding_window is set: llama.cpp's qwen2 runs full attention", path=path,
                         fix="use a model without sliding-window attention")
    return config


def read_vocab(model_dir: str | Path, config: dict) -> Vocab:
    """The folder's vocabulary for the GGUF: SentencePiece (tokenizer.model, or a byte-fallback BPE
    tokenizer.json) or byte-level BPE; any other tokenizer is refused, naming the supported ones."""
    model_dir = Path(model_dir)
    tokenizer_json = model_dir / "tokenizer.json"
    if not (model_dir / "tokenizer.model").is_file() and tokenizer_json.is_file():
        try:
            data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelError(f"invalid JSON: {exc.msg}", path=tokenizer_json, line=exc.lineno,
                             fix="restore the file from the original model") from exc
        if is_byte_level(data):
            return load_bpe_vocab(model_dir, config["vocab_size"], data)
        model = data.get("model") or {}
        if not (model.get("type") == "BPE" and model.get("byte_fallback")):
            raise ModelError(f"tokenizer.json is a {model.get('type')} tokenizer, not one the GGUF writer handles",
                             path=tokenizer_json,
                             fix="supported: SentencePiece (tokenizer.model, or a BPE tokenizer.json with byte "
                                 f"fallback: Mistral, Llama 2) and byte-level BPE ({supported_pre_tokenizers()})")
    return load_vocab(model_dir, config["vocab_size"])


def _dequantize(weights: Mapping[str, Any], config: dict) -> dict[str, Any]:
    """Turn MLX-quantized weights (weight + scales + biases) back into float arrays (QLoRA bases)."""
    quant = config.get("quantization") or config.get("quantization_config")
    if not quant:
        return dict(weights)
    import mlx.core as mx

    out = {}
    for name, value in weights.items():
        if name.endswith((".scales", ".biases")):
            continue
        prefix = name[: -len(".weight")] if name.endswith(".weight") else None
        if prefix and f"{prefix}.scales" in weights:
            params = quant.get(prefix, quant) if isinstance(quant.get(prefix), dict) else quant
            value = mx.dequantize(mx.array(value), mx.array(weights[f"{prefix}.scales"]),
                                  weights.get(f"{prefix}.biases"), group_size=params["group_size"],
                                  bits=params["bits"], mode=params.get("mode", "affine"))
        out[name] = value
    return out


def load_weights(model_dir: str | Path) -> dict[str, Any]:
    """All tensors of a HF/MLX folder's safetensors files (MLX arrays, loaded lazily), dequantized."""
    import mlx.core as mx

    files = sorted(Path(model_dir).glob("*.safetensors"))
    files = [f for f in files if not f.name.startswith("adapter")]
    if not files:
        raise ModelError("no *.safetensors weights in the model folder", path=model_dir,
                         fix="download the full model (not only its tokenizer) or run mlx_lm.fuse")
    weights: dict[str, Any] = {}
    for file in files:
        weights.update(mx.load(str(file)))
    return _dequantize(weights, read_config(model_dir))


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value.astype(np.float32, copy=False)
    import mlx.core as mx

    if isinstance(value, mx.array):
        return np.array(value.astype(mx.float32))
    return np.asarray(value, dtype=np.float32)  # torch tensors expose __array__ on CPU


def _encode(array: np.ndarray, outtype: str) -> tuple[np.ndarray, Any]:
    """(data, raw ggml type) for one tensor; 1-D tensors (norms) stay f32 as llama.cpp expects."""
    if array.ndim == 1 or outtype == "f32":
        return array.astype(np.float32), None
    if outtype == "f16":
        return array.astype(np.float16), None
    import gguf

    return gguf.quants.quantize(array, gguf.GGMLQuantizationType.BF16), gguf.GGMLQuantizationType.BF16


def _add_model_metadata(writer, config: dict, name: str, outtype: str) -> None:
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    writer.add_name(name)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_context_length(config.get("max_position_embeddings", 4096))
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_file_type(QUANT_TYPES[outtype])


def add_vocab(writer, vocab: Vocab) -> None:
    """Write the vocabulary the way llama.cpp's `llama` (SentencePiece) or `gpt2` (byte-level BPE)
    tokenizer reads it."""
    import gguf

    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    if vocab.model == "llama":
        writer.add_token_scores([float(s) for s in vocab.scores])
    # int32 array: llama.cpp refuses the uint32 token types some writers emit.
    writer.add_key_value(gguf.Keys.Tokenizer.TOKEN_TYPE, [int(t) for t in vocab.types],
                         gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.INT32)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    for value, add in ((vocab.bos_id, writer.add_bos_token_id), (vocab.eos_id, writer.add_eos_token_id),
                       (vocab.unk_id, writer.add_unk_token_id), (vocab.pad_id, writer.add_pad_token_id)):
        if value is not None:
            add(value)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.model == "llama":
        writer.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def write_gguf(model_dir: str | Path, out_path: str | Path, *, outtype: str = "f16",
               weights: Mapping[str, Any] | None = None, vocab: Vocab | None = None,
               name: str | None = None) -> Path:
    """Write a Mistral/Llama/Qwen2 HF or MLX folder as a llama.cpp GGUF (architecture `llama` or `qwen2`).

    `model_dir` gives config.json and the tokenizer; `weights` (HF names -> MLX/numpy arrays), when
    given, replaces the folder's safetensors, e.g. with adapters already fused. A quantized MLX
    base is dequantized first. `vocab` overrides the tokenizer read from the folder (`read_vocab`).
    The file is written atomically; quantize it afterwards with `quantize()`.
    """
    import gguf

    if outtype not in OUTTYPES:
        raise ConfigError(f"unknown GGUF output type {outtype!r}",
                          fix=f"use one of {', '.join(OUTTYPES)}; quantize afterwards for q8_0, q4_k_m...")
    model_dir, out_path = Path(model_dir), Path(out_path)
    config = read_config(model_dir)
    if weights is None:
        weights = load_weights(model_dir)
    else:
        weights = _dequantize(weights, config)
    vocab = vocab or read_vocab(model_dir, config)
    arch = ARCHITECTURES[config["model_type"]]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch, use_temp_file=True)
    _add_model_metadata(writer, config, name or model_dir.name, outtype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_vocab(writer, vocab)
    for hf_name in sorted(weights, key=_tensor_order):
        if _SKIPPED.search(hf_name):
            continue
        array = rope_layout(_to_numpy(weights[hf_name]), hf_name, config)
        data, raw_dtype = _encode(array, outtype)
        writer.add_tensor(gguf_tensor_name(hf_name), data, raw_dtype=raw_dtype)
    return finish_gguf(writer, tmp, out_path)


def rope_layout(array: np.ndarray, hf_name: str, config: dict) -> np.ndarray:
    """q/k projection rows (weights, biases, or a LoRA B) in the order llama.cpp's RoPE expects: permuted
    for the `llama` architecture (interleaved pairs), unchanged for `qwen2` (NeoX rotate-half, as HF)."""
    if ARCHITECTURES[config["model_type"]] != "llama":
        return array
    n_head = config["num_attention_heads"]
    if ".self_attn.q_proj." in hf_name:
        return permute_qk(array, n_head)
    if ".self_attn.k_proj." in hf_name:
        return permute_qk(array, config.get("num_key_value_heads") or n_head)
    return array


def finish_gguf(writer, tmp: Path, out_path: Path) -> Path:
    """Write a filled GGUFWriter to `tmp`, then move it over `out_path` (never a half-written file)."""
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        Path(tmp).unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, out_path)
    return out_path


def _tensor_order(hf_name: str) -> tuple[int, str]:
    match = _LAYER.match(hf_name)
    return (int(match.group(1)) + 1 if match else (0 if "embed" in hf_name else 10**9), hf_name)


@contextlib.contextmanager
def _stderr_into(path: Path):
    """Send stderr to `path` meanwhile: file descriptor 2 (llama.cpp's C code) and sys.stderr (where
    llama-cpp-python's log callback prints)."""
    sys.stderr.flush()
    saved_fd, saved_stream = os.dup(2), sys.stderr
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    try:
        os.dup2(target, 2)
        with open(path, "a", encoding="utf-8", buffering=1) as stream:
            sys.stderr = stream
            try:
                yield
            finally:
                sys.stderr = saved_stream
    finally:
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        os.close(target)


_FALLBACK = re.compile(r"(\d+) of (\d+) tensor\(s\) required fallback quantization")


def quantize(src_gguf: str | Path, dst_gguf: str | Path, qtype: str, *, threads: int = 0,
             log: Callable[[str], None] | None = None) -> Path:
    """Quantize a GGUF in-process with llama.cpp (`llama_model_quantize`): q8_0, q4_k_m, q5_k_m...

    llama.cpp's own log (a line per tensor it could not give the k-quant type) is kept off the terminal;
    `log` gets one line saying how many tensors fell back, and a failure quotes the end of that log.
    """
    key = quant_name(qtype)
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingDependency("llama_cpp", "quantizing GGUF files", "llama-cpp-python") from exc
    src, dst = Path(src_gguf), Path(dst_gguf)
    if not src.is_file():
        raise ModelError("GGUF file not found", path=src, fix="write it first with write_gguf()")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp, log_path = dst.with_name(dst.name + ".tmp"), dst.with_name(dst.name + ".log")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[key]
    params.nthread = threads
    # llama-cpp-python's log callback prints what this logger lets through: before any Llama(verbose=False)
    # it lets every line of the quantizer's per-tensor log through, dozens of lines for one export.
    llama_log = logging.getLogger("llama-cpp-python")
    level = llama_log.level
    llama_log.setLevel(max(level, logging.ERROR))
    try:
        with _stderr_into(log_path):
            status = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    finally:
        llama_log.setLevel(level)
        quantizer_log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
        log_path.unlink(missing_ok=True)
    if status != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = " | ".join(quantizer_log.strip().splitlines()[-3:])
        raise ModelError(f"llama.cpp could not quantize to {key} (status {status}){': ' + tail if tail else ''}",
                         path=src, fix="check that the file loads in llama.cpp; k-quants need row sizes "
                                       "that are multiples of 256")
    fallback = _FALLBACK.search(quantizer_log)
    if fallback and log is not None:
        log(f"llama.cpp gave {fallback.group(1)} of {fallback.group(2)} tensors another type than {key} "
            "(k-quants need rows that are multiples of 256)")
    os.replace(tmp, dst)
    return dst
