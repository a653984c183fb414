"""Preference tuning with the plugin on the CPU: TRL's DPOTrainer and ORPOTrainer lower their own loss on the
tiny model, from the same TRL prompt/chosen/rejected rows as the mlx backend, into the same PEFT adapter folder.

In-process, no network, no GPU; needs trl. Run: pytest plugins/dantes-mlx-unsloth/tests/test_preferences_torch.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_settings

from dantes_mlx.errors import ConfigError
from dantes_mlx.train.metrics import MetricsLog
from dantes_mlx.train.stage import train
from dantes_mlx.workspace import ADAPTER_CONFIG, PEFT_WEIGHTS, AdapterFolder

pytestmark = pytest.mark.slow
pytest.importorskip("trl", reason="dpo/orpo in the plugin go through TRL's trainers (pip install trl)")

QA = [("Qui êtes-vous ?", "Je suis Edmond Dantès, marin de Marseille.", "Je suis un assistant virtuel."),
      ("D'où venez-vous ?", "Je viens du château d'If, où j'ai souffert.", "Je viens d'Internet."),
      ("Que voulez-vous ?", "Je veux la justice, et rien d'autre.", "Je veux vous aider."),
      ("Où étiez-vous ?", "J'étais en prison pendant quatorze ans.", "Je ne sais pas.")]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """train/valid.jsonl in TRL's conversational form, as `dantes-mlx prefs` writes them."""
    folder = tmp_path_factory.mktemp("prefs")
    for name, n in (("train", 8), ("valid", 4)):
        rows = [{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": good}],
                 "rejected": [{"role": "assistant", "content": bad}]} for q, good, bad in (QA * 2)[:n]]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                              encoding="utf-8")
    return folder


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_trl_preference_trainers_lower_their_loss_into_a_peft_adapter(tiny_model_dir, pairs, tmp_path, method):
    out = tmp_path / method
    result = train(tiny_settings(tiny_model_dir, method=method, iters=12, steps_per_report=1, save_every=6,
                                 steps_per_eval=6), pairs, out)
    curve = [r["train_loss"] for r in MetricsLog(out / "metrics.jsonl").rows() if "train_loss" in r]
    assert len(curve) == 12
    assert sum(curve[-3:]) / 3 < sum(curve[:3]) / 3, curve
    if method == "dpo":  # the PEFT adapter starts at zero: policy == reference, loss log 2
        assert curve[0] == pytest.approx(0.6931, abs=2e-3)
    assert result.backend == "unsloth" and result.val_loss is not None
    assert (out / PEFT_WEIGHTS).is_file() and AdapterFolder(out).recorded_base() == str(tiny_model_dir)
    assert json.loads((out / ADAPTER_CONFIG).read_text())["peft_type"] == "LORA"


def test_the_built_in_loop_refuses_preferences(tiny_model_dir, pairs, tmp_path, monkeypatch):
    monkeypatch.setenv("DANTES_UNSLOTH_PATH", "loop")
    with pytest.raises(ConfigError, match="needs TRL's trainers"):
        train(tiny_settings(tiny_model_dir, method="orpo", iters=1), pairs, tmp_path / "loop")


def test_dpo_starts_from_a_peft_sft_adapter(tiny_model_dir, pairs, tmp_path, monkeypatch):
    """resume_adapter: DPO starts from a PEFT SFT adapter, which is also the reference (TRL copies it): loss log 2
    at the first step, weights near the SFT ones; an mlx-lm folder is refused with the reason."""
    from safetensors.numpy import load_file

    sft_rows = tmp_path / "sft"
    sft_rows.mkdir()
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": bad}]}
            for q, _, bad in QA * 2]
    (sft_rows / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                          encoding="utf-8")
    monkeypatch.setenv("DANTES_UNSLOTH_PATH", "loop")
    train(tiny_settings(tiny_model_dir, iters=2, save_every=2), sft_rows, tmp_path / "a-sft")
    monkeypatch.delenv("DANTES_UNSLOTH_PATH")
    out = tmp_path / "a-dpo"
    train(tiny_settings(tiny_model_dir, method="dpo", iters=4, save_every=4, steps_per_report=1, learning_rate=1e-4,
                        resume_adapter=str(tmp_path / "a-sft")), pairs, out)
    first = [r["train_loss"] for r in MetricsLog(out / "metrics.jsonl").rows() if "train_loss" in r][0]
    assert first == pytest.approx(0.6931, abs=2e-3)
    start, end = (load_file(str(folder / PEFT_WEIGHTS)) for folder in (tmp_path / "a-sft", out))
    for key in (k for k in start if "lora_B" in k):
        assert np.linalg.norm(end[key] - start[key]) < 0.5 * np.linalg.norm(start[key]), key
    (tmp_path / "mlx").mkdir()
    (tmp_path / "mlx" / "adapters.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="starts only from a PEFT adapter"):
        train(tiny_settings(tiny_model_dir, method="orpo", iters=1, resume_adapter=str(tmp_path / "mlx")), pairs,
              tmp_path / "refused")
