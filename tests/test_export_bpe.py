"""The GGUF writer on byte-level BPE tokenizers (SmolLM2 / Llama 3 / Qwen2 style) and the qwen2 architecture;
unsupported tokenizers and architectures refused before any file is written.

Tiny random models with a French BPE tokenizer trained here; in-process, no network.
Run: pytest tests/test_export_bpe.py -q
"""

from __future__ import annotations

import json
import shutil

import gguf
import llama_cpp
import pytest
from test_export_peft import make_mlx_adapter
from test_gguf_export import FRENCH_TEXTS

from dantes_mlx.errors import ModelError
from dantes_mlx.export import export_all
from dantes_mlx.export.bpe import CHECK_TEXT, KNOWN_HASHES, PRE_TOKENIZERS, check_hash
from dantes_mlx.export.gguf import read_config, read_vocab, write_gguf
from dantes_mlx.export.parity import MLXReference, check_parity
from dantes_mlx.export.vocab import CONTROL, NORMAL
from dantes_mlx.tinymodel_bpe import build_tiny_bpe_model


@pytest.fixture(scope="module")
def bpe_gguf(tiny_bpe_model_dir, tmp_path_factory):
    return write_gguf(tiny_bpe_model_dir, tmp_path_factory.mktemp("bpe") / "bpe-f16.gguf")


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_bpe_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bpe_model_dir)


def test_vocabulary_merges_and_specials_are_written_for_llama_cpps_gpt2_tokenizer(bpe_gguf, tiny_bpe_model_dir):
    fields = gguf.GGUFReader(str(bpe_gguf)).fields
    tokenizer_json = json.loads((tiny_bpe_model_dir / "tokenizer.json").read_text())
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"  # digits split first, then GPT-2's regex
    tokens = fields["tokenizer.ggml.tokens"].contents()
    assert tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = fields["tokenizer.ggml.token_type"].contents()
    assert types[:3] == [CONTROL] * 3 and set(types[3:]) == {NORMAL}
    merges = tokenizer_json["model"]["merges"]
    assert fields["tokenizer.ggml.merges"].contents() == [" ".join(m) if isinstance(m, list) else m for m in merges]
    assert "tokenizer.ggml.scores" not in fields and "tokenizer.ggml.add_space_prefix" not in fields
    assert fields["tokenizer.ggml.bos_token_id"].contents() == 1
    assert fields["tokenizer.ggml.eos_token_id"].contents() == 2
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False  # the HF tokenizer adds none
    assert "<|im_start|>" in fields["tokenizer.chat_template"].contents()
    assert fields["llama.rope.freq_base"].contents() == 100000.0
    assert "output.weight" not in [t.name for t in gguf.GGUFReader(str(bpe_gguf)).tensors]  # tied embeddings


@pytest.mark.parametrize("text", FRENCH_TEXTS)
def test_llama_cpp_tokenizes_chat_text_like_hf(bpe_gguf, hf_tokenizer, text):
    llm = llama_cpp.Llama(str(bpe_gguf), vocab_only=True, verbose=False)
    messages = [{"role": "system", "content": "Tu es Dantès."}, {"role": "user", "content": text},
                {"role": "assistant", "content": text}, {"role": "user", "content": "Et en 1815 ?"}]
    rendered = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    expected = hf_tokenizer.encode(rendered, add_special_tokens=False)
    assert llm.tokenize(rendered.encode("utf-8"), add_bos=False, special=True) == expected
    assert llm.tokenize(text.encode("utf-8"), add_bos=False) == hf_tokenizer.encode(text, add_special_tokens=False)


@pytest.mark.parametrize(("model_type", "pre"), [("llama", "gpt-2"), ("llama", "llama-bpe"), ("qwen2", "smollm")])
def test_f16_parity_passes_for_other_pre_tokenizers_and_qwen2(model_type, pre, tmp_path):
    """Llama 3's pre-tokenizer (a split regex, whole words taken from the vocabulary) is recognized from
    tokenizer.json's shape here: a vocabulary of our own has no known hash."""
    model = build_tiny_bpe_model(tmp_path / "model", model_type=model_type, pre=pre)
    out = write_gguf(model, tmp_path / "model-f16.gguf")
    reader = gguf.GGUFReader(str(out))
    assert reader.fields["general.architecture"].contents() == ("qwen2" if model_type == "qwen2" else "llama")
    assert reader.fields["tokenizer.ggml.pre"].contents() == pre
    report = check_parity(MLXReference(model), out)
    assert report.passed and report.tokens_match and report.kl_mean < 1e-4, report.summary()


def test_lora_export_on_a_bpe_model_passes_the_gate(tiny_bpe_model_dir, tmp_path):
    adapter = make_mlx_adapter(tiny_bpe_model_dir, tmp_path / "adapter", b_std=0.05)
    result = export_all(tiny_bpe_model_dir, adapter, tmp_path / "out", quantization="q8_0", name="bpe",
                        log=lambda m: None)
    assert result.passed, result.summary()
    for label in ("fused f16", "fused q8_0", "base f16 + GGUF LoRA"):
        assert result.reports[label].tokens_match and result.reports[label].finetune.share > 0.5, label


def test_the_hash_table_names_only_pre_tokenizers_we_list():
    assert set(KNOWN_HASHES.values()) <= set(PRE_TOKENIZERS)
    assert "3 33 333 3333" in CHECK_TEXT


def test_the_pre_tokenizer_is_recognized_by_the_hash_first(tiny_bpe_model_dir, hf_tokenizer, monkeypatch):
    from dantes_mlx.export import bpe

    monkeypatch.setitem(bpe.KNOWN_HASHES, check_hash(hf_tokenizer), "llama-bpe")
    assert read_vocab(tiny_bpe_model_dir, read_config(tiny_bpe_model_dir)).pre == "llama-bpe"


def unknown_pre_tokenizer(model_dir, dest):
    shutil.copytree(model_dir, dest)
    data = json.loads((dest / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Whitespace"}
    (dest / "tokenizer.json").write_text(json.dumps(data))
    return dest


def unigram_tokenizer(model_dir, dest):
    shutil.copytree(model_dir, dest)
    data = json.loads((dest / "tokenizer.json").read_text())
    data["model"] = {"type": "Unigram", "unk_id": 0, "vocab": [[t, -1.0] for t in data["model"]["vocab"]]}
    (dest / "tokenizer.json").write_text(json.dumps(data))
    return dest


def other_architecture(model_dir, dest):
    shutil.copytree(model_dir, dest)
    config = json.loads((dest / "config.json").read_text())
    config["model_type"] = "gemma2"
    (dest / "config.json").write_text(json.dumps(config))
    return dest


@pytest.mark.parametrize(("mutate", "message", "supported"), [
    (unknown_pre_tokenizer, "pre-tokenizer is not one llama.cpp", "SmolLM, SmolLM2 (smollm)"),
    (unigram_tokenizer, "Unigram tokenizer", "Llama 3 (llama-bpe)"),
    (other_architecture, "model_type 'gemma2' is not supported", "'qwen2'"),
])
def test_unsupported_tokenizers_and_architectures_are_refused_before_any_file(tiny_bpe_model_dir, tmp_path, mutate,
                                                                             message, supported):
    adapter = make_mlx_adapter(tiny_bpe_model_dir, tmp_path / "adapter")
    base = mutate(tiny_bpe_model_dir, tmp_path / "base")
    with pytest.raises(ModelError, match=message) as refused:
        export_all(base, adapter, tmp_path / "out", quantization="q4_k_m", allow_other_base=True, log=lambda m: None)
    assert supported in refused.value.fix
    assert not (tmp_path / "out").exists()
