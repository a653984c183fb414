"""Read a SentencePiece tokenizer.model (pieces, real scores, piece types) for the GGUF writer."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from dantes_mlx.errors import ModelError

# SentencePiece piece types, numbered as in sentencepiece_model.proto and llama.cpp's token types.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class Vocab:
    """A tokenizer vocabulary as GGUF stores it: one piece, score and type per token id."""

    tokens: list[str]
    scores: list[float]
    types: list[int]
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = True
    add_eos: bool = False
    add_space_prefix: bool = True
    remove_extra_whitespaces: bool = False
    chat_template: str | None = None
    model: str = "llama"  # tokenizer.ggml.model: llama (SentencePiece) or gpt2 (byte-level BPE)
    pre: str = "default"  # tokenizer.ggml.pre: the pre-tokenizer llama.cpp runs (BPE only)
    merges: list[str] = field(default_factory=list)  # BPE merges, "left right" (gpt2 only)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field number, wire type, value) of one protobuf message; enough for ModelProto."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def parse_sentencepiece(proto: bytes) -> Vocab:
    """Pieces, scores and types of a serialized SentencePiece ModelProto, read without protobuf."""
    tokens, scores, types = [], [], []
    add_dummy_prefix, remove_ws = True, True  # proto defaults
    for number, _, value in _fields(proto):
        if number == 1:  # repeated SentencePiece pieces
            piece, score, kind = "", 0.0, NORMAL
            for sub, _, sub_value in _fields(value):
                if sub == 1:
                    piece = sub_value.decode("utf-8")
                elif sub == 2:
                    score = struct.unpack("<f", sub_value)[0]
                elif sub == 3:
                    kind = sub_value
            tokens.append(piece)
            scores.append(score)
            types.append(kind)
        elif number == 3:  # NormalizerSpec
            for sub, _, sub_value in _fields(value):
                if sub == 3:
                    add_dummy_prefix = bool(sub_value)
                elif sub == 4:
                    remove_ws = bool(sub_value)
    if not tokens:
        raise ValueError("no pieces found")
    return Vocab(tokens, scores, types, add_space_prefix=add_dummy_prefix,
                 remove_extra_whitespaces=remove_ws)


def vocab_from_tokenizer_json(path: Path) -> Vocab:
    """Rebuild a SentencePiece-BPE vocabulary from a HF tokenizer.json (no tokenizer.model at hand).

    A merged piece scores minus the rank of the first merge that makes it, so llama.cpp's
    highest-score-first merging follows the BPE merge order; specials are CONTROL, <0xNN> BYTE.
    """
    model = _read_json(path).get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        raise ModelError("tokenizer.json is not a SentencePiece-style BPE with byte fallback", path=path,
                         fix="add the model's tokenizer.model to the folder")
    by_id = {i: piece for piece, i in model["vocab"].items()}
    rank: dict[str, int] = {}
    for r, merge in enumerate(model.get("merges") or []):
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        rank.setdefault(left + right, r)
    byte = re.compile(r"^<0x[0-9A-F]{2}>$")
    tokens, scores, types = [], [], []
    for i in range(max(by_id) + 1):
        piece = by_id.get(i, f"[PAD{i}]")
        tokens.append(piece)
        scores.append(-float(rank.get(piece, len(rank))))
        types.append(BYTE if byte.match(piece) else NORMAL if i in by_id else UNUSED)
    unk = model.get("unk_token") or "<unk>"
    if unk in model["vocab"]:
        types[model["vocab"][unk]] = UNKNOWN
    return Vocab(tokens, scores, types)


def _added_tokens(model_dir: Path) -> dict[int, tuple[str, bool]]:
    """id -> (content, special) of the tokens the HF tokenizer adds on top of the SP model."""
    added: dict[int, tuple[str, bool]] = {}
    config = _read_json(model_dir / "tokenizer_config.json")
    for key, tok in (config.get("added_tokens_decoder") or {}).items():
        added[int(key)] = (tok["content"], bool(tok.get("special", False)))
    for tok in (_read_json(model_dir / "tokenizer.json").get("added_tokens") or []):
        added[int(tok["id"])] = (tok["content"], bool(tok.get("special", False)))
    return added


def _prefix_only_at_start(model_dir: Path) -> bool:
    """True when the HF tokenizer adds SentencePiece's dummy-prefix "▁" only at the very start of
    the text (transformers' legacy=False, Metaspace prepend_scheme "first"), not after special tokens."""
    def metaspaces(node):
        if isinstance(node, dict):
            if node.get("type") == "Metaspace":
                yield node
            for child in node.get("pretokenizers") or []:
                yield from metaspaces(child)

    pre = _read_json(model_dir / "tokenizer.json").get("pre_tokenizer")
    schemes = [m.get("prepend_scheme") for m in metaspaces(pre)]
    if schemes:
        return "first" in schemes
    return _read_json(model_dir / "tokenizer_config.json").get("legacy") is False


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"invalid JSON: {exc.msg}", path=path, line=exc.lineno,
                         fix="restore the file from the original model") from exc


def read_chat_template(model_dir: Path) -> str | None:
    """The chat template of a HF folder: chat_template.jinja, else tokenizer_config.json's field."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = _read_json(model_dir / "tokenizer_config.json").get("chat_template")
    if isinstance(template, list):  # named templates: keep the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template


def _token_id(tokens: list[str], config: dict, key: str, fallback: str) -> int | None:
    value = config.get(key, fallback)
    if isinstance(value, dict):
        value = value.get("content")
    return tokens.index(value) if value in tokens else None


def load_vocab(model_dir: str | Path, vocab_size: int | None = None) -> Vocab:
    """The GGUF vocabulary of a HF/MLX folder, from its tokenizer.model (real scores and types),
    else rebuilt from tokenizer.json (the parity gate then proves the tokenization is unchanged).

    Tokens the HF tokenizer adds are typed CONTROL (special) or USER_DEFINED, as transformers
    treats them; ids between the SP size and `vocab_size` are padded with UNUSED tokens.
    """
    model_dir = Path(model_dir)
    sp_path = model_dir / "tokenizer.model"
    if sp_path.is_file():
        try:
            vocab = parse_sentencepiece(sp_path.read_bytes())
        except (ValueError, IndexError, UnicodeDecodeError) as exc:
            raise ModelError(f"not a SentencePiece model ({exc})", path=sp_path,
                             fix="use the tokenizer.model from the base model's repo") from exc
    elif (model_dir / "tokenizer.json").is_file():  # e.g. a folder written by mlx_lm.convert
        vocab = vocab_from_tokenizer_json(model_dir / "tokenizer.json")
    else:
        raise ModelError("no tokenizer.model nor tokenizer.json in the model folder", path=model_dir,
                         fix="copy tokenizer.model from the base model's Hugging Face repo into it")
    for token_id, (content, special) in sorted(_added_tokens(model_dir).items()):
        if token_id < len(vocab.tokens):
            if vocab.tokens[token_id] != content:
                raise ModelError(f"added token {token_id} is {content!r} in tokenizer_config.json "
                                 f"but {vocab.tokens[token_id]!r} in tokenizer.model", path=model_dir,
                                 fix="use tokenizer files from the same model")
            if vocab.types[token_id] in (NORMAL, USER_DEFINED):
                vocab.types[token_id] = CONTROL if special else USER_DEFINED
        elif token_id == len(vocab.tokens):
            vocab.tokens.append(content)
            vocab.scores.append(-1000.0)
            vocab.types.append(CONTROL if special else USER_DEFINED)
    if vocab_size is not None:
        if vocab_size < len(vocab.tokens):
            raise ModelError(f"config.json vocab_size {vocab_size} is smaller than the tokenizer's "
                             f"{len(vocab.tokens)} tokens", path=model_dir / "config.json",
                             fix="use the tokenizer that belongs to this model")
        for i in range(len(vocab.tokens), vocab_size):
            vocab.tokens.append(f"[PAD{i}]")
            vocab.scores.append(-1000.0)
            vocab.types.append(UNUSED)
    config = _read_json(model_dir / "tokenizer_config.json")
    vocab.bos_id = _token_id(vocab.tokens, config, "bos_token", "<s>")
    vocab.eos_id = _token_id(vocab.tokens, config, "eos_token", "</s>")
    vocab.unk_id = _token_id(vocab.tokens, config, "unk_token", "<unk>")
    vocab.pad_id = _token_id(vocab.tokens, config, "pad_token", "")
    vocab.add_bos = bool(config.get("add_bos_token", True))
    vocab.add_eos = bool(config.get("add_eos_token", False))
    vocab.chat_template = read_chat_template(model_dir)
    # llama.cpp puts a space before EVERY text fragment that follows a special token when
    # add_space_prefix is on ("[INST] Bonjour" -> "▁▁Bonjour"); transformers with legacy=False
    # gives "▁Bonjour". Chat prompts always start with <s>, so switching the prefix off makes
    # llama.cpp tokenize chat-templated text exactly as training did (the parity gate checks it).
    if _prefix_only_at_start(model_dir):
        vocab.add_space_prefix = False
    return vocab
