"""Multi-turn rows in the torch backend: labels on every assistant turn (none on user/system), and training on them.

In-process, no network, no GPU: the tiny Mistral from the `tiny_model_dir` fixture.
Run: pytest plugins/dantes-mlx-unsloth/tests/test_torch_turns.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import PERSONA, tiny_settings
from dantes_mlx_unsloth.data import IGNORE, Collator, as_hf_dataset, encode_row, encode_rows, multi_turn
from dantes_mlx_unsloth.run import PATH_ENV

from dantes_mlx.train.metrics import MetricsLog
from dantes_mlx.train.stage import train

EXCHANGES = [("Qui êtes-vous ?", "Je suis Edmond Dantès, marin de Marseille."),
             ("Et votre père ?", "Mon père vivait pauvrement allées de Meilhan."),
             ("Que voulez-vous ?", "Je veux la justice, et rien d'autre.")]


def conversation(n: int, shift: int = 0) -> list[dict]:
    messages = []
    for i in range(n):
        q, a = EXCHANGES[(i + shift) % len(EXCHANGES)]
        messages += [{"role": "user", "content": f"{PERSONA}\n\n{q}" if i == 0 else q},
                     {"role": "assistant", "content": a}]
    return messages


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def label_runs(labels: list[int]) -> list[list[int]]:
    """Token ids of each maximal run of labelled (trained) positions."""
    runs, current = [], []
    for label in labels:
        if label != IGNORE:
            current.append(label)
        elif current:
            runs, current = runs + [current], []
    return runs + ([current] if current else [])


def test_collator_labels_every_assistant_turn_and_no_user_token(tokenizer):
    rows = [{"messages": conversation(3)}, {"messages": conversation(2, 1)}]
    assert multi_turn(rows, "chat") and not multi_turn([{"messages": conversation(1)}], "chat")
    examples = encode_rows(rows, "chat", tokenizer, mask_prompt=True, every_turn=True)
    collator = Collator(0, 2048)
    batch = collator(examples)
    trained = 0
    for row, labels, ids in zip(rows, batch["labels"].tolist(), batch["input_ids"].tolist()):
        runs = label_runs(labels)
        answers = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        assert [tokenizer.decode(r, skip_special_tokens=True).strip() for r in runs] == answers
        untrained = tokenizer.decode([t for t, lab in zip(ids, labels) if lab == IGNORE], skip_special_tokens=True)
        assert all(m["content"].split("\n\n")[-1] in untrained for m in row["messages"] if m["role"] == "user")
        trained += sum(len(r) for r in runs)
    assert collator.tokens == trained  # every labelled token is counted (none is a row's first token)
    # mlx-lm's masking (the default, single-turn path) would label only the last answer
    last_only = encode_row(rows[0], "chat", tokenizer, mask_prompt=True)
    assert len(label_runs(collator([last_only])["labels"][0].tolist())) == 1


def test_the_trl_dataset_carries_the_masks(tokenizer):
    pytest.importorskip("datasets", reason="the TRL path's dataset needs `datasets`")
    examples = encode_rows([{"messages": conversation(2)}, {"messages": conversation(3)}], "chat", tokenizer,
                           True, True)
    features = list(as_hf_dataset(examples))
    direct, through = Collator(0, 2048)(examples), Collator(0, 2048)(features)
    assert torch.equal(direct["labels"], through["labels"])


def write_rows(folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                          encoding="utf-8")


def test_training_on_multi_turn_rows_lowers_the_loss(tiny_model_dir, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv(PATH_ENV, "loop")
    rows = [{"messages": conversation(2 + i % 2, i), "source_id": f"c{i % 3}"} for i in range(16)]
    write_rows(tmp_path / "data", "train", rows)
    write_rows(tmp_path / "data", "valid", rows[:8])
    train(tiny_settings(tiny_model_dir), tmp_path / "data", tmp_path / "adapters")
    assert "the loss covers every assistant turn" in capfd.readouterr().err
    metrics = MetricsLog(tmp_path / "adapters" / "metrics.jsonl").rows()
    losses = [r["train_loss"] for r in metrics if "train_loss" in r]
    assert losses[-1] < losses[0] - 1.0, losses
    resolved = yaml.safe_load((tmp_path / "adapters" / "train_config.yaml").read_text())
    assert resolved["derived"]["every_assistant_turn"] is True
