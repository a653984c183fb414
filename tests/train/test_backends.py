"""Backend discovery (entry points), `dantes-mlx backends`, unknown names, and `--backend auto` with fakes.

In-process, no network, no model. Run: /work/venv/bin/python -m pytest tests/train/test_backends.py -q
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from click.testing import CliRunner

import dantes_mlx.train.backends as backends
from dantes_mlx.cli import main
from dantes_mlx.errors import ConfigError
from dantes_mlx.train.backends import TrainResult, choose_auto, entry_points, get_backend, list_backends
from dantes_mlx.train.backends.base import TrainBackend


class FakeBackend:
    """A backend that reports a fixed device and availability; never trains."""

    def __init__(self, name, device, usable=True, reason="ok", priority=0):
        self.name, self._device, self._usable, self._reason, self.priority = name, device, usable, reason, priority

    def available(self):
        return self._usable, self._reason

    def device(self):
        return self._device

    def check(self, cfg):
        pass

    def train(self, cfg, data_dir, adapter_dir, resume=False):
        raise AssertionError("a fake backend does not train")


@dataclass
class FakeEntryPoint:
    """What importlib.metadata gives for one `dantes_mlx.backends` registration."""
    name: str
    backend: object

    @property
    def value(self):
        return f"fake_plugin:{self.name}"

    def load(self):
        if isinstance(self.backend, Exception):
            raise self.backend
        return lambda: self.backend


def fakes(*items) -> dict:
    return {b.name if not isinstance(b, tuple) else b[0]:
            FakeEntryPoint(*b) if isinstance(b, tuple) else FakeEntryPoint(b.name, b) for b in items}


def test_entry_points_list_the_builtin_mlx_backend():
    eps = entry_points()
    assert eps["mlx"].value == "dantes_mlx.train.backends.mlx:MLXBackend"
    info = next(i for i in list_backends() if i.name == "mlx")
    assert info.usable and info.device in ("metal", "cuda", "cpu") and "mlx" in info.reason
    assert isinstance(info.backend, TrainBackend)


def test_backends_command_lists_mlx_and_auto_choice():
    result = CliRunner().invoke(main, ["backends"])
    assert result.exit_code == 0, result.output
    assert "mlx" in result.output and "usable" in result.output and "auto -> " in result.output


def test_backends_command_shows_unusable_and_broken_plugins(monkeypatch):
    eps = fakes(FakeBackend("mlx", "cpu"), FakeBackend("unsloth", "cuda", False, "torch is not installed"),
                ("broken", ImportError("No module named 'peft'")))
    monkeypatch.setattr(backends, "entry_points", lambda: eps)
    out = CliRunner().invoke(main, ["backends"]).output
    assert "unsloth" in out and "not usable" in out and "torch is not installed" in out
    assert "broken" in out and "failed to load" in out and "No module named 'peft'" in out
    assert "auto -> mlx" in out and "warning" in out


def test_unknown_backend_lists_valid_names(tmp_path):
    with pytest.raises(ConfigError) as err:
        get_backend("cuda-magic")
    assert "unknown backend 'cuda-magic'" in str(err.value) and "auto, mlx" in str(err.value)
    result = CliRunner().invoke(main, ["train", "--backend", "cuda-magic", "--data", str(tmp_path)])
    assert result.exit_code == 1 and "valid backends: auto, mlx" in result.output


def test_named_backend_that_cannot_run_says_why():
    eps = fakes(FakeBackend("unsloth", "cuda", False, "no CUDA device and torch missing"))
    with pytest.raises(ConfigError, match="no CUDA device and torch missing"):
        get_backend("unsloth", eps)


@pytest.mark.parametrize("items,expected,warns", [
    # Apple Silicon: mlx on Metal wins even when a CUDA-capable plugin is installed.
    ([FakeBackend("mlx", "metal"), FakeBackend("unsloth", "cuda")], "mlx", False),
    # An NVIDIA machine: the plugin, even against mlx's own CUDA build (priority breaks the tie).
    ([FakeBackend("mlx", "cuda"), FakeBackend("unsloth", "cuda", priority=10)], "unsloth", False),
    ([FakeBackend("mlx", "cpu"), FakeBackend("unsloth", "cuda")], "unsloth", False),
    # Linux CPU: the plugin's transformers + peft path when installed ...
    ([FakeBackend("mlx", "cpu"), FakeBackend("unsloth", "cpu-torch")], "unsloth", False),
    # ... else mlx[cpu], with a warning (also when the plugin is installed but cannot run).
    ([FakeBackend("mlx", "cpu")], "mlx", True),
    ([FakeBackend("mlx", "cpu"), FakeBackend("unsloth", "cpu-torch", usable=False)], "mlx", True),
    # A backend on an unknown device is only used when named.
    ([FakeBackend("mlx", "cpu"), FakeBackend("tpu", "tpu")], "mlx", True),
])
def test_auto_selection(items, expected, warns):
    choice = get_backend("auto", fakes(*items))
    assert choice.backend.name == expected and choice.reason.startswith("auto: ")
    assert (choice.warning is not None) == warns
    if warns:
        assert "slow" in choice.warning and "dantes-mlx-unsloth" in choice.warning
        assert "MLX's CPU build" in choice.reason


def test_auto_reason_names_the_device_class_and_a_broken_plugin():
    choice = get_backend("auto", fakes(FakeBackend("mlx", "cpu"), FakeBackend("unsloth", "cpu-torch")))
    assert "PyTorch on the CPU" in choice.reason and "faster than MLX's CPU build" in choice.reason
    assert "Metal" in get_backend("auto", fakes(FakeBackend("mlx", "metal"))).reason
    broken = get_backend("auto", fakes(FakeBackend("mlx", "cpu"), FakeBackend("unsloth", "cpu-torch", False,
                                                                              "torch not installed")))
    assert broken.backend.name == "mlx" and "unsloth: torch not installed" in broken.warning
    named = get_backend("unsloth", fakes(FakeBackend("unsloth", "cpu-torch")))
    assert named.warning is None and "named by" in named.reason and "cpu-torch" in named.reason


def test_auto_with_nothing_usable_explains():
    infos = list_backends(fakes(FakeBackend("unsloth", "cuda", False, "no GPU"), ("broken", RuntimeError("boom"))))
    with pytest.raises(ConfigError) as err:
        choose_auto(infos)
    assert "unsloth: no GPU" in str(err.value) and "broken: failed to load" in str(err.value)


class FakeTrainingBackend(FakeBackend):
    """A fake that 'trains' instantly: it returns a result without touching a model."""

    def train(self, cfg, data_dir, adapter_dir, resume=False):
        return TrainResult(self.name, adapter_dir, steps=2, train_loss=1.5)


@pytest.mark.parametrize("device,expected,why", [
    ("cpu-torch", "unsloth", "PyTorch on the CPU"),  # Linux with the plugin: torch, and the summary says why
    (None, "mlx", "MLX's CPU build (slow)"),          # Linux without it: mlx[cpu], a warning saying how to add it
])
def test_train_summary_says_which_backend_auto_chose_and_why(tmp_path, monkeypatch, device, expected, why):
    items = [FakeTrainingBackend("mlx", "cpu")] + ([FakeTrainingBackend("unsloth", device)] if device else [])
    monkeypatch.setattr(backends, "entry_points", lambda: fakes(*items))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "Bonjour."}\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["train", "--data", "data", "--adapter-path", "out", "--base-model", "none"])
    assert result.exit_code == 0, result.output
    assert f"training with backend {expected}: auto: " in result.output
    assert f"backend {expected}, 2 steps, train loss 1.500" in result.output
    assert f"why {expected}: auto: " in result.output and why in result.output
    assert ("pip install -e plugins/dantes-mlx-unsloth" in result.output) == (expected == "mlx")
