"""GGUF -> model folder: tiny models written by our GGUF writer come back with the same weights, config and
tokenization (SentencePiece and byte-level BPE); unsupported files are refused before anything is written.

In-process, no network. Run: pytest tests/test_gguf_import.py -q
"""

from __future__ import annotations

import json

import gguf
import llama_cpp
import numpy as np
import pytest
from click.testing import CliRunner
from test_gguf_export import FRENCH_TEXTS

from dantes_mlx.cli import main
from dantes_mlx.errors import ConfigError, ModelError
from dantes_mlx.export.gguf import load_weights, write_gguf
from dantes_mlx.models.config import imported_from
from dantes_mlx.models.gguf_import import import_gguf

CHAT = [{"role": "system", "content": "Tu es Dantès."}, {"role": "user", "content": "Bonjour, êtes-vous là ?"},
        {"role": "assistant", "content": "Oui  l'abbé — « non » 🚢 1815"},
        {"role": "user", "content": "Et ensuite ?"}]


@pytest.fixture(scope="module")
def imported_tiny(tiny_gguf, tmp_path_factory):
    return import_gguf(tiny_gguf, tmp_path_factory.mktemp("imported") / "tiny", dtype="float32").out_dir


def test_weights_come_back_exactly_in_hf_layout(imported_tiny, tiny_model_dir):
    original, back = load_weights(tiny_model_dir), load_weights(imported_tiny)
    assert set(original) == set(back)
    for name in original:  # q/k rows included: the writer's RoPE permutation is undone
        assert np.array_equal(np.array(original[name]), np.array(back[name])), name


def test_config_keeps_what_the_model_needs(imported_tiny, tiny_model_dir):
    original = json.loads((tiny_model_dir / "config.json").read_text())
    back = json.loads((imported_tiny / "config.json").read_text())
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "vocab_size", "rope_theta", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings",
            "bos_token_id", "eos_token_id")
    assert {k: back[k] for k in keys} == {k: original[k] for k in keys}
    assert back["model_type"] == "llama" and back["torch_dtype"] == "float32"
    source = imported_from(imported_tiny)
    assert source["architecture"] == "llama" and source["tokenizer_model"] == "llama" and len(source["sha256"]) == 64


def test_sentencepiece_tokenizer_matches_the_original_and_llama_cpp(imported_tiny, tiny_model_dir, tiny_gguf):
    from transformers import AutoTokenizer

    original, back = AutoTokenizer.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(imported_tiny)
    rendered = back.apply_chat_template(CHAT, tokenize=False)
    assert rendered == original.apply_chat_template(CHAT, tokenize=False)  # the GGUF's chat template kept
    llm = llama_cpp.Llama(str(tiny_gguf), vocab_only=True, verbose=False)
    ids = back.encode(rendered, add_special_tokens=False)
    assert ids == original.encode(rendered, add_special_tokens=False)
    assert ids == llm.tokenize(rendered.encode("utf-8"), add_bos=False, special=True)
    for text in FRENCH_TEXTS:
        assert back.encode(" " + text) == original.encode(" " + text)  # BOS added as the original does


def test_mlx_lm_computes_the_same_logits_on_the_imported_folder(imported_tiny, tiny_model_dir):
    import mlx.core as mx
    import mlx_lm

    ids = mx.array([[1, 3, 300, 400, 500, 4, 600]])
    before, _ = mlx_lm.load(str(tiny_model_dir))
    after, _ = mlx_lm.load(str(imported_tiny))
    assert np.allclose(np.array(before(ids)), np.array(after(ids)), atol=1e-4)


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_byte_level_bpe_round_trip(tiny_bpe_model_dir, tmp_path, model_type):
    from transformers import AutoTokenizer

    from dantes_mlx.tinymodel_bpe import build_tiny_bpe_model

    model = (tiny_bpe_model_dir if model_type == "llama"
             else build_tiny_bpe_model(tmp_path / "qwen2", model_type="qwen2"))
    out = write_gguf(model, tmp_path / "bpe-f16.gguf")
    back = import_gguf(out, tmp_path / "back", dtype="float32").out_dir
    config = json.loads((back / "config.json").read_text())
    assert config["model_type"] == model_type and config["tie_word_embeddings"] is True
    original, weights = load_weights(model), load_weights(back)
    assert set(weights) == set(original) and "lm_head.weight" not in weights
    assert all(np.array_equal(np.array(original[k]), np.array(weights[k])) for k in original)  # qwen2 biases too
    assert imported_from(back)["tokenizer_pre"] == "smollm"
    tokenizer = AutoTokenizer.from_pretrained(back)
    llm = llama_cpp.Llama(str(out), vocab_only=True, verbose=False)
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert rendered.startswith("<|im_start|>system\nTu es Dantès.<|im_end|>")
    assert tokenizer.encode(rendered, add_special_tokens=False) == llm.tokenize(rendered.encode(), add_bos=False,
                                                                                special=True)


def test_shards_and_their_index(tiny_gguf, tmp_path):
    import mlx_lm

    result = import_gguf(tiny_gguf, tmp_path / "sharded", dtype="float16", max_shard_bytes=600_000)
    shards = sorted(p.name for p in result.out_dir.glob("model-*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((result.out_dir / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    model, _ = mlx_lm.load(str(result.out_dir))
    assert model.model.embed_tokens.weight.dtype.size == 2  # float16


def test_a_second_import_reuses_the_folder_and_another_one_is_not_overwritten(tiny_gguf, imported_tiny, tmp_path):
    assert import_gguf(tiny_gguf, imported_tiny, dtype="float32").reused
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="already exists") as refused:
        import_gguf(tiny_gguf, other, dtype="float32")
    assert "--force" in refused.value.fix and (other / "notes.txt").read_text() == "mine"
    result = import_gguf(tiny_gguf, other, dtype="float32", force=True)
    assert not result.reused and not (other / "notes.txt").exists() and (other / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]  # no temporary folder left


def small_gguf(path, arch="llama", tokenizer="gpt2", extra=()):
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_tokenizer_model(tokenizer)
    writer.add_token_list(["a", "b"])
    for key, value in extra:
        writer.add_string(key, value)
    writer.add_tensor("token_embd.weight", np.zeros((2, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(("arch", "tokenizer", "extra", "message"), [
    ("phi3", "llama", (), "architecture 'phi3' is not supported"),
    ("llama", "bert", (), "tokenizer.ggml.model 'bert' is not supported"),
    ("llama", "gpt2", (("llama.rope.scaling.type", "yarn"),), "RoPE-scaled"),
])
def test_unsupported_files_are_refused_before_anything_is_written(tmp_path, arch, tokenizer, extra, message):
    source = small_gguf(tmp_path / "model.gguf", arch, tokenizer, extra)
    with pytest.raises(ModelError, match=message) as refused:
        import_gguf(source, tmp_path / "out")
    assert "llama, qwen2" in refused.value.fix and "gpt2 (byte-level BPE)" in refused.value.fix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]


def test_missing_or_broken_files_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        import_gguf(tmp_path / "absent.gguf", tmp_path / "out")
    (tmp_path / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    with pytest.raises(ModelError, match="not a readable GGUF"):
        import_gguf(tmp_path / "broken.gguf", tmp_path / "out")
    with pytest.raises(ConfigError, match="float8"):
        import_gguf(tmp_path / "broken.gguf", tmp_path / "out", dtype="float8")


def test_import_gguf_command(tiny_gguf, tmp_path):
    result = CliRunner().invoke(main, ["import-gguf", str(tiny_gguf), "-o", str(tmp_path / "folder"),
                                       "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "imported ->" in result.output and "rope_theta 1e+06" in result.output
    assert "dantes-mlx train --base-model" in result.output
    neither = CliRunner().invoke(main, ["import-gguf"])
    assert neither.exit_code == 1 and "either a GGUF file or --embedded" in neither.output


def test_embedded_import_goes_to_the_cache_by_default(tiny_gguf, tmp_path, monkeypatch):
    """`import-gguf --embedded` resolves the embedded GGUF (here the tiny one stands in) and writes the folder
    into the dantes-mlx cache."""
    from dantes_mlx.models import gguf_import

    monkeypatch.setenv("DANTES_MLX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf_import, "resolve", lambda model: tiny_gguf)
    result = CliRunner().invoke(main, ["import-gguf", "--embedded"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cache" / "SmolLM2-135M-Instruct" / "config.json").is_file()
    both = CliRunner().invoke(main, ["import-gguf", str(tiny_gguf), "--embedded"])
    assert both.exit_code == 1 and "either a GGUF file or --embedded" in both.output
