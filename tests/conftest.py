"""Session fixtures: the shared real data folder and tiny real models (HF folder and GGUF) built once."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_EXTRA_CORPUS = SHARED_DATA / "gutenberg" / "morte_amoureuse.expected.txt"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The team's real data folder (../shared/data next to the repo); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (clone it next to the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Mistral model as a Hugging Face folder (built in about two seconds)."""
    from dantes_mlx.tinymodel import build_tiny_model, builtin_corpus

    # The built-in text always; the shared Gutenberg text too when present, for a richer vocabulary.
    corpus = builtin_corpus()
    if _EXTRA_CORPUS.is_file():
        corpus += "\n" + _EXTRA_CORPUS.read_text(encoding="utf-8")
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", corpus)


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model as an f16 GGUF written by our own writer (llama_cpp.Llama loads it)."""
    from dantes_mlx.export.gguf import write_gguf

    return write_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf", outtype="f16")


@pytest.fixture(scope="session")
def tiny_bpe_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama model with a French byte-level BPE tokenizer (SmolLM2's layout: ChatML, tied
    embeddings, digits split one by one)."""
    from dantes_mlx.tinymodel_bpe import build_tiny_bpe_model

    return build_tiny_bpe_model(tmp_path_factory.mktemp("tiny-bpe") / "model")
