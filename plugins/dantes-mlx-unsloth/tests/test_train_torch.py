"""Training the tiny model on the CPU with the plugin: loss falls, PEFT adapter + metrics + plot, resume, formats.

In-process, no network, no GPU (the built-in torch loop; the TRL path when trl is installed).
Run: pytest plugins/dantes-mlx-unsloth/tests/test_train_torch.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import tiny_settings, write_dataset
from dantes_mlx_unsloth.run import PATH_ENV

from dantes_mlx.cli import main
from dantes_mlx.train.metrics import MetricsLog
from dantes_mlx.train.stage import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cli_run(tiny_model_dir, chat_data, tmp_path_factory):
    """`dantes-mlx train --backend unsloth` through the CLI: 12 steps of the built-in loop on chat data."""
    out = tmp_path_factory.mktemp("run") / "adapters"
    args = ["train", "--backend", "unsloth", "--data", str(chat_data), "--adapter-path", str(out),
            "--base-model", str(tiny_model_dir), "--num-layers", "-1", "--iters", "12", "--learning-rate", "2e-3",
            "--warmup-steps", "0", "--dropout", "0", "--steps-per-report", "4", "--steps-per-eval", "6",
            "--save-every", "6", "--val-batches", "2", "--lr-schedule", "constant", "--max-seq-length", "128",
            "--rank", "4", "--scale", "4.0"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PATH_ENV, "loop")
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_cli_trains_and_the_loss_falls(cli_run):
    out, output = cli_run
    assert "backend unsloth: transformers + peft + the built-in torch loop on cpu" in output
    assert "backend unsloth, 12 steps" in output
    rows = MetricsLog(out / "metrics.jsonl").rows()
    train_losses = [r["train_loss"] for r in rows if "train_loss" in r]
    val_losses = [r["val_loss"] for r in rows if "val_loss" in r]
    assert [r["step"] for r in rows if "train_loss" in r] == [4, 8, 12]
    assert train_losses[-1] < train_losses[0] - 1.0, train_losses
    assert val_losses[-1] < val_losses[0], val_losses
    assert all(r["tokens_per_sec"] > 0 and r["trained_tokens"] > 0 for r in rows if "train_loss" in r)


def test_outputs_are_a_peft_adapter_with_our_metrics_plot_and_config(cli_run, tiny_model_dir):
    out, _ = cli_run
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "adapters.safetensors").exists() and not (out / "README.md").exists()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 16
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    resolved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert resolved["derived"]["backend"] == "unsloth" and resolved["derived"]["path"] == "loop"
    assert resolved["derived"]["mask_prompt"] is True and resolved["train"]["rank"] == 4
    assert (out / "chat_template.jinja").read_text().startswith("{%- if messages[0]['role'] == 'system'")
    state = json.loads((out / "train_state.json").read_text())
    assert state["step"] == 12 and (out / state["checkpoint"]).is_file()


def test_adapter_loads_in_real_peft_and_applies_alpha_over_r(cli_run, tiny_model_dir):
    """PeftModel.from_pretrained on the tiny model equals base weights + (alpha / r) * B @ A, by hand."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out, _ = cli_run
    ids = torch.tensor([[1, 3, 50, 60, 70, 4, 80]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        peft_logits = peft_model(input_ids=ids).logits
    assert (peft_logits - base_logits).abs().max() > 1e-3  # the trained adapter changes predictions

    manual = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    weights = load_file(str(out / "adapter_model.safetensors"))
    params = dict(manual.named_parameters())
    for key, a in weights.items():
        if ".lora_A." in key:
            b = weights[key.replace(".lora_A.", ".lora_B.")]
            name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            with torch.no_grad():
                params[name] += (16 / 4) * b @ a
    with torch.no_grad():
        manual_logits = manual(input_ids=ids).logits
    assert torch.allclose(manual_logits, peft_logits, atol=1e-4)


def test_resume_continues_the_same_run(tiny_model_dir, chat_data, tmp_path, monkeypatch):
    """6 steps then --resume to 10 gives the adapter of a straight 10-step run (same batches, optimizer)."""
    from safetensors.numpy import load_file

    monkeypatch.setenv(PATH_ENV, "loop")
    cfg = dict(iters=10, save_every=2, steps_per_report=2, steps_per_eval=100, rank=2)
    straight = train(tiny_settings(tiny_model_dir, **cfg), chat_data, tmp_path / "straight")
    train(tiny_settings(tiny_model_dir, **{**cfg, "iters": 6}), chat_data, tmp_path / "resumed")
    resumed = train(tiny_settings(tiny_model_dir, **cfg), chat_data, tmp_path / "resumed", resume=True)
    assert resumed.steps == straight.steps == 10
    a = load_file(str(tmp_path / "straight" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5)
    steps = [r["step"] for r in MetricsLog(tmp_path / "resumed" / "metrics.jsonl").rows() if "train_loss" in r]
    assert steps == [2, 4, 6, 8, 10]


@pytest.mark.parametrize("fmt", ["completions", "text"])
def test_other_formats_train(tiny_model_dir, tmp_path, fmt, monkeypatch):
    monkeypatch.setenv(PATH_ENV, "loop")
    data = write_dataset(tmp_path / fmt, fmt, n_train=8, n_valid=4)
    result = train(tiny_settings(tiny_model_dir, iters=4, steps_per_report=2, num_layers=1,
                                 target_modules=["mlp.down_proj"]), data, tmp_path / "adapters")
    config = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert result.steps == 4 and config["target_modules"] == ["down_proj"] and config["layers_to_transform"] == [1]
    resolved = yaml.safe_load((tmp_path / "adapters" / "train_config.yaml").read_text())
    assert resolved["derived"]["data_format"] == fmt and resolved["derived"]["mask_prompt"] is (fmt != "text")


def test_trl_path_trains_with_the_same_metrics(tiny_model_dir, chat_data, tmp_path, monkeypatch):
    pytest.importorskip("trl", reason="trl is an optional extra (pip install 'dantes-mlx-unsloth[trl]')")
    monkeypatch.setenv(PATH_ENV, "trl")
    result = train(tiny_settings(tiny_model_dir, iters=12, grad_accumulation=2, save_every=6), chat_data,
                   tmp_path / "adapters")
    rows = MetricsLog(tmp_path / "adapters" / "metrics.jsonl").rows()
    train_losses = [r["train_loss"] for r in rows if "train_loss" in r]
    assert [r["step"] for r in rows if "train_loss" in r] == [4, 8, 12]
    assert train_losses[-1] < train_losses[0] and result.val_loss is not None
    trained = [r["trained_tokens"] for r in rows if "train_loss" in r]
    assert 0 < trained[0] < trained[1] < trained[2]  # counted per training forward, not per prefetch
    assert (tmp_path / "adapters" / "adapter_model.safetensors").is_file()
    resolved = yaml.safe_load((tmp_path / "adapters" / "train_config.yaml").read_text())
    assert resolved["derived"]["path"] == "trl"
    assert Path(tmp_path / "adapters" / "loss.png").is_file()


def test_training_without_valid_jsonl_says_there_is_no_validation(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(PATH_ENV, "loop")
    data = write_dataset(tmp_path / "data", n_train=8, n_valid=4)
    (data / "valid.jsonl").unlink()
    result = train(tiny_settings(tiny_model_dir, iters=2, steps_per_report=1), data, tmp_path / "adapters")
    said = capsys.readouterr()
    assert result.steps == 2
    assert "no valid.jsonl" in said.out + said.err and "dantes-mlx prepare" in said.out + said.err
    assert not [r for r in MetricsLog(tmp_path / "adapters" / "metrics.jsonl").rows() if "val_loss" in r]


def on_training_forward(monkeypatch, after: int, effect: str) -> dict:
    """From training forward `after` + 1 on, make the output NaN (a diverging run) or raise KeyboardInterrupt
    (Ctrl-C), through a hook on the embeddings; set the returned dict's "on" to False to stop."""
    from dantes_mlx_unsloth.run import TorchRun

    original, switch = TorchRun.load, {"on": True, "seen": 0}

    def load(self, model_dir, n_layers):
        model, tokenizer = original(self, model_dir, n_layers)

        def hook(module, args, output):
            if module.training and switch["on"]:
                switch["seen"] += 1
                if switch["seen"] > after:
                    if effect == "interrupt":
                        raise KeyboardInterrupt
                    return output * float("nan")
            return None

        model.get_input_embeddings().register_forward_hook(hook)
        return model, tokenizer

    monkeypatch.setattr(TorchRun, "load", load)
    return switch


@pytest.mark.parametrize("path", ["loop", "trl"])
def test_a_nan_loss_ends_the_run_with_an_error_even_without_validation(tiny_model_dir, tmp_path, monkeypatch, path):
    """The Trainer's logging_nan_inf_filter logged a NaN step as the window's mean (0.0 when all were NaN): with
    no valid.jsonl to show NaN too, a diverged adapter was reported as a success with train loss 0."""
    from dantes_mlx.errors import ModelError

    if path == "trl":
        pytest.importorskip("trl", reason="trl is an optional extra (pip install 'dantes-mlx-unsloth[trl]')")
    monkeypatch.setenv(PATH_ENV, path)
    data = write_dataset(tmp_path / "data", n_train=8, n_valid=4)
    (data / "valid.jsonl").unlink()
    on_training_forward(monkeypatch, after=5, effect="nan")
    with pytest.raises(ModelError, match="diverged.*from step 8") as err:
        train(tiny_settings(tiny_model_dir, iters=12), data, tmp_path / "adapters")
    assert "--restart" in err.value.fix
    rows = [r for r in MetricsLog(tmp_path / "adapters" / "metrics.jsonl").rows() if "step" in r]
    assert [(r["step"], r.get("train_loss"), r.get("non_finite")) for r in rows][1:] == [
        (8, None, ["train_loss"]), (12, None, ["train_loss"])]


@pytest.mark.parametrize("path", ["loop", "trl"])
def test_ctrl_c_saves_at_the_last_update_and_a_fresh_run_over_it_is_refused(tiny_model_dir, chat_data, tmp_path,
                                                                           monkeypatch, path):
    """As with backend mlx: Ctrl-C saves adapter, optimizer and train_state.json at the last optimizer update
    and says --resume; a fresh run over it is refused (it would delete the checkpoints); --resume finishes it."""
    from dantes_mlx.errors import ConfigError, DantesError

    if path == "trl":
        pytest.importorskip("trl", reason="trl is an optional extra (pip install 'dantes-mlx-unsloth[trl]')")
    monkeypatch.setenv(PATH_ENV, path)
    cfg = tiny_settings(tiny_model_dir, iters=12, grad_accumulation=2, save_every=6, steps_per_report=2, rank=2)
    out = tmp_path / "adapters"
    switch = on_training_forward(monkeypatch, after=9, effect="interrupt")  # steps 1-9 done: last update at 8
    with pytest.raises(DantesError) as err:
        train(cfg, chat_data, out)
    assert "saved at step 8" in str(err.value) and "--resume" in err.value.fix
    state = json.loads((out / "train_state.json").read_text())
    assert (state["step"], state["iters"]) == (8, 12) and (out / state["checkpoint"]).is_file()
    with pytest.raises(ConfigError, match="interrupted run \\(step 8 of 12\\)"):
        train(cfg, chat_data, out)  # forgot --resume: refused before anything is cleared
    assert (out / state["checkpoint"]).is_file()
    switch["on"] = False
    result = train(cfg, chat_data, out, resume=True)
    assert result.steps == 12
    assert [r["step"] for r in MetricsLog(out / "metrics.jsonl").rows() if "train_loss" in r] == [2, 4, 6, 8, 10, 12]
    assert json.loads((out / "train_state.json").read_text())["step"] == 12


@pytest.mark.parametrize("backend", ["mlx", "unsloth"])
def test_rows_whose_prompt_fills_max_seq_length_are_refused_as_with_mlx(tiny_model_dir, chat_data, tmp_path, backend):
    """Masked rows that keep no answer token after truncation: a batch of them trains on nothing (TRL: loss 0)
    or to NaN (the loop). Backend mlx refuses them up front naming file:line; unsloth must too."""
    from dantes_mlx.errors import InputError

    with pytest.raises(InputError, match="keep no answer token within max_seq_length=8") as err:
        train(tiny_settings(tiny_model_dir, backend=backend, max_seq_length=8, iters=2), chat_data,
              tmp_path / "adapters")
    assert "train.jsonl:1" in str(err.value) and "dantes-mlx validate" in err.value.fix
    assert not (tmp_path / "adapters" / "metrics.jsonl").exists()


@pytest.mark.parametrize("backend", ["mlx", "unsloth"])
def test_a_system_message_the_template_drops_is_refused_with_mask_prompt(tiny_model_dir, tmp_path, backend):
    """Mistral v0.3's template drops the system message of a row ending with the answer but keeps it in the
    prompt mask_prompt masks: the mask then covers the answer. Backend mlx refuses it; unsloth must too."""
    from dantes_mlx.errors import InputError

    data = write_dataset(tmp_path / "data", n_train=8, n_valid=4)
    rows = [{"messages": [{"role": "system", "content": "Tu es Edmond Dantès."},
                          {"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in [("Qui êtes-vous ?", "Edmond Dantès.")] * 8]
    (data / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    with pytest.raises(InputError, match="drops the system message") as err:
        train(tiny_settings(tiny_model_dir, backend=backend, iters=2), data, tmp_path / "adapters")
    assert "train.jsonl:1" in str(err.value) and "dantes-mlx prepare" in err.value.fix


def test_trl_path_takes_the_same_update_as_the_loop_and_mlx_lm_no_gradient_clipping(tiny_model_dir, tmp_path,
                                                                                    monkeypatch):
    """mlx-lm clips no gradient; the Trainer clipped to max_grad_norm=1.0 by default, so with the same settings
    the TRL path took smaller steps than the loop (and backend mlx). One SGD step on one full batch: equal."""
    from safetensors.numpy import load_file

    pytest.importorskip("trl", reason="trl is an optional extra (pip install 'dantes-mlx-unsloth[trl]')")
    data = write_dataset(tmp_path / "data", n_train=8, n_valid=4)
    cfg = tiny_settings(tiny_model_dir, optimizer="sgd", learning_rate=0.5, batch_size=8, iters=1, save_every=1,
                        steps_per_report=1, rank=2)
    for path in ("loop", "trl"):
        monkeypatch.setenv(PATH_ENV, path)
        train(cfg, data, tmp_path / path)
    loop, trl = (load_file(str(tmp_path / p / "adapter_model.safetensors")) for p in ("loop", "trl"))
    assert loop.keys() == trl.keys()
    assert max(np.abs(loop[k]).max() for k in loop if "lora_B" in k) > 1e-3  # the step moved B away from 0
    for key in loop:
        np.testing.assert_allclose(trl[key], loop[key], atol=1e-5, rtol=1e-4)
