"""The backend's registration, `auto` choice, setting checks and mapping, and mlx-lm-identical masking.

Fast: no training. Run: pytest plugins/dantes-mlx-unsloth/tests/test_backend.py -q
"""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from conftest import row, tiny_settings
from dantes_mlx_unsloth.backend import UnslothBackend
from dantes_mlx_unsloth.data import IGNORE, Collator, Example, encode_row
from dantes_mlx_unsloth.run import PATH_ENV, choose_path, torch_device
from dantes_mlx_unsloth.settings import layers_to_transform, lora_kwargs, peft_module_names

from dantes_mlx.cli import main
from dantes_mlx.config import TrainConfig
from dantes_mlx.errors import ConfigError
from dantes_mlx.train.backends import entry_points, get_backend, list_backends

EXPECTED_DEVICE = "cuda" if torch.cuda.is_available() else "cpu-torch"


def test_entry_point_is_registered_and_usable():
    assert entry_points()["unsloth"].value == "dantes_mlx_unsloth.backend:UnslothBackend"
    info = next(i for i in list_backends() if i.name == "unsloth")
    assert info.usable, info.reason
    assert info.device == EXPECTED_DEVICE
    assert "peft" in info.reason and "torch" in info.reason


def test_backends_command_lists_unsloth_and_auto_picks_it():
    out = CliRunner().invoke(main, ["backends"]).output
    line = next(x for x in out.splitlines() if x.startswith("unsloth"))
    assert "usable" in line and "not usable" not in line and f"[{EXPECTED_DEVICE}]" in line
    assert "transformers + peft" in line or "Unsloth" in line
    assert "auto -> unsloth" in out


def test_auto_prefers_the_plugin_over_mlx_cpu_without_warning():
    choice = get_backend("auto")
    assert isinstance(choice.backend, UnslothBackend) and choice.warning is None
    assert choice.reason.startswith("auto: ") and ("CUDA" in choice.reason or "PyTorch on the CPU" in choice.reason)


@pytest.mark.parametrize("setting, value", [
    ("fine_tune_type", "full"), ("quantize_base", 4), ("quantize_base", 3), ("optimizer", "adamw_8bit"),
    ("optimizer", "lion"), ("lr_schedule", "polynomial"), ("base_model", "mlx-community/Mistral-7B-Instruct-v0.3-4bit"),
    ("base_model", "unsloth/mistral-7b-instruct-v0.3-bnb-4bit"), ("rank", 0)])
def test_unsupported_setting_names_the_setting_and_the_backend(tmp_path, setting, value):
    if torch.cuda.is_available() and (value == 4 or "bnb" in str(value) or value == "adamw_8bit"):
        pytest.skip("QLoRA and 8-bit optimizers are supported on a CUDA machine")
    cfg = tiny_settings(tmp_path, **{setting: value})
    with pytest.raises(ConfigError) as err:
        UnslothBackend().check(cfg)
    message = str(err.value)
    assert f"{setting}={value!r}" in message and "backend 'unsloth'" in message and "fix:" in message


def test_dora_and_every_mlx_optimizer_pass_the_check(tmp_path):
    for kw in (dict(fine_tune_type="dora"), dict(optimizer="adamw"), dict(optimizer="sgd"),
               dict(optimizer="adafactor"), dict(lr_schedule="cosine", warmup_steps=3)):
        UnslothBackend().check(tiny_settings(tmp_path, **kw))


def test_settings_map_onto_peft():
    cfg = TrainConfig(rank=8, scale=2.5, dropout=0.1, num_layers=2, fine_tune_type="dora",
                      target_modules=["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"])
    kwargs = lora_kwargs(cfg, model_layers=4)
    assert kwargs["r"] == 8 and kwargs["lora_alpha"] == 20 and kwargs["lora_dropout"] == 0.1
    assert kwargs["target_modules"] == ["down_proj", "q_proj", "v_proj"] and kwargs["use_dora"]
    assert kwargs["layers_to_transform"] == [2, 3] and kwargs["layers_pattern"] == "layers"
    assert "layers_to_transform" not in lora_kwargs(TrainConfig(num_layers=-1), model_layers=4)
    assert lora_kwargs(TrainConfig(rank=3, scale=1.5, num_layers=-1), 4)["lora_alpha"] == 4.5
    assert peft_module_names(["self_attn.o_proj", "cross.o_proj", "mlp.up_proj"]) == \
        ["cross.o_proj", "self_attn.o_proj", "up_proj"]
    with pytest.raises(ConfigError, match="num_layers=5"):
        layers_to_transform(5, 4)


@pytest.mark.parametrize("fmt", ["chat", "completions", "text"])
def test_tokens_and_prompt_mask_match_mlx_lm(tiny_model_dir, fmt):
    from mlx_lm.tuner.datasets import create_dataset
    from transformers import AutoTokenizer

    class Spec:
        mask_prompt = fmt != "text"

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [row(fmt, i) for i in range(4)]
    theirs = create_dataset(rows, tokenizer, Spec)
    for i, r in enumerate(rows):
        ids, offset = theirs.process(theirs[i])
        ours = encode_row(r, fmt, tokenizer, Spec.mask_prompt)
        assert (ours.ids, ours.offset) == (list(ids), offset)
        if fmt != "text":
            assert 0 < ours.offset < len(ours.ids)


def test_collator_pads_truncates_and_masks_the_prompt():
    collate = Collator(pad_id=0, max_seq_length=5)
    batch = collate([Example([1, 5, 6, 7, 8, 9, 2], offset=3), Example([1, 4, 2], offset=1)])
    assert batch["input_ids"].tolist() == [[1, 5, 6, 7, 8], [1, 4, 2, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, IGNORE, 7, 8], [IGNORE, 4, 2, IGNORE, IGNORE]]
    assert collate.tokens == 4  # trained tokens: 7, 8 and 4, 2


def test_forced_path_is_checked(monkeypatch):
    device = torch_device()
    monkeypatch.setenv(PATH_ENV, "loop")
    assert choose_path(device) == "loop"
    monkeypatch.setenv(PATH_ENV, "magic")
    with pytest.raises(ConfigError, match="loop"):
        choose_path(device)
    if device.type != "cuda":
        monkeypatch.setenv(PATH_ENV, "unsloth")
        with pytest.raises(ConfigError, match="CUDA"):
            choose_path(device)
