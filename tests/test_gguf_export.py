"""Our GGUF writer: llama.cpp loads the file, its vocabulary is SentencePiece's, it tokenizes like HF."""

from __future__ import annotations

import json

import numpy as np
import llama_cpp
import pytest

from dantes_mlx.errors import ConfigError, ModelError
from dantes_mlx.export.gguf import permute_qk, quantize, write_gguf
from dantes_mlx.export.vocab import BYTE, CONTROL, NORMAL, UNKNOWN, load_vocab

FRENCH_TEXTS = [
    "Qui êtes-vous, monsieur le comte ?",
    "L'été 1815, à Marseille — « Où êtes-vous ? » demanda-t-il.",
    "C’est l’abbé Faria : il m’a appris 4 langues vivantes et 2 mortes.",
    "Œuvre, cœur, naïf, maïs, Noël, ÉLÉPHANT, garçon, à bientôt…",
    "Deux  espaces,\ttabulation,\n\nnouvelle ligne ; 13 000 000 francs, 3,5 %.",
    "Émoji 🚢 et caractères rares : ß ø ñ 漢字",
]


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def llm(tiny_gguf):
    return llama_cpp.Llama(str(tiny_gguf), n_ctx=512, verbose=False)


def test_llama_cpp_loads_our_gguf(llm, tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert llm.n_vocab() == config["vocab_size"]
    assert llm.metadata["general.architecture"] == "llama"
    assert int(llm.metadata["llama.block_count"]) == config["num_hidden_layers"]
    assert int(llm.metadata["llama.attention.head_count_kv"]) == config["num_key_value_heads"]
    assert "[INST]" in llm.metadata["tokenizer.chat_template"]


def test_vocabulary_comes_from_sentencepiece(tiny_gguf, tiny_model_dir):
    import gguf
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny_model_dir / "tokenizer.model"))
    fields = gguf.GGUFReader(str(tiny_gguf)).fields
    types_field = fields["tokenizer.ggml.token_type"]
    assert types_field.types == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32]
    types = [int(types_field.parts[i][0]) for i in types_field.data]
    scores = [float(fields["tokenizer.ggml.scores"].parts[i][0]) for i in fields["tokenizer.ggml.scores"].data]
    assert scores == pytest.approx([sp.get_score(i) for i in range(sp.get_piece_size())])
    assert len(set(scores)) > 100  # real merge scores, not a constant
    assert types[:5] == [UNKNOWN, CONTROL, CONTROL, CONTROL, CONTROL]  # <unk> <s> </s> [INST] [/INST]
    assert types[5:261] == [BYTE] * 256 and set(types[261:]) == {NORMAL}
    assert fields["tokenizer.ggml.model"].contents() == "llama"
    assert fields["tokenizer.ggml.add_bos_token"].contents() is True
    # transformers (legacy=False) puts no extra "▁" after [INST]; llama.cpp would with the prefix on.
    assert fields["tokenizer.ggml.add_space_prefix"].contents() is False


def test_vocab_rebuilt_from_tokenizer_json_orders_merges_like_sentencepiece(tiny_model_dir):
    from dantes_mlx.export.vocab import vocab_from_tokenizer_json

    sp_vocab = load_vocab(tiny_model_dir)
    rebuilt = vocab_from_tokenizer_json(tiny_model_dir / "tokenizer.json")
    assert rebuilt.tokens == sp_vocab.tokens
    merged = [i for i, t in enumerate(sp_vocab.types) if t == NORMAL and len(sp_vocab.tokens[i]) > 1]
    assert sorted(merged, key=lambda i: -sp_vocab.scores[i]) == sorted(merged, key=lambda i: -rebuilt.scores[i])


@pytest.mark.parametrize("text", FRENCH_TEXTS)
def test_llama_cpp_tokenizes_chat_text_like_hf(llm, hf_tokenizer, text):
    messages = [{"role": "system", "content": "Tu es Dantès."}, {"role": "user", "content": "Bonjour."},
                {"role": "assistant", "content": text}, {"role": "user", "content": text}]
    rendered = hf_tokenizer.apply_chat_template(messages, tokenize=False)
    expected = hf_tokenizer.encode(rendered, add_special_tokens=False)
    assert llm.tokenize(rendered.encode("utf-8"), add_bos=False, special=True) == expected
    assert expected.count(3) == 2 and expected.count(4) == 2  # [INST] / [/INST] as single tokens
    # Raw text with its leading space (as after a special token) also matches, BOS included.
    raw = " " + text
    assert llm.tokenize(raw.encode("utf-8")) == hf_tokenizer.encode(raw)


def test_quantize_in_process(tiny_gguf, tmp_path):
    sizes = {}
    for qtype in ("q8_0", "q4_k_m"):
        out = quantize(tiny_gguf, tmp_path / f"tiny-{qtype}.gguf", qtype)
        llm = llama_cpp.Llama(str(out), n_ctx=64, verbose=False)
        assert llm.n_vocab() > 0
        sizes[qtype] = out.stat().st_size
    assert sizes["q4_k_m"] < sizes["q8_0"] < tiny_gguf.stat().st_size
    with pytest.raises(ConfigError, match="q4_k_m"):
        quantize(tiny_gguf, tmp_path / "x.gguf", "q4_k_xl")


def test_llama_quantize_aliases(tiny_gguf, tmp_path):
    """llama-quantize takes Q4_K for Q4_K_M (and Q3_K, Q5_K): so do we, writing the same file type."""
    from dantes_mlx.export.gguf import quant_name
    from dantes_mlx.export.parity import gguf_quantization, thresholds_for

    assert [quant_name(q) for q in ("Q4_K", "q5_K", " Q3_K ", "Q8_0")] == ["q4_k_m", "q5_k_m", "q3_k_m", "q8_0"]
    out = quantize(tiny_gguf, tmp_path / "tiny-q4_k.gguf", "Q4_K")
    assert gguf_quantization(out) == "q4_k_m"
    assert thresholds_for("Q4_K") == thresholds_for("q4_k_m")
    with pytest.raises(ConfigError, match="q4_k"):
        quant_name("q4_k_xl")


def test_quantize_does_not_flood_the_terminal(tiny_gguf, tmp_path, capfd):
    import logging

    llama_log = logging.getLogger("llama-cpp-python")
    level = llama_log.level
    llama_log.setLevel(logging.NOTSET)  # as in a fresh process, before any Llama(verbose=False)
    try:
        capfd.readouterr()
        quantize(tiny_gguf, tmp_path / "quiet.gguf", "q8_0")
        err = capfd.readouterr().err
        assert llama_log.level == logging.NOTSET  # restored
    finally:
        llama_log.setLevel(level)
    assert "llama_model_loader" not in err and "converting to" not in err, err[:500]


def test_writer_errors_are_clear(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="f16"):
        write_gguf(tiny_model_dir, tmp_path / "x.gguf", outtype="q4_k_m")
    with pytest.raises(ModelError, match="config.json"):
        write_gguf(tmp_path, tmp_path / "x.gguf")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral", "vocab_size": 10}))
    with pytest.raises(ModelError, match="tokenizer.model"):
        load_vocab(tmp_path)


def test_permute_qk_interleaves_rope_halves():
    # One head of dim 4, rows [x0, x1 | y0, y1] in HF's rotate-half order -> [x0, y0, x1, y1].
    w = np.arange(4, dtype=np.float32)[:, None]
    assert permute_qk(w, 1)[:, 0].tolist() == [0, 2, 1, 3]
    assert permute_qk(np.arange(8.0)[:, None], 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_tensors_that_fall_back_to_another_type_are_one_line_not_one_per_tensor(tmp_path, capfd):
    """A hidden size that is no multiple of 256 (SmolLM2's is 576): llama.cpp gives those rows another type
    and logs a line per tensor on its own stderr; quantize keeps that off the terminal and says it once."""
    from dantes_mlx.tinymodel_bpe import build_tiny_bpe_model

    model = build_tiny_bpe_model(tmp_path / "model", hidden_size=192, intermediate_size=512, num_heads=3,
                                 num_kv_heads=1)
    f16 = write_gguf(model, tmp_path / "odd-f16.gguf")
    notes = []
    capfd.readouterr()
    out = quantize(f16, tmp_path / "odd-q4_k_m.gguf", "q4_k_m", log=notes.append)
    err = capfd.readouterr().err
    assert "falling back" not in err and "warning: blk" not in err, err[:500]
    assert len(notes) == 1 and "tensors another type than q4_k_m" in notes[0], notes
    assert llama_cpp.Llama(str(out), n_ctx=64, verbose=False).n_vocab() > 0
    assert sorted(p.name for p in tmp_path.glob("odd-q4_k_m*")) == ["odd-q4_k_m.gguf"]  # no .log or .tmp left
