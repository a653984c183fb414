"""Tiny Mistral model builder: tokenizer round-trip, chat template, mlx_lm loading, determinism."""

from __future__ import annotations

import json

import pytest

from dantes_mlx.models.tiny import build_tiny_model

FRENCH = ("L'été 1815, à Marseille, Edmond Dantès rêvait — « Où êtes-vous ? » demanda-t-il. "
          "Œuvre, garçon, naïf, où, ça ; l’apostrophe typographique et 42 francs.")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_folder_is_a_mistral_model(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "mistral"
    assert config["num_key_value_heads"] < config["num_attention_heads"]
    assert config["intermediate_size"] % 256 == 0 and config["hidden_size"] % 256 == 0
    for name in ("model.safetensors", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        assert (tiny_model_dir / name).is_file(), name


def test_tokenizer_round_trips_french(tokenizer):
    ids = tokenizer.encode(FRENCH, add_special_tokens=False)
    assert len(ids) > 20
    assert tokenizer.decode(ids) == FRENCH
    assert tokenizer.encode(FRENCH)[0] == tokenizer.bos_token_id == 1


def test_hf_tokenizer_matches_sentencepiece(tiny_model_dir, tokenizer):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny_model_dir / "tokenizer.model"))
    for text in (FRENCH, "Bonjour, comte.", "1234 5678", "Ça va ? Très bien !"):
        assert tokenizer.encode(text, add_special_tokens=False) == sp.encode(text)


def test_chat_template_is_mistral_v03(tokenizer):
    messages = [{"role": "system", "content": "Tu es Dantès."},
                {"role": "user", "content": "Bonjour, qui es-tu ?"},
                {"role": "assistant", "content": "Je suis Edmond."},
                {"role": "user", "content": "Où vis-tu ?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == ("<s>[INST] Bonjour, qui es-tu ?[/INST] Je suis Edmond.</s>"
                    "[INST] Tu es Dantès.\n\nOù vis-tu ?[/INST]")
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids[:2] == [1, 3]  # <s> [INST], each a single token
    assert ids[-1] == 4 and ids.count(3) == 2 and ids.count(4) == 2 and ids.count(2) == 1
    with pytest.raises(Exception, match="alternate"):
        tokenizer.apply_chat_template(messages[1:2] * 2, tokenize=False)


def test_mlx_lm_loads_and_runs(tiny_model_dir):
    import mlx.core as mx
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(tiny_model_dir))
    ids = tokenizer.encode("Le comte de Monte-Cristo")
    logits = model(mx.array([ids]))
    assert logits.shape == (1, len(ids), tokenizer.vocab_size)
    assert bool(mx.all(mx.isfinite(logits)))


def test_build_is_deterministic(tmp_path):
    corpus = FRENCH * 20 + "\nLe port de Marseille s'éveillait à peine. Il riait.\n" * 5
    a = build_tiny_model(tmp_path / "a", corpus, vocab_size=400, seed=1)
    b = build_tiny_model(tmp_path / "b", corpus, vocab_size=400, seed=1)
    c = build_tiny_model(tmp_path / "c", corpus, vocab_size=400, seed=2)
    for name in ("model.safetensors", "tokenizer.model", "config.json", "tokenizer.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
