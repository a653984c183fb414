"""Build a tiny random Mistral model with a French SentencePiece tokenizer, as a Hugging Face folder."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

# Mistral v0.3's chat format, without the tool-calling branches: the system prompt is prepended to the
# LAST user message, roles must alternate, assistant turns end with </s>.
MISTRAL_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.last and system_message is defined %}"
    "{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}"
    "{%- else %}"
    "{{- '[INST] ' + message['content'] + '[/INST]' }}"
    "{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- ' ' + message['content'] | trim + eos_token }}"
    "{%- else %}"
    "{{- raise_exception('Only user and assistant roles are supported, with the exception of an "
    "initial optional system message.') }}"
    "{%- endif %}"
    "{%- endfor %}"
)

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 as in Mistral's tokenizer.model
CONTROL_TOKENS = ("[INST]", "[/INST]")  # ids 3, 4 as in Mistral v0.3


def builtin_corpus() -> str:
    """The French prose shipped with the package (also used by the offline demo)."""
    return resources.files("dantes_mlx.resources").joinpath("corpus_fr.txt").read_text("utf-8")


def train_tokenizer(corpus: str, vocab_size: int = 1024) -> bytes:
    """Train a Mistral-like SentencePiece BPE model (byte fallback, identity normalization) on `corpus`."""
    import sentencepiece as spm

    lines = [line.strip() for line in corpus.splitlines() if line.strip()]
    if not lines:
        raise ValueError("the tokenizer corpus is empty")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
        vocab_size=vocab_size, hard_vocab_limit=False, byte_fallback=True,
        character_coverage=1.0, normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, control_symbols=list(CONTROL_TOKENS),
        num_threads=1, shuffle_input_sentence=False, input_sentence_size=0, minloglevel=2,
    )
    return model.getvalue()


def _f16_exact(array: np.ndarray) -> np.ndarray:
    """Round to float16 and back, so an f16 GGUF holds exactly the weights MLX computes with."""
    return array.astype(np.float16).astype(np.float32)


def random_weights(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random Mistral weights, scaled so attention is sharp and next-token logits are well spread."""
    rng = np.random.default_rng(seed)
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    head_dim = config["head_dim"]
    q_out = config["num_attention_heads"] * head_dim
    kv_out = config["num_key_value_heads"] * head_dim

    def matrix(rows: int, cols: int, gain: float) -> np.ndarray:
        return _f16_exact(rng.normal(0.0, gain / np.sqrt(cols), (rows, cols)))

    def norm() -> np.ndarray:
        return _f16_exact(1.0 + 0.1 * rng.normal(size=hidden))

    weights = {"model.embed_tokens.weight": matrix(config["vocab_size"], hidden, np.sqrt(hidden))}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        weights.update({
            p + "input_layernorm.weight": norm(),
            p + "self_attn.q_proj.weight": matrix(q_out, hidden, 1.0),
            p + "self_attn.k_proj.weight": matrix(kv_out, hidden, 1.0),
            p + "self_attn.v_proj.weight": matrix(kv_out, hidden, 1.0),
            p + "self_attn.o_proj.weight": matrix(hidden, q_out, 1.0),
            p + "post_attention_layernorm.weight": norm(),
            p + "mlp.gate_proj.weight": matrix(inter, hidden, 1.0),
            p + "mlp.up_proj.weight": matrix(inter, hidden, 1.0),
            p + "mlp.down_proj.weight": matrix(hidden, inter, 1.0),
        })
    weights["model.norm.weight"] = norm()
    weights["lm_head.weight"] = matrix(config["vocab_size"], hidden, 4.0)
    return weights


def mistral_config(vocab_size: int, hidden_size: int, num_layers: int, num_heads: int,
                   num_kv_heads: int, intermediate_size: int, max_positions: int = 2048) -> dict:
    """A Hugging Face config.json for a Mistral model (GQA, no sliding window, untied embeddings)."""
    return {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral",
        "vocab_size": vocab_size, "hidden_size": hidden_size, "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers, "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads, "head_dim": hidden_size // num_heads,
        "hidden_act": "silu", "max_position_embeddings": max_positions, "rms_norm_eps": 1e-5,
        "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32", "attention_dropout": 0.0,
        "initializer_range": 0.02, "use_cache": True,
    }


def _tokenizer_config(max_positions: int) -> dict:
    added = {str(i): {"content": tok, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True}
             for i, tok in enumerate(SPECIAL_TOKENS + CONTROL_TOKENS)}
    return {
        "tokenizer_class": "LlamaTokenizer", "added_tokens_decoder": added,
        "add_bos_token": True, "add_eos_token": False, "legacy": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "clean_up_tokenization_spaces": False, "spaces_between_special_tokens": False,
        "model_max_length": max_positions, "use_default_system_prompt": False,
        "chat_template": MISTRAL_CHAT_TEMPLATE,
    }


def save_tokenizer(sp_model: bytes, out_dir: Path, max_positions: int = 2048) -> None:
    """Write tokenizer.model + tokenizer_config.json, then let transformers convert it to tokenizer.json."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        (src / "tokenizer.model").write_bytes(sp_model)
        (src / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(max_positions)))
        # Loading the folder (not LlamaTokenizer(vocab_file=...)) makes transformers convert the SP
        # model properly; the direct constructor yields a tokenizer that encodes French to [].
        tokenizer = AutoTokenizer.from_pretrained(src)
        tokenizer.save_pretrained(out_dir)
    (out_dir / "tokenizer.model").write_bytes(sp_model)
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def build_tiny_model(out_dir: str | Path, corpus: str | None = None, *, vocab_size: int = 1024,
                     hidden_size: int = 256, num_layers: int = 2, num_heads: int = 4,
                     num_kv_heads: int = 2, intermediate_size: int = 768, seed: int = 0) -> Path:
    """Write a tiny random Mistral model that mlx_lm.load opens; returns the folder.

    The tokenizer is a SentencePiece BPE with byte fallback trained on `corpus` (default: the
    package's French text); `vocab_size` is an upper bound, config.json holds the real size.
    Keep `hidden_size` and `intermediate_size` multiples of 256 so k-quants apply to every matrix.
    """
    import sentencepiece as spm

    sp_model = train_tokenizer(corpus if corpus is not None else builtin_corpus(), vocab_size)
    n_vocab = spm.SentencePieceProcessor(model_proto=sp_model).get_piece_size()
    config = mistral_config(n_vocab, hidden_size, num_layers, num_heads, num_kv_heads,
                            intermediate_size)
    return write_model_folder(out_dir, config, random_weights(config, seed),
                              lambda folder: save_tokenizer(sp_model, folder, config["max_position_embeddings"]))


def write_model_folder(out_dir: str | Path, config: dict, weights: dict[str, np.ndarray],
                       save_tokenizer: Callable[[Path], None]) -> Path:
    """config.json, model.safetensors and the tokenizer, written in a folder beside `out_dir`, then moved there."""
    from safetensors.numpy import save_file

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    save_tokenizer(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
