"""Training stage: mlx backend on the tiny real model (LoRA, DoRA, full, QLoRA), resume, metrics, errors.

In-process, no network: the tiny Mistral comes from the `tiny_model_dir` fixture; datasets are written here.
Run: /work/venv/bin/python -m pytest tests/train/test_train.py -q
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dantes_mlx.cli import main
from dantes_mlx.config import TrainConfig
from dantes_mlx.errors import ConfigError, DantesError, InputError, ModelError
from dantes_mlx.models.hub import resolve_model
from dantes_mlx.train.backends.mlx import MLXBackend
from dantes_mlx.train.data import load_dataset, resolve_iters
from dantes_mlx.train.metrics import MetricsLog
from dantes_mlx.train.stage import train

QA = [("Qui êtes-vous ?", "Je suis Edmond Dantès, marin de Marseille."),
      ("D'où venez-vous ?", "Je viens du château d'If, où j'ai souffert."),
      ("Que voulez-vous ?", "Je veux la justice, et rien d'autre."),
      ("Où étiez-vous ?", "J'étais en prison pendant quatorze ans.")]
PERSONA = "Tu es Edmond Dantès."


def write_chat_dataset(folder: Path, n_train: int = 16, n_valid: int = 8) -> Path:
    """A small, repetitive chat dataset in `dantes-mlx prepare`'s layout (extra keys included)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("valid", n_valid), ("test", 4)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(n):
                q, a = QA[i % len(QA)]
                # The persona folded into the user turn, as prepare writes it for Mistral's template.
                row = {"messages": [{"role": "user", "content": f"{PERSONA}\n\n{q}"},
                                    {"role": "assistant", "content": a}], "source_id": f"c{i % len(QA)}"}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return folder


def tiny_cfg(model_dir: Path, **kw) -> TrainConfig:
    """Settings sized for the tiny model: all layers, high learning rate, frequent reports."""
    base = dict(backend="mlx", base_model=str(model_dir), num_layers=-1, iters=20, learning_rate=1e-3,
                batch_size=4, warmup_steps=0, dropout=0.0, steps_per_report=5, steps_per_eval=10,
                save_every=10, val_batches=2, lr_schedule="constant")
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_chat_dataset(tmp_path_factory.mktemp("data") / "dataset")


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, dataset, tmp_path_factory):
    """One 20-step LoRA run shared by the tests that inspect its outputs."""
    out = tmp_path_factory.mktemp("lora") / "adapters"
    cfg = tiny_cfg(tiny_model_dir)
    return cfg, out, train(cfg, dataset, out)


# ---------------------------------------------------------------- fast: settings and data
def test_unsupported_setting_names_setting_and_backend():
    for bad in (dict(optimizer="adamw_8bit"), dict(fine_tune_type="ia3"), dict(lr_schedule="polynomial"),
                dict(grad_accumulation=3, save_every=10)):
        with pytest.raises(ConfigError) as err:
            MLXBackend().check(TrainConfig(**bad))
        setting = next(iter(bad)) if "save_every" not in bad else "save_every"
        assert setting in str(err.value) and "'mlx'" in str(err.value)


def test_resume_names_every_changed_shape_setting_at_once(tmp_path):
    import dataclasses

    from dantes_mlx.train.state import read_state

    saved = TrainConfig(base_model="/models/tiny", rank=8, num_layers=-1)
    (tmp_path / "train_state.json").write_text(json.dumps(
        {"step": 10, "iters": 20, "checkpoint": "0000010_adapters.safetensors", "config": dataclasses.asdict(saved)}))
    with pytest.raises(ConfigError) as err:
        read_state(tmp_path, TrainConfig(base_model="/models/other", rank=16, num_layers=-1, scale=9.0))
    message = str(err.value)
    assert "base_model='/models/other', rank=16" in message and "base_model='/models/tiny', rank=8" in message
    assert "scale" not in message  # not a shape setting: a resumed run may change it


def test_epochs_to_iters_and_batch_bounds():
    assert resolve_iters(TrainConfig(epochs=3, batch_size=4), n_train=10) == 6
    assert resolve_iters(TrainConfig(iters=7, epochs=0), n_train=10) == 7
    with pytest.raises(ConfigError, match="fewer than batch_size"):
        resolve_iters(TrainConfig(batch_size=8), n_train=5)


def test_dataset_errors_name_file_and_line(tmp_path):
    with pytest.raises(InputError, match="no train.jsonl"):
        load_dataset(tmp_path)
    write_chat_dataset(tmp_path, 4, 0)
    with open(tmp_path / "train.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(InputError) as err:
        load_dataset(tmp_path)
    assert "train.jsonl:5" in str(err.value)


def test_gated_repo_explains_licence_and_login(monkeypatch):
    import importlib

    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, Response

    http = importlib.import_module(Response.__module__.split(".")[0])  # httpx or its fork, per hub version

    def refuse(repo_id, **kw):  # what the Hub answers before the licence is accepted
        url = f"https://huggingface.co/api/models/{repo_id}"
        response = http.Response(403, request=http.Request("GET", url))
        raise GatedRepoError("403 Client Error: access to this repo is restricted", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(ModelError) as err:
        resolve_model("mistralai/Mistral-7B-Instruct-v0.3")
    text = str(err.value)
    assert "gated" in text and "licence" in text and "hf auth login" in text
    with pytest.raises(ModelError, match="not a Hugging Face repo id"):
        resolve_model("./no/such/folder")


# ---------------------------------------------------------------- slow: real training on the tiny model
@pytest.mark.slow
def test_lora_writes_adapter_that_mlx_lm_loads(lora_run, tiny_model_dir):
    import mlx.core as mx
    from mlx_lm import load

    cfg, out, result = lora_run
    for name in ("adapters.safetensors", "adapter_config.json", "train_config.yaml", "chat_template.jinja",
                 "0000010_adapters.safetensors", "0000020_adapters.safetensors", "train_state.json"):
        assert (out / name).is_file(), name
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["fine_tune_type"] == "lora"
    assert adapter_cfg["lora_parameters"] == {"rank": 16, "scale": 2.0, "dropout": 0.0,
                                              "keys": cfg.target_modules}
    base, tok = load(str(tiny_model_dir))
    tuned, _ = load(str(tiny_model_dir), adapter_path=str(out))
    ids = mx.array([tok.encode("Qui êtes-vous ?")])
    assert not mx.allclose(base(ids), tuned(ids), atol=1e-3).item()
    assert result.steps == 20 and result.backend == "mlx"


@pytest.mark.slow
def test_train_records_the_base_models_fingerprint(lora_run, tiny_model_dir, tmp_path):
    from dantes_mlx.models.fingerprint import model_fingerprint
    from dantes_mlx.workspace import BASE_FINGERPRINT_FILE

    _, out, result = lora_run
    record = json.loads((out / BASE_FINGERPRINT_FILE).read_text(encoding="utf-8"))
    assert record["base_model"] == str(tiny_model_dir) and record == {"base_model": str(tiny_model_dir),
                                                                      **model_fingerprint(tiny_model_dir)}
    assert result.files["base_fingerprint"] == out / BASE_FINGERPRINT_FILE
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")  # same files elsewhere: same fingerprint
    assert model_fingerprint(copy)["sha256"] == record["sha256"]


@pytest.mark.slow
def test_loss_falls_and_metrics_and_plot_are_written(lora_run):
    _, out, result = lora_run
    rows = MetricsLog(out / "metrics.jsonl").rows()
    train_rows = [r for r in rows if "train_loss" in r]
    val_rows = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in train_rows] == [5, 10, 15, 20]
    assert {"lr", "tokens_per_sec", "peak_memory_gb", "trained_tokens"} <= set(train_rows[0])
    assert train_rows[-1]["train_loss"] < 0.5 * train_rows[0]["train_loss"]
    assert val_rows[-1]["val_loss"] < 0.5 * val_rows[0]["val_loss"]
    png = (out / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert result.train_loss == train_rows[-1]["train_loss"]


@pytest.mark.slow
def test_resume_continues_from_saved_step(lora_run, tiny_model_dir, dataset, tmp_path, monkeypatch):
    import mlx.core as mx

    from dantes_mlx.train.backends.mlx_run import MLXRun

    cfg, full_run, _ = lora_run
    out = tmp_path / "adapters"
    original = MLXRun.step_done

    def interrupt_after_first_checkpoint(self, local, optimizer, iters):
        original(self, local, optimizer, iters)
        if self.start + local == 10:
            raise KeyboardInterrupt

    monkeypatch.setattr(MLXRun, "step_done", interrupt_after_first_checkpoint)
    with pytest.raises(DantesError, match="--resume") as err:
        train(cfg, dataset, out)
    assert "step 10" in str(err.value)
    assert json.loads((out / "train_state.json").read_text())["step"] == 10
    monkeypatch.setattr(MLXRun, "step_done", original)

    result = train(cfg, dataset, out, resume=True)
    assert result.steps == 20
    steps = [r["step"] for r in MetricsLog(out / "metrics.jsonl").rows() if "train_loss" in r]
    assert steps == [5, 10, 15, 20]  # reports after the checkpoint were dropped, then continued
    assert (out / "0000020_adapters.safetensors").is_file()
    resumed, straight = mx.load(str(out / "adapters.safetensors")), mx.load(str(full_run / "adapters.safetensors"))
    assert resumed.keys() == straight.keys()
    for key in straight:  # same data order, optimizer moments and schedule: same weights
        assert mx.allclose(resumed[key], straight[key], atol=1e-4).item(), key
    with pytest.raises(ConfigError, match="rank"):
        train(tiny_cfg(tiny_model_dir, rank=4), dataset, out, resume=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind,marker", [("dora", ".m"), ("full", "mlp.down_proj.weight")])
def test_dora_and_full_run_one_step(kind, marker, tiny_model_dir, dataset, tmp_path):
    from mlx_lm import load

    out = tmp_path / kind
    result = train(tiny_cfg(tiny_model_dir, fine_tune_type=kind, iters=1, steps_per_report=1,
                            val_batches=1), dataset, out)
    import mlx.core as mx

    keys = mx.load(str(out / "adapters.safetensors")).keys()
    assert any(k.endswith(marker) for k in keys), sorted(keys)[:5]
    load(str(tiny_model_dir), adapter_path=str(out))
    assert result.steps == 1


@pytest.mark.slow
def test_qlora_on_quantized_copy(tiny_model_dir, dataset, tmp_path):
    import yaml
    from mlx_lm import convert, load

    quantized = tmp_path / "tiny-4bit"
    convert(str(tiny_model_dir), str(quantized), quantize=True, q_group_size=64, q_bits=4)
    out = tmp_path / "qlora"
    train(tiny_cfg(quantized, iters=1, steps_per_report=1, val_batches=1), dataset, out)
    derived = yaml.safe_load((out / "train_config.yaml").read_text())["derived"]
    assert derived["qlora"] is True
    load(str(quantized), adapter_path=str(out))
    with pytest.raises(ConfigError, match="already quantized"):
        train(tiny_cfg(quantized, quantize_base=4, iters=1), dataset, tmp_path / "again")


@pytest.mark.slow
def test_target_modules_matching_nothing_lists_valid_keys(tiny_model_dir, dataset, tmp_path):
    with pytest.raises(ConfigError) as err:
        train(tiny_cfg(tiny_model_dir, target_modules=["attention.wq"], iters=1), dataset, tmp_path / "a")
    assert "self_attn.q_proj" in str(err.value) and "target_modules" in str(err.value)


@pytest.mark.slow
def test_train_command_with_epochs(tiny_model_dir, dataset, tmp_path):
    out = tmp_path / "adapters"
    result = CliRunner().invoke(main, [
        "train", "--data", str(dataset), "--adapter-path", str(out), "--backend", "mlx",
        "--base-model", str(tiny_model_dir), "--num-layers", "-1", "--epochs", "1", "--batch-size", "8",
        "--target-modules", "self_attn.q_proj,self_attn.v_proj", "--steps-per-report", "1",
        "--val-batches", "1", "--quantize-base", "8", "--no-mask-prompt", "--grad-checkpoint",
        "--grad-accumulation", "2", "--save-every", "2", "--lr-schedule", "linear", "--warmup-steps", "1"])
    assert result.exit_code == 0, result.output
    assert "2 steps" in result.output  # 16 rows / batch 8 = 2 steps per epoch
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["lora_parameters"]["keys"] == ["self_attn.q_proj", "self_attn.v_proj"]
    assert adapter_cfg["mask_prompt"] is False and adapter_cfg["quantize_base"] == 8
    assert adapter_cfg["grad_accumulation_steps"] == 2 and adapter_cfg["grad_checkpoint"] is True


@pytest.mark.slow
def test_train_without_valid_jsonl_says_there_is_no_validation_file(tiny_model_dir, tmp_path, capfd):
    data = write_chat_dataset(tmp_path / "dataset", n_train=8)
    (data / "valid.jsonl").unlink()
    result = train(tiny_cfg(tiny_model_dir, iters=2, save_every=2), data, tmp_path / "adapters")
    err = capfd.readouterr().err
    assert result.steps == 2 and result.val_loss is None  # mlx-lm trains on without a validation set
    assert f"no valid.jsonl in {data}" in err and "no validation loss" in err and "dantes-mlx prepare" in err
    assert "0 rows" not in err


def test_validation_note_tells_absent_from_too_small(tmp_path):
    from dantes_mlx.train.data import validation_note

    assert validation_note(tmp_path, 0, 4).startswith(f"note: no valid.jsonl in {tmp_path}")
    (tmp_path / "valid.jsonl").write_text("", encoding="utf-8")
    small = validation_note(tmp_path, 2, 4)
    assert "has 2 rows, fewer than batch_size=4" in small and "no validation loss" in small
    assert validation_note(tmp_path, 4, 4) is None


# ---------------------------------------------------------------- distributed (mlx.launch, ring, localhost)
def _first_losses(out: Path) -> list[float]:
    return [r["train_loss"] for r in MetricsLog(out / "metrics.jsonl").rows() if "train_loss" in r]


@pytest.mark.slow
def test_two_process_ring_matches_one_process(tiny_model_dir, dataset, tmp_path):
    """mlx.launch -n 2 (ring backend over localhost): each rank takes half of the batch and mlx-lm's
    trainer averages gradients, so the losses match one process with the whole batch."""
    launcher = Path(sys.executable).with_name("mlx.launch")
    if not launcher.exists():
        pytest.skip(f"mlx.launch not found next to {sys.executable}")
    args = ["-m", "dantes_mlx", "train", "--data", str(dataset), "--backend", "mlx",
            "--base-model", str(tiny_model_dir), "--num-layers", "-1", "--iters", "2", "--batch-size", "8",
            "--learning-rate", "1e-3", "--lr-schedule", "constant", "--warmup-steps", "0", "--dropout", "0",
            "--steps-per-report", "1", "--steps-per-eval", "1000", "--val-batches", "1"]
    single, double = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, *args, "--adapter-path", str(single)], check=True, timeout=300,
                   capture_output=True)
    launched = subprocess.run([str(launcher), "-n", "2", "--backend", "ring", "--", sys.executable, *args,
                               "--adapter-path", str(double)], timeout=300, capture_output=True, text=True)
    assert launched.returncode == 0 and (double / "metrics.jsonl").is_file(), launched.stderr[-2000:]
    one, two = _first_losses(single), _first_losses(double)
    assert len(one) == len(two) == 2
    assert two == pytest.approx(one, rel=0.03)
    assert one[-1] < one[0]  # it trained
    shutil.rmtree(single)


# ---------------------------------------------------------------- a YAML written for mlx_lm.lora
def test_yaml_exponent_learning_rate_is_a_float(tmp_path):
    """PyYAML reads `1e-5` (no dot) as a string; mlx_lm.lora's loader reads it as a float, and so do we."""
    from dantes_mlx.config import load_yaml, section

    path = tmp_path / "dantes.yaml"
    path.write_text("train:\n  learning_rate: 1e-5\n  scale: 20\n  rank: sixteen\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        section(TrainConfig, load_yaml(path))
    assert "rank" in str(err.value) and f"{path}:4" in str(err.value)
    path.write_text("train:\n  learning_rate: 1e-5\n  scale: 20\n", encoding="utf-8")
    cfg = section(TrainConfig, load_yaml(path))
    assert cfg.learning_rate == 1e-5 and isinstance(cfg.scale, float)


MLX_LM_LORA_YAML = """\
model: mlx-community/Mistral-7B-Instruct-v0.3-4bit
train: true
data: data/dataset
fine_tune_type: dora
num_layers: 8
batch_size: 2
iters: 300
learning_rate: 1e-5
grad_accumulation_steps: 4
lora_parameters:
  keys: [self_attn.q_proj, self_attn.v_proj]
  rank: 8
  scale: 20.0
  dropout: 0.0
lr_schedule:
  name: cosine_decay
  warmup: 20
  warmup_init: 1e-7
  arguments: [1e-5, 280, 1e-7]
adapter_path: my_adapters
resume_adapter_file: old/adapters.safetensors
report_to: wandb
"""


def test_mlx_lm_lora_yaml_is_refused_with_its_translation(tmp_path):
    """`dantes-mlx train --config lora.yaml` on mlx_lm.lora's flat layout: one error naming each key and
    what to write instead, with mlx-lm's defaults where ours differ (so the run stays the same)."""
    import yaml

    path = tmp_path / "lora.yaml"
    path.write_text(MLX_LM_LORA_YAML, encoding="utf-8")
    result = CliRunner().invoke(main, ["train", "--config", str(path)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    text = result.output
    assert "mlx_lm.lora" in text and str(path) in text
    for hint in ("--data data/dataset", "--adapter-path my_adapters", "resume_adapter_file", "report_to",
                 "lr_schedule"):
        assert hint in text, hint
    snippet = yaml.safe_load(text[text.index("\ntrain:\n"):text.index("and for the other keys")])
    assert snippet["train"] == {
        "base_model": "mlx-community/Mistral-7B-Instruct-v0.3-4bit", "fine_tune_type": "dora", "num_layers": 8,
        "batch_size": 2, "iters": 300, "learning_rate": 1e-5, "grad_accumulation": 4,
        "target_modules": ["self_attn.q_proj", "self_attn.v_proj"], "rank": 8, "scale": 20.0, "dropout": 0.0,
        "lr_schedule": "cosine", "warmup_steps": 20,
        # mlx-lm's defaults where ours differ and the file left them out
        "mask_prompt": False, "steps_per_eval": 200}
    MLXBackend().check(TrainConfig(**snippet["train"]))  # every key is a valid setting with a valid value


# ---------------------------------------------------------------- prompt masking that would leave nothing to learn
def write_rows(folder: Path, train_rows: list[dict], valid_rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train_rows), ("valid", valid_rows)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                              encoding="utf-8")
    return folder


@pytest.mark.slow
def test_mask_prompt_with_a_system_message_the_template_drops_is_refused(tiny_model_dir, tmp_path):
    """Mistral v0.3's template keeps the system message in the prompt mlx-lm masks but drops it from the
    training row, so the mask covers the answer: a NaN loss (or a truncated answer), never an error."""
    persona = "Tu es Edmond Dantès, le comte de Monte-Cristo, et tu parles le français du XIXe siècle. " * 2
    row = {"messages": [{"role": "system", "content": persona}, {"role": "user", "content": "Qui êtes-vous ?"},
                        {"role": "assistant", "content": "Je suis Edmond."}]}
    data = write_rows(tmp_path / "data", [row] * 8, [row] * 4)
    with pytest.raises(InputError) as err:
        train(tiny_cfg(tiny_model_dir, iters=2, save_every=2), data, tmp_path / "adapters")
    text = str(err.value)
    assert f"{data / 'train.jsonl'}:1" in text and "system" in text and "mask_prompt" in text
    assert "dantes-mlx prepare" in text
    assert not (tmp_path / "adapters" / "adapters.safetensors").exists()


def test_a_row_the_chat_template_cannot_format_names_its_line(tiny_model_dir, tmp_path):
    """The tiny model's template has no tool roles: a tools row is an error naming train.jsonl:line before
    training starts, not a jinja traceback in the middle of the run."""
    plain = {"messages": [{"role": "user", "content": "Qui ?"}, {"role": "assistant", "content": "Edmond."}]}
    call = {"messages": [{"role": "user", "content": "Quelle heure ?"},
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"type": "function", "function": {"name": "heure", "arguments": "{}"}}]},
                         {"role": "tool", "content": "midi"}, {"role": "assistant", "content": "Il est midi."}],
            "tools": [{"type": "function", "function": {"name": "heure", "parameters": {"type": "object"}}}]}
    data = write_rows(tmp_path / "data", [plain] * 4 + [call] + [plain] * 3, [plain] * 4)
    with pytest.raises(InputError) as err:
        train(tiny_cfg(tiny_model_dir, iters=2, save_every=2), data, tmp_path / "adapters")
    assert f"{data / 'train.jsonl'}:5" in str(err.value) and "chat template" in str(err.value)
    assert not (tmp_path / "adapters" / "adapters.safetensors").exists()


@pytest.mark.slow
def test_rows_whose_prompt_fills_max_seq_length_are_reported(tiny_model_dir, tmp_path, capfd):
    """A prompt of max_seq_length tokens or more leaves no answer token after mlx-lm's truncation; a batch of
    such rows has a NaN loss that poisons the adapter. A few: warned; enough to fill a batch: refused."""
    short = {"messages": [{"role": "user", "content": "Qui ?"}, {"role": "assistant", "content": "Edmond."}]}
    long = {"messages": [{"role": "user", "content": "Qui êtes-vous donc, monsieur ? " * 20},
                         {"role": "assistant", "content": "Edmond."}]}
    cfg = tiny_cfg(tiny_model_dir, iters=2, save_every=2, max_seq_length=32, steps_per_eval=1000)
    data = write_rows(tmp_path / "few", [short] * 6 + [long] + [short], [short] * 4)
    result = train(cfg, data, tmp_path / "a")
    err = capfd.readouterr().err
    assert f"1 row of {data / 'train.jsonl'} (first: line 7)" in err and "max_seq_length=32" in err
    assert result.train_loss == result.train_loss  # not NaN
    data = write_rows(tmp_path / "many", [short] * 4 + [long] * 4, [short] * 4)
    with pytest.raises(InputError) as err:
        train(cfg, data, tmp_path / "b")
    assert f"{data / 'train.jsonl'}:5" in str(err.value) and "4 rows" in str(err.value)
    assert "max_seq_length" in str(err.value)


# ---------------------------------------------------------------- Ctrl-C between checkpoints
@pytest.mark.slow
def test_ctrl_c_between_checkpoints_saves_the_adapter_and_resumes_there(lora_run, dataset, tmp_path, monkeypatch):
    """mlx_lm.lora loses every step since its last save on Ctrl-C; we save at the last optimizer update, and
    --resume continues from it to the same weights as an uninterrupted run."""
    import mlx.core as mx

    from dantes_mlx.train.backends.mlx_run import MLXRun

    cfg, full_run, _ = lora_run
    out = tmp_path / "adapters"
    original = MLXRun.step_done

    def interrupt_at_14(self, local, optimizer, iters):
        original(self, local, optimizer, iters)
        if self.start + local == 14:  # save_every=10: the last checkpoint is step 10
            raise KeyboardInterrupt

    monkeypatch.setattr(MLXRun, "step_done", interrupt_at_14)
    with pytest.raises(DantesError) as err:
        train(cfg, dataset, out)
    assert "saved at step 14" in str(err.value) and "--resume" in str(err.value)
    assert json.loads((out / "train_state.json").read_text())["step"] == 14
    assert (out / "0000014_adapters.safetensors").is_file()
    with pytest.raises(ConfigError, match="interrupted run \\(step 14 of 20\\)") as err:
        train(cfg, dataset, out)  # forgot --resume: refused before anything is cleared
    assert "--resume" in err.value.fix and "--restart" in err.value.fix
    assert (out / "0000014_adapters.safetensors").is_file()
    monkeypatch.setattr(MLXRun, "step_done", original)
    result = train(cfg, dataset, out, resume=True)
    assert result.steps == 20
    steps = [r["step"] for r in MetricsLog(out / "metrics.jsonl").rows() if "train_loss" in r]
    assert steps == [5, 10, 19, 20]  # mlx-lm reports every 5 steps of the resumed run: 14 + 5, then the last
    resumed, straight = mx.load(str(out / "adapters.safetensors")), mx.load(str(full_run / "adapters.safetensors"))
    for key in straight:
        assert mx.allclose(resumed[key], straight[key], atol=1e-4).item(), key


def test_a_finished_run_may_be_trained_over_and_resume_with_restart_is_refused(tmp_path):
    from dantes_mlx.train.state import check_unfinished
    from dantes_mlx.workspace import STATE_FILE

    (tmp_path / STATE_FILE).write_text(json.dumps({"step": 20, "iters": 20, "checkpoint": "x"}))
    check_unfinished(tmp_path)  # finished: a new run over it is what the user asked for
    (tmp_path / STATE_FILE).write_text("{not json")
    check_unfinished(tmp_path)  # unreadable: nothing a --resume could use
    with pytest.raises(ConfigError, match="contradict"):
        train(TrainConfig(), tmp_path, tmp_path, resume=True, restart=True)


def test_a_diverged_run_is_an_error_and_its_metrics_stay_strict_json(tmp_path):
    from dantes_mlx.train.backends.base import TrainResult
    from dantes_mlx.train.stage import check_diverged

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"step": 5, "train_loss": 2.5})
    check_diverged(TrainResult("mlx", tmp_path, 5, train_loss=2.5), TrainConfig())
    log.append({"step": 10, "train_loss": float("nan"), "learning_rate": 1e-5})
    line = (tmp_path / "metrics.jsonl").read_text().splitlines()[-1]
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in {line}")) == {
        "step": 10, "train_loss": None, "learning_rate": 1e-5, "non_finite": ["train_loss"]}
    assert log.last("train_loss") == 2.5
    with pytest.raises(ModelError, match="diverged.*from step 10") as err:
        check_diverged(TrainResult("mlx", tmp_path, 10, train_loss=float("nan")), TrainConfig(learning_rate=0.5))
    assert "learning_rate (now 0.5)" in err.value.fix and "--restart" in err.value.fix


def test_ctrl_c_before_any_update_does_not_send_to_resume(tmp_path):
    from dantes_mlx.train.state import interrupted

    text = str(interrupted(0, tmp_path))
    assert "--resume" not in text.replace("without --resume", "") and "nothing saved" in text
    assert "saved at step 7" in str(interrupted(7, tmp_path))
