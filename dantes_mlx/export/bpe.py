"""Byte-level BPE vocabularies (GPT-2 style: Llama 3, SmolLM2, Qwen2) for the GGUF writer.

As llama.cpp's convert_hf_to_gguf.py does: token types from transformers' added tokens, merges and
special token ids from gguf-py's SpecialVocab, and `tokenizer.ggml.pre` (the pre-tokenizer llama.cpp
runs before the merges) recognized from the hash of how the tokenizer splits llama.cpp's check text.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dantes_mlx.errors import ModelError
from dantes_mlx.export.vocab import CONTROL, NORMAL, UNUSED, USER_DEFINED, Vocab, read_chat_template
from dantes_mlx.models.config import imported_from

# llama.cpp's check text (convert_hf_to_gguf.py, get_vocab_base_pre): spaces, emoji, digit runs, scripts,
# apostrophes; how a tokenizer cuts it tells pre-tokenizers apart.
CHECK_TEXT = ("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis "
              "concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
              "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български "
              "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? "
              "'M not sure I'll make it, 'D you like some tea? We'Ve a'lL")
# llama.cpp pre-tokenizer -> the models that use it; the ones this writer is checked to handle.
PRE_TOKENIZERS = {
    "llama-bpe": "Llama 3", "smollm": "SmolLM, SmolLM2", "qwen2": "Qwen2, Qwen2.5",
    "deepseek-r1-qwen": "DeepSeek-R1-Distill-Qwen", "tekken": "Mistral Nemo", "falcon3": "Falcon3",
    "gpt-2": "GPT-2",
}
# sha256(str(tokenizer.encode(CHECK_TEXT))) -> pre-tokenizer, the values convert_hf_to_gguf.py records.
KNOWN_HASHES = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
}
# What convert_hf_to_gguf.py treats as special even when the tokenizer does not say so.
_LOOKS_SPECIAL = ("<pad>", "<mask>")


def supported_pre_tokenizers() -> str:
    """The byte-level BPE families the writer handles, for error messages."""
    return ", ".join(f"{models} ({name})" for name, models in PRE_TOKENIZERS.items())


def is_byte_level(tokenizer_json: dict) -> bool:
    """True for a GPT-2-style BPE: merges over a byte alphabet, no SentencePiece byte fallback."""
    model = tokenizer_json.get("model") or {}
    decoder = tokenizer_json.get("decoder") or {}
    return model.get("type") == "BPE" and not model.get("byte_fallback") and "ByteLevel" in json.dumps(decoder)


def check_hash(tokenizer) -> str:
    """The hash convert_hf_to_gguf.py computes (special tokens added as the tokenizer adds them)."""
    return hashlib.sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()


def _imported_pre(model_dir: Path) -> str | None:
    """tokenizer.ggml.pre of the GGUF a folder was imported from (`dantes-mlx import-gguf`), if any."""
    pre = imported_from(model_dir).get("tokenizer_pre")
    return pre if pre in PRE_TOKENIZERS else None


def _structure_pre(tokenizer_json: dict) -> str | None:
    """The pre-tokenizer name read from tokenizer.json's pre_tokenizer, for the recipes known by heart:
    ByteLevel's own regex (gpt-2), digits split first (smollm), or a Split regex transformers' GGUF
    support maps to a llama.cpp name (llama-bpe, qwen2...)."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    except ImportError:  # an older transformers: the Split-regex recipes are not recognized
        GGUF_PRE_TOKENIZER_SPLITS = {}
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps or []]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True) and not steps[0].get("add_prefix_space"):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        return next((name for name in PRE_TOKENIZERS if GGUF_PRE_TOKENIZER_SPLITS.get(name) == regex), None)
    return None


def pre_tokenizer_name(tokenizer, model_dir: Path, tokenizer_json: dict) -> str:
    """llama.cpp's name for the folder's pre-tokenizer: by hash, else the GGUF it came from, else by
    structure; a ModelError listing the supported families when none of them knows it."""
    name = KNOWN_HASHES.get(check_hash(tokenizer)) or _imported_pre(model_dir) or _structure_pre(tokenizer_json)
    if name is None:
        raise ModelError("the byte-level BPE tokenizer's pre-tokenizer is not one llama.cpp is known to run "
                         f"the same way (hash {check_hash(tokenizer)[:16]}…)", path=model_dir / "tokenizer.json",
                         fix=f"export a model with one of these tokenizers: {supported_pre_tokenizers()}; "
                             "or a SentencePiece tokenizer (Mistral, Llama 2)")
    return name


def _token_types(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and llama.cpp token types: added special tokens CONTROL, other added ones USER_DEFINED."""
    reverse = {i: token for token, i in tokenizer.get_vocab().items()}
    added, decoder = tokenizer.get_added_vocab(), tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        if token in added:
            special = decoder[i].special or token in _LOOKS_SPECIAL or (token[:2], token[-2:]) == ("<|", "|>")
            types.append(CONTROL if special else USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(token)
    return tokens, types


def load_bpe_vocab(model_dir: str | Path, vocab_size: int, tokenizer_json: dict) -> Vocab:
    """The GGUF vocabulary of a folder with a byte-level BPE tokenizer.json (model `gpt2` in llama.cpp)."""
    import gguf
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if len(tokenizer) > vocab_size:
        raise ModelError(f"config.json vocab_size {vocab_size} is smaller than the tokenizer's {len(tokenizer)} "
                         "tokens", path=model_dir / "config.json", fix="use the tokenizer that belongs to this model")
    tokens, types = _token_types(tokenizer, vocab_size)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    if not special.merges:
        raise ModelError("tokenizer.json has no BPE merges", path=model_dir / "tokenizer.json",
                         fix="restore tokenizer.json from the original model")
    ids = special.special_token_ids
    probe = tokenizer.encode("a")  # what the tokenizer really adds, whatever its config claims
    return Vocab(tokens, [0.0] * len(tokens), types, bos_id=ids.get("bos"), eos_id=ids.get("eos"),
                 unk_id=ids.get("unk"), pad_id=ids.get("pad"),
                 add_bos=bool(probe) and probe[0] == tokenizer.bos_token_id,
                 add_eos=bool(probe) and probe[-1] == tokenizer.eos_token_id,
                 add_space_prefix=False, chat_template=read_chat_template(model_dir), model="gpt2",
                 pre=pre_tokenizer_name(tokenizer, model_dir, tokenizer_json), merges=list(special.merges))
