"""Preference tuning on mlx: TRL-format rows checked with file:line errors, DPO and ORPO runs on the tiny real model
(their own loss falls, the adapter folder is the SFT one), start from an SFT adapter, resume.

In-process, no network: the tiny Mistral comes from the `tiny_model_dir` fixture; pairs are written here.
Run: python -m pytest tests/train/test_preferences.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dantes_mlx.config import TrainConfig
from dantes_mlx.errors import ConfigError, InputError
from dantes_mlx.train.metrics import MetricsLog
from dantes_mlx.train.preferences import load_preferences, pair_row
from dantes_mlx.train.stage import Settings, run, train
from dantes_mlx.workspace import ADAPTER_CONFIG, MLX_WEIGHTS, AdapterFolder, Workspace

QA = [("Qui êtes-vous ?", "Je suis Edmond Dantès, marin de Marseille.", "Je suis un assistant virtuel."),
      ("D'où venez-vous ?", "Je viens du château d'If, où j'ai souffert.", "Je viens d'Internet."),
      ("Que voulez-vous ?", "Je veux la justice, et rien d'autre.", "Je veux vous aider."),
      ("Où étiez-vous ?", "J'étais en prison pendant quatorze ans.", "Je ne sais pas.")]


def write_pairs(folder: Path, n_train: int = 8, n_valid: int = 4) -> Path:
    """train/valid.jsonl of preference rows: both TRL forms, standard (strings) and conversational."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("valid", n_valid)):
        rows = []
        for i in range(n):
            q, good, bad = QA[i % len(QA)]
            rows.append({"prompt": q, "chosen": good, "rejected": bad} if i % 2 else
                        {"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": good}],
                         "rejected": [{"role": "assistant", "content": bad}]})
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                              encoding="utf-8")
    return folder


def write_sft(folder: Path, n: int = 8) -> Path:
    """The same questions as SFT chat rows answered the rejected way: an adapter that DPO has to pull back."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train", "valid"):
        rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": bad}]}
                for q, _, bad in (QA * n)[:n]]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                              encoding="utf-8")
    return folder


def tiny_cfg(model_dir: Path, **kw) -> TrainConfig:
    base = dict(backend="mlx", base_model=str(model_dir), num_layers=-1, iters=12, learning_rate=2e-3,
                batch_size=4, warmup_steps=0, dropout=0.0, steps_per_report=1, steps_per_eval=6, save_every=6,
                val_batches=1, lr_schedule="constant", max_seq_length=128)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("prefs") / "preferences")


def test_both_trl_forms_read_as_the_same_pairs(pairs):
    data = load_preferences(pairs)
    assert len(data.train) == 8 and len(data.valid) == 4
    standard, conversational = data.train[1], data.train[3]
    assert standard.prompt == [{"role": "user", "content": QA[1][0]}]
    assert conversational.prompt == [{"role": "user", "content": QA[3][0]}]
    assert (standard.chosen, standard.rejected) == QA[1][1:]
    assert pair_row(standard)["chosen"] == [{"role": "assistant", "content": QA[1][1]}]


@pytest.mark.parametrize("row, message", [
    ({"prompt": "Q ?", "chosen": "A"}, "no 'rejected'"),
    ({"messages": [{"role": "user", "content": "Q"}]}, "this is an SFT row"),
    ({"prompt": "Q ?", "chosen": "A", "rejected": "A"}, "the same answer"),
    ({"prompt": "", "chosen": "A", "rejected": "B"}, "`prompt` is empty"),
    ({"prompt": "Q", "chosen": [{"role": "user", "content": "A"}], "rejected": "B"}, "one assistant answer"),
    ({"prompt": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], "chosen": "A",
      "rejected": "B"}, "ends with an assistant turn"),
    ({"prompt": "Q", "chosen": 3, "rejected": "B"}, "not a string or a list of messages"),
])
def test_a_bad_row_names_its_file_line_and_fix(tmp_path, row, message):
    good = {"prompt": "Q ?", "chosen": "A", "rejected": "B"}
    (tmp_path / "train.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=message) as info:
        load_preferences(tmp_path)
    assert f"{tmp_path / 'train.jsonl'}:2:" in str(info.value) and "fix:" in str(info.value)


def test_an_sft_folder_is_refused_for_dpo_before_any_model_loads(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "Q"},
                                                                   {"role": "assistant", "content": "A"}]}) + "\n")
    with pytest.raises(InputError, match="SFT row"):
        train(tiny_cfg("/nonexistent/model", method="dpo"), tmp_path, tmp_path / "adapters")


def losses(adapter_dir: Path) -> list[float]:
    return [r["train_loss"] for r in MetricsLog(adapter_dir / "metrics.jsonl").rows() if "train_loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_preference_training_lowers_its_own_loss(tiny_model_dir, pairs, tmp_path, method):
    out = tmp_path / method
    result = train(tiny_cfg(tiny_model_dir, method=method), pairs, out)
    curve = losses(out)
    assert len(curve) == 12
    assert sum(curve[-3:]) / 3 < sum(curve[:3]) / 3, curve
    if method == "dpo":  # the adapter starts as the reference: the first loss is log 2
        assert curve[0] == pytest.approx(0.6931, abs=2e-3)
    folder = AdapterFolder(out)
    assert (out / MLX_WEIGHTS).is_file() and folder.recorded_base() == str(tiny_model_dir)
    assert json.loads((out / ADAPTER_CONFIG).read_text())["lora_parameters"]["rank"] == 16
    assert result.val_loss is not None and (out / "0000012_adapters.safetensors").is_file()


@pytest.mark.slow
def test_dpo_starts_from_an_sft_adapter_and_resumes(tiny_model_dir, pairs, tmp_path):
    """The run starts from the SFT adapter, which is also the reference (as TRL's DPOTrainer copies a PEFT
    adapter): loss log 2 at the first step, weights that stay near the SFT ones, and --resume goes on."""
    import mlx.core as mx

    sft = tmp_path / "sft"
    train(tiny_cfg(tiny_model_dir, iters=2, save_every=2), write_sft(tmp_path / "data"), sft)
    out = tmp_path / "dpo"
    common = dict(method="dpo", save_every=3, resume_adapter=str(sft), learning_rate=1e-4)
    train(tiny_cfg(tiny_model_dir, iters=6, **common), pairs, out)
    assert losses(out)[0] == pytest.approx(0.6931, abs=2e-3)
    start = {k: np.array(v) for k, v in mx.load(str(sft / MLX_WEIGHTS)).items()}
    before = {k: np.array(v) for k, v in mx.load(str(out / MLX_WEIGHTS)).items()}  # read now, not lazily
    for key in (k for k in start if k.endswith("lora_b")):
        assert np.linalg.norm(before[key] - start[key]) < 0.5 * np.linalg.norm(start[key]), key
    train(tiny_cfg(tiny_model_dir, iters=9, **common), pairs, out, resume=True)
    assert [r["step"] for r in MetricsLog(out / "metrics.jsonl").rows() if "train_loss" in r] == list(range(1, 10))
    after = {k: np.array(v) for k, v in mx.load(str(out / MLX_WEIGHTS)).items()}
    assert any(np.abs(after[k] - before[k]).max() > 0 for k in before)


@pytest.mark.slow
def test_resume_adapter_of_another_shape_is_refused(tiny_model_dir, pairs, tmp_path):
    sft = tmp_path / "sft"
    train(tiny_cfg(tiny_model_dir, iters=1, save_every=1, rank=4), write_sft(tmp_path / "data"), sft)
    with pytest.raises(ConfigError, match="does not fit this run's adapter layers"):
        train(tiny_cfg(tiny_model_dir, method="orpo", iters=1, save_every=1, rank=8, resume_adapter=str(sft)),
              pairs, tmp_path / "orpo")


def test_dpo_reads_the_dataset_preferences_folder_by_default(tmp_path):
    workspace = Workspace.under(tmp_path)
    settings = Settings(tiny_cfg("/nonexistent/model", method="orpo"))
    with pytest.raises(InputError, match="no train.jsonl of preference rows") as info:
        run(settings, workspace, lambda message: None)
    assert info.value.path == workspace.dataset / "preferences" and "dantes-mlx prefs" in str(info.value)
