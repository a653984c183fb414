"""GGUF -> a Hugging Face / mlx-lm model folder: dequantized safetensors, config.json, tokenizer, chat template.

Fine-tuning needs float weights, and a GGUF is often the only copy of a model at hand (the embedded
SmolLM2 is one). Tensors are dequantized with gguf-py and renamed back to HF names; llama q/k rows
get HF's rotate-half order back. The tokenizer is built by transformers' own GGUF converter (fed from
gguf-py's reader, so no torch is needed) and saved with `save_pretrained`. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from dantes_mlx import __version__
from dantes_mlx.errors import ConfigError, ModelError
from dantes_mlx.export.gguf import hf_tensor_name, unpermute_qk
from dantes_mlx.models.config import SOURCE_FILE, imported_from
from dantes_mlx.models.embedded import SMOLLM2, cache_dir, resolve, sha256_of

# GGUF general.architecture -> (HF model_type, HF architectures entry)
ARCHITECTURES = {"llama": ("llama", "LlamaForCausalLM"), "qwen2": ("qwen2", "Qwen2ForCausalLM")}
# tokenizer.ggml.model values transformers' GGUF converter rebuilds and we check against llama.cpp
TOKENIZERS = {"llama": "SentencePiece", "gpt2": "byte-level BPE"}
DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2}
# dtype "auto": exact float32 for small models (the embedded 135M one: 0.5 GB), bfloat16 from this size on
AUTO_FLOAT32_BELOW = 2_000_000_000
MAX_SHARD_BYTES = 4 << 30


@dataclass
class ImportResult:
    """What `import_gguf` wrote (or found already written)."""

    out_dir: Path
    config: dict
    files: list[str] = field(default_factory=list)
    reused: bool = False

    def summary(self) -> str:
        verb = "already imported" if self.reused else "imported"
        c = self.config
        return (f"{verb} -> {self.out_dir}\n  {c['model_type']}: {c['num_hidden_layers']} layers, hidden "
                f"{c['hidden_size']}, vocab {c['vocab_size']}, rope_theta {c['rope_theta']:g}, {c['torch_dtype']}\n"
                f"  train on it with: dantes-mlx train --base-model {self.out_dir}")


def open_gguf(path: str | Path):
    """gguf-py's reader over a GGUF file, with a clear error for a missing or unreadable one."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise ModelError("GGUF file not found", path=path, fix="give the path of a .gguf model file")
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, OSError, KeyError) as exc:
        raise ModelError(f"not a readable GGUF file ({exc})", path=path,
                         fix="download the file again; it may be truncated") from exc


def read_metadata(reader) -> dict[str, Any]:
    """Every key-value of the file as Python values (strings, numbers, lists)."""
    return {key: f.contents() for key, f in reader.fields.items() if not key.startswith("GGUF.")}


def check_supported(meta: dict, tensor_names: list[str], path: Path) -> None:
    """Refuse, before anything is written, a file this importer cannot turn into an equivalent folder."""
    arch = meta.get("general.architecture")
    fix = f"import a GGUF this importer supports: {describe_supported()}"
    if arch not in ARCHITECTURES:
        raise ModelError(f"GGUF architecture {arch!r} is not supported", path=path, fix=fix)
    kind = meta.get("tokenizer.ggml.model")
    if kind not in TOKENIZERS:
        raise ModelError(f"tokenizer.ggml.model {kind!r} is not supported", path=path, fix=fix)
    scaling = meta.get(f"{arch}.rope.scaling.type")
    if meta.get(f"{arch}.expert_count") or (scaling and scaling != "none") or "rope_freqs.weight" in tensor_names:
        raise ModelError("mixture-of-experts and RoPE-scaled models (Llama 3.1 and later) are not supported",
                         path=path, fix=fix)
    unknown = [n for n in tensor_names if hf_tensor_name(n) is None]
    if unknown:
        raise ModelError(f"tensors with no Llama-family equivalent: {', '.join(unknown[:5])}", path=path, fix=fix)


def hf_config(meta: dict, tensor_names: list[str], dtype: str) -> dict:
    """config.json for the folder, from the GGUF's metadata (rope_theta, rms_norm_eps, tied embeddings...)."""
    arch = meta["general.architecture"]
    model_type, class_name = ARCHITECTURES[arch]
    hidden, heads = int(meta[f"{arch}.embedding_length"]), int(meta[f"{arch}.attention.head_count"])
    head_dim = int(meta.get(f"{arch}.attention.key_length") or hidden // heads)
    rope_dim = int(meta.get(f"{arch}.rope.dimension_count") or head_dim)
    if rope_dim != head_dim:
        raise ModelError(f"partial rotary embeddings ({rope_dim} of {head_dim} dims) are not supported",
                         fix=f"import a GGUF this importer supports: {describe_supported()}")
    config = {
        "architectures": [class_name], "model_type": model_type, "hidden_size": hidden,
        "intermediate_size": int(meta[f"{arch}.feed_forward_length"]),
        "num_hidden_layers": int(meta[f"{arch}.block_count"]), "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get(f"{arch}.attention.head_count_kv") or heads),
        "max_position_embeddings": int(meta.get(f"{arch}.context_length") or 4096),
        # stored as float32 in the GGUF: 1e-5 reads 9.999999747e-06, so round back to what was written
        "rms_norm_eps": float(f"{float(meta.get(f'{arch}.attention.layer_norm_rms_epsilon') or 1e-5):.7g}"),
        "rope_theta": float(meta.get(f"{arch}.rope.freq_base") or 10000.0),
        "vocab_size": int(meta.get(f"{arch}.vocab_size") or len(meta["tokenizer.ggml.tokens"])),
        "tie_word_embeddings": "output.weight" not in tensor_names, "hidden_act": "silu",
        "torch_dtype": dtype,
    }
    if head_dim != hidden // heads:
        config["head_dim"] = head_dim
    if model_type == "llama":
        config.update(attention_bias=any(n.endswith("attn_q.bias") for n in tensor_names), mlp_bias=False)
    else:
        config.update(use_sliding_window=False, max_window_layers=config["num_hidden_layers"])
    for key in ("bos", "eos", "pad"):
        if f"tokenizer.ggml.{key}_token_id" in meta:
            config[f"{key}_token_id"] = int(meta[f"tokenizer.ggml.{key}_token_id"])
    return config


def hf_tokenizer(meta: dict):
    """A transformers fast tokenizer built by transformers' GGUF converter from the file's vocabulary.

    transformers' own `from_pretrained(gguf_file=...)` reads the file with a torch-based reader; this
    feeds the same converter (`convert_gguf_tokenizer`) with what gguf-py read, mirroring its
    `get_gguf_tokenizer`: special tokens by id, chat template, add_bos/add_eos.
    """
    import transformers
    from transformers import PreTrainedTokenizerFast

    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (GGUF_TOKENIZER_MAPPING,
                                                                             convert_gguf_tokenizer)
    except ImportError as exc:
        raise ModelError(f"transformers {transformers.__version__} has no GGUF tokenizer converter that runs "
                         "without torch (transformers.integrations.gguf)",
                         fix="pip install -U transformers (5.x)") from exc

    groups = {group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items()
                      if f"tokenizer.{key}" in meta}
              for group, renames in GGUF_TOKENIZER_MAPPING.items()}
    tokenizer_dict, options = groups["tokenizer"], groups["tokenizer_config"]
    if tokenizer_dict.get("tokenizer_type") == "llama":
        options.setdefault("add_bos_token", True)  # llama.cpp's default for a SentencePiece vocabulary
    tokens = tokenizer_dict["tokens"]
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        token_id = meta.get(f"tokenizer.ggml.{key}")
        if token_id is not None and 0 <= int(token_id) < len(tokens):
            options[name] = tokens[int(token_id)]
    arch = meta["general.architecture"]
    options.setdefault("model_max_length", int(meta.get(f"{arch}.context_length") or 4096))
    backend, extra = convert_gguf_tokenizer(arch, tokenizer_dict)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **options, **extra)


def save_tokenizer(tokenizer, out: Path) -> None:
    """save_pretrained, naming the class both transformers 4 and 5 load (5 writes TokenizersBackend)."""
    tokenizer.save_pretrained(str(out))
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _shards(reader, dtype: str, max_bytes: int) -> list[list]:
    """The file's tensors grouped into shards of at most `max_bytes` once dequantized to `dtype`."""
    shards, size = [[]], 0
    for tensor in reader.tensors:
        nbytes = int(np.prod(tensor.shape)) * DTYPES[dtype]
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += nbytes
    return shards


def _dequantized(tensor, config: dict, arch: str) -> np.ndarray:
    """One tensor as float32 in HF layout (llama q/k rows back in rotate-half order)."""
    import gguf

    array = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
    array = array.reshape([int(d) for d in reversed(tensor.shape)])
    if arch == "llama" and ".attn_q." in tensor.name:
        array = unpermute_qk(array, config["num_attention_heads"])
    elif arch == "llama" and ".attn_k." in tensor.name:
        array = unpermute_qk(array, config["num_key_value_heads"])
    return array


def write_weights(reader, config: dict, arch: str, out: Path, dtype: str,
                  max_shard_bytes: int = MAX_SHARD_BYTES) -> list[str]:
    """Dequantize every tensor into safetensors files (one, or shards + index); returns the file names."""
    import mlx.core as mx

    shards = _shards(reader, dtype, max_shard_bytes)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    index, total = {}, 0
    with tqdm(total=len(reader.tensors), desc="dequantize", unit="tensor", leave=False) as bar:
        for name, shard in zip(names, shards):
            arrays = {}
            for tensor in shard:
                hf_name = hf_tensor_name(tensor.name)
                arrays[hf_name] = mx.array(_dequantized(tensor, config, arch)).astype(getattr(mx, dtype))
                index[hf_name] = name
                total += arrays[hf_name].nbytes
                bar.update()
            mx.save_safetensors(str(out / name), arrays, metadata={"format": "pt"})
            del arrays
    if len(names) > 1:
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": index}, indent=2) + "\n", encoding="utf-8")
        names.append("model.safetensors.index.json")
    return names


def _source_record(path: Path, meta: dict, dtype: str) -> dict:
    return {"gguf": str(path), "sha256": sha256_of(path), "dtype": dtype,
            "architecture": meta["general.architecture"], "name": meta.get("general.name"),
            "license": meta.get("general.license"), "file_type": meta.get("general.file_type"),
            "tokenizer_model": meta.get("tokenizer.ggml.model"), "tokenizer_pre": meta.get("tokenizer.ggml.pre"),
            "dantes_mlx": __version__}


def _already_imported(out: Path, digest: str, dtype: str) -> dict | None:
    record = imported_from(out)
    if record.get("sha256") == digest and record.get("dtype") == dtype and (out / "config.json").is_file():
        return json.loads((out / "config.json").read_text(encoding="utf-8"))
    return None


def import_gguf(gguf_path: str | Path, out_dir: str | Path, *, dtype: str = "auto", force: bool = False,
                max_shard_bytes: int = MAX_SHARD_BYTES, log: Callable[[str], None] = lambda m: None) -> ImportResult:
    """Write the GGUF as an HF/mlx-lm folder in `out_dir` (built aside, then moved in place).

    `dtype` "auto" is float32 below AUTO_FLOAT32_BELOW parameters, else bfloat16. A folder already
    imported from the same file (same sha256) and dtype is reused; any other existing `out_dir` is
    refused unless `force`, which replaces it once the new one is complete.
    """
    if dtype != "auto" and dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}", fix=f"use auto or one of {', '.join(DTYPES)}")
    path, out = Path(gguf_path), Path(out_dir)
    reader = open_gguf(path)
    meta = read_metadata(reader)
    names = [t.name for t in reader.tensors]
    check_supported(meta, names, path)
    if dtype == "auto":
        n_params = sum(int(np.prod(t.shape)) for t in reader.tensors)
        dtype = "float32" if n_params < AUTO_FLOAT32_BELOW else "bfloat16"
    config = hf_config(meta, names, dtype)
    record = _source_record(path, meta, dtype)
    if out.exists():
        reused = _already_imported(out, record["sha256"], dtype)
        if reused is not None:
            return ImportResult(out, reused, sorted(p.name for p in out.iterdir()), reused=True)
        if not force and (not out.is_dir() or any(out.iterdir())):
            raise ModelError("the output folder already exists and holds something else", path=out,
                             fix="choose another -o folder, or pass --force to replace it")
    tmp = out.with_name(f".{out.name}.importing")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted import: start it again
    tmp.mkdir(parents=True)
    try:
        log("building the tokenizer with transformers' GGUF converter")
        save_tokenizer(hf_tokenizer(meta), tmp)
        log(f"dequantizing {len(names)} tensors to {dtype}")
        write_weights(reader, config, meta["general.architecture"], tmp, dtype, max_shard_bytes)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportResult(out, config, sorted(p.name for p in out.iterdir()))


def _move_into_place(tmp: Path, out: Path) -> None:
    """Replace `out` with the complete folder `tmp`; the old folder is removed only after the swap."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.replaced")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def describe_supported() -> str:
    """One line listing what the importer takes, for errors."""
    return (f"architectures {', '.join(ARCHITECTURES)} (dense, no rope scaling); tokenizers "
            + ", ".join(f"{k} ({v})" for k, v in TOKENIZERS.items()))


def embedded_folder() -> Path:
    """Where `import-gguf --embedded` puts the embedded model's folder by default."""
    return cache_dir() / SMOLLM2.member.split(".")[0]


def import_model(gguf_path: str | Path | None, out_dir: str | Path | None, *, embedded: bool = False,
                 dtype: str = "auto", force: bool = False, log: Callable[[str], None] = lambda m: None) -> ImportResult:
    """The `dantes-mlx import-gguf` stage: a GGUF file, or (`embedded`) the embedded SmolLM2, into a folder."""
    if embedded == (gguf_path is not None):
        raise ConfigError("give either a GGUF file or --embedded", fix="dantes-mlx import-gguf MODEL.gguf -o FOLDER, "
                                                                     "or dantes-mlx import-gguf --embedded")
    if embedded:
        gguf_path = resolve(SMOLLM2)
        out_dir = out_dir or embedded_folder()
    if out_dir is None:
        raise ConfigError("no output folder", fix="pass -o FOLDER")
    log(f"importing {gguf_path}")
    return import_gguf(gguf_path, out_dir, dtype=dtype, force=force, log=log)
