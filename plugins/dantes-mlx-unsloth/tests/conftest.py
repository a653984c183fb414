"""Fixtures for the plugin's tests: a tiny real Mistral model, small datasets in the three formats, settings.

Needs torch + peft (the plugin's dependencies); in-process, no network, no GPU.
Run: pip install 'torch==2.13.0' -e plugins/dantes-mlx-unsloth && pytest plugins/dantes-mlx-unsloth/tests -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the plugin's tests need torch (pip install -e plugins/dantes-mlx-unsloth)")
pytest.importorskip("peft", reason="the plugin's tests need peft (pip install -e plugins/dantes-mlx-unsloth)")

QA = [("Qui êtes-vous ?", "Je suis Edmond Dantès, marin de Marseille."),
      ("D'où venez-vous ?", "Je viens du château d'If, où j'ai souffert."),
      ("Que voulez-vous ?", "Je veux la justice, et rien d'autre."),
      ("Où étiez-vous ?", "J'étais en prison pendant quatorze ans.")]
PERSONA = "Tu es Edmond Dantès."


def row(fmt: str, i: int) -> dict:
    """Row i of a small repetitive dataset in mlx-lm's `fmt` (chat, completions or text)."""
    q, a = QA[i % len(QA)]
    if fmt == "chat":  # the persona folded into the user turn, as `dantes-mlx prepare` writes it
        return {"messages": [{"role": "user", "content": f"{PERSONA}\n\n{q}"},
                             {"role": "assistant", "content": a}], "source_id": f"c{i % len(QA)}"}
    if fmt == "completions":
        return {"prompt": q, "completion": a}
    return {"text": f"{q} {a}"}


def write_dataset(folder: Path, fmt: str = "chat", n_train: int = 16, n_valid: int = 8) -> Path:
    """train/valid/test.jsonl in `dantes-mlx prepare`'s layout."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("valid", n_valid), ("test", 4)):
        lines = [json.dumps(row(fmt, i), ensure_ascii=False) for i in range(n)]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def tiny_settings(model_dir: Path, **overrides):
    """TrainConfig sized for the tiny model: all layers, high learning rate, frequent reports."""
    from dantes_mlx.config import TrainConfig

    base = dict(backend="unsloth", base_model=str(model_dir), num_layers=-1, iters=12, learning_rate=2e-3,
                batch_size=4, warmup_steps=0, dropout=0.0, steps_per_report=4, steps_per_eval=6,
                save_every=6, val_batches=2, lr_schedule="constant", max_seq_length=128)
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Mistral model as a Hugging Face folder (dantes_mlx.models.tiny, about two seconds)."""
    from dantes_mlx.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def chat_data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "chat")


@pytest.fixture(autouse=True)
def default_path(monkeypatch):
    """Each test starts with the backend free to pick its path (no forced $DANTES_UNSLOTH_PATH)."""
    monkeypatch.delenv("DANTES_UNSLOTH_PATH", raising=False)
