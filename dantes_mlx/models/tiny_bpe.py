"""Tiny random Llama / Qwen2 models with a French byte-level BPE tokenizer (ChatML), as Hugging Face folders.

The byte-level counterpart of tiny.py (SentencePiece Mistral): same random weights, a GPT-2-style
tokenizer trained with `tokenizers` (digits split first, as SmolLM2's; or GPT-2's or Llama 3's
pre-tokenizer), and tied embeddings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dantes_mlx.models.tiny import builtin_corpus, random_weights, write_model_folder

# SmolLM2's special tokens, at its ids, and a ChatML template like its own (without the default system).
BPE_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def _pre_tokenizer(pre: str):
    """The `tokenizers` pre-tokenizer llama.cpp runs under the name `pre` (smollm, gpt-2, llama-bpe)."""
    from tokenizers import Regex, pre_tokenizers
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if pre == "smollm":  # digits one by one, then GPT-2's regex
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre == "gpt-2":
        return byte_level
    if pre == "llama-bpe":  # Llama 3's split regex, then bytes
        split = pre_tokenizers.Split(Regex(GGUF_PRE_TOKENIZER_SPLITS[pre]), behavior="isolated")
        return pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raise ValueError(f"unknown pre-tokenizer {pre!r}: smollm, gpt-2 or llama-bpe")


def train_bpe_tokenizer(corpus: str, vocab_size: int = 1024, pre: str = "smollm"):
    """A byte-level BPE `tokenizers.Tokenizer` trained on `corpus` after llama.cpp's pre-tokenizer `pre`
    (Llama 3's `llama-bpe` also takes whole words found in the vocabulary, as Llama 3 does)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    lines = [line.strip() for line in corpus.splitlines() if line.strip()]
    if not lines:
        raise ValueError("the tokenizer corpus is empty")
    tokenizer = Tokenizer(models.BPE(ignore_merges=pre == "llama-bpe"))
    tokenizer.pre_tokenizer = _pre_tokenizer(pre)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BPE_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(lines, trainer)
    return tokenizer


def bpe_config(model_type: str, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int,
               num_kv_heads: int, intermediate_size: int) -> dict:
    """config.json of a tiny Llama or Qwen2 model with tied embeddings (as SmolLM2 and Qwen2.5-0.5B)."""
    config = {
        "architectures": [MODEL_TYPES[model_type]], "model_type": model_type, "vocab_size": vocab_size,
        "hidden_size": hidden_size, "intermediate_size": intermediate_size, "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads, "num_key_value_heads": num_kv_heads, "head_dim": hidden_size // num_heads,
        "hidden_act": "silu", "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    }
    if model_type == "qwen2":
        config.update(use_sliding_window=False, max_window_layers=num_layers)
    return config


def _weights(config: dict, seed: int) -> dict[str, np.ndarray]:
    """random_weights with the output matrix as the (tied) embeddings, plus q/k/v biases for Qwen2."""
    weights = random_weights(config, seed)
    weights["model.embed_tokens.weight"] = weights.pop("lm_head.weight")
    if config["model_type"] == "qwen2":
        rng = np.random.default_rng(seed + 1)
        for name in [n for n in weights if n.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight"))]:
            rows = weights[name].shape[0]
            bias = rng.normal(0.0, 0.1, rows).astype(np.float16).astype(np.float32)
            weights[name.replace(".weight", ".bias")] = bias
    return weights


def save_bpe_tokenizer(tokenizer, out_dir: Path, max_positions: int = 2048) -> None:
    """tokenizer.json + tokenizer_config.json (special tokens, ChatML template) through transformers."""
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                      unk_token="<|endoftext|>", pad_token="<|im_end|>",
                                      chat_template=CHATML_TEMPLATE, model_max_length=max_positions)
    wrapped.save_pretrained(str(out_dir))


def build_tiny_bpe_model(out_dir: str | Path, corpus: str | None = None, *, model_type: str = "llama",
                         pre: str = "smollm", vocab_size: int = 1024, hidden_size: int = 256,
                         num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                         intermediate_size: int = 768, seed: int = 0) -> Path:
    """Write a tiny random Llama or Qwen2 model with a byte-level BPE tokenizer; returns the folder."""
    tokenizer = train_bpe_tokenizer(corpus if corpus is not None else builtin_corpus(), vocab_size, pre)
    config = bpe_config(model_type, tokenizer.get_vocab_size(), hidden_size, num_layers, num_heads, num_kv_heads,
                        intermediate_size)
    return write_model_folder(out_dir, config, _weights(config, seed),
                              lambda folder: save_bpe_tokenizer(tokenizer, folder, config["max_position_embeddings"]))
