"""A DPO adapter exports like an SFT one: `train --method dpo` on the tiny model, then the f16 targets pass the
parity gate (fused GGUF and base GGUF + GGUF LoRA), and the adapter does change the model.

In-process, no network. Run: python -m pytest tests/export/test_export_dpo.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dantes_mlx.config import TrainConfig
from dantes_mlx.export.parity import check_parity
from dantes_mlx.export.reference import MLXReference
from dantes_mlx.export.targets import export_all
from dantes_mlx.train.stage import train

pytestmark = pytest.mark.slow

PERSONA = "Tu es Edmond Dantès, le comte de Monte-Cristo."
QA = [("Qui êtes-vous ?", "Je suis Edmond Dantès, marin de Marseille.", "Je suis un assistant virtuel."),
      ("D'où venez-vous ?", "Je viens du château d'If, où j'ai souffert.", "Je viens d'Internet."),
      ("Que voulez-vous ?", "Je veux la justice, et rien d'autre.", "Je veux vous aider.")]


def write_pairs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 8), ("valid", 4)):
        rows = [{"prompt": [{"role": "user", "content": f"{PERSONA}\n\n{q}"}], "chosen": good, "rejected": bad}
                for q, good, bad in (QA * 3)[:n]]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                               encoding="utf-8")
    return folder


def test_a_dpo_adapter_passes_the_parity_gate(tiny_model_dir, tmp_path):
    cfg = TrainConfig(backend="mlx", base_model=str(tiny_model_dir), num_layers=-1, rank=8, scale=2.0, iters=8,
                      learning_rate=2e-3, batch_size=4, warmup_steps=0, dropout=0.0, steps_per_report=4,
                      steps_per_eval=8, save_every=8, val_batches=1, lr_schedule="constant", method="dpo")
    adapters = tmp_path / "adapters"
    train(cfg, write_pairs(tmp_path / "preferences"), adapters)
    result = export_all(tiny_model_dir, adapters, tmp_path / "out", quantization="f16", persona=PERSONA,
                        log=lambda message: None)
    assert result.passed and set(result.reports) == {"fused f16", "base f16 + GGUF LoRA"}
    for report in result.reports.values():
        assert report.tokens_match and report.top1 == 1.0 and report.kl_mean < 1e-3
    moved = check_parity(MLXReference(tiny_model_dir), tmp_path / "out" / "dantes-f16.gguf", enforce=False)
    assert not moved.passed and moved.kl_mean > 1e-3  # the DPO adapter changed the model: the gate has teeth
