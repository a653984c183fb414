"""Either adapter format anywhere: a PEFT folder (as peft writes it) gives, once converted to mlx-lm's form, the very
logits of the mlx-lm adapter it came from; the conversion is cached by content; bad folders and PEFT options mlx-lm
cannot hold are refused, naming the folder, the file or the setting.

In-process, no network: the tiny Mistral (`tiny_model_dir`), mlx-lm adapters with random nonzero A and B, PEFT folders
written by hand with numpy + safetensors. Run: python -m pytest tests/test_adapter_format.py -q
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import ATTENTION, make_mlx_adapter, peft_from_mlx
from safetensors.numpy import load_file, save_file

from dantes_mlx.adapter_format import (conversion_cache, folder_format, load_adapter, mlx_adapter_dir, read_tensors,
                                       weights_file)
from dantes_mlx.errors import ModelError
from dantes_mlx.export.peft import write_peft_adapter
from dantes_mlx.export.reference import MLXReference

IDS = [1, 20, 30, 40, 50, 60, 70, 80]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DANTES_MLX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "mlx-adapters"


@pytest.fixture(scope="module")
def mlx_lora(tiny_model_dir, tmp_path_factory) -> Path:
    return make_mlx_adapter(tiny_model_dir, tmp_path_factory.mktemp("lora") / "adapters", b_std=0.05)


@pytest.fixture(scope="module")
def mlx_dora(tiny_model_dir, tmp_path_factory) -> Path:
    return make_mlx_adapter(tiny_model_dir, tmp_path_factory.mktemp("dora") / "adapters", kind="dora",
                            keys=ATTENTION + ("mlp.up_proj",), b_std=0.05)


def logits(model_dir: Path, adapter: Path | None) -> np.ndarray:
    reference = MLXReference(model_dir, adapter)
    try:
        return reference.logits(IDS)
    finally:
        reference.release()


@pytest.mark.slow
@pytest.mark.parametrize("kind, rslora", [("lora", False), ("lora", True), ("dora", False)])
def test_a_peft_folder_gives_the_logits_of_the_mlx_adapter_it_came_from(kind, rslora, request, tiny_model_dir,
                                                                       tmp_path):
    mlx_dir = request.getfixturevalue(f"mlx_{kind}")
    peft_dir = peft_from_mlx(mlx_dir, tmp_path / "peft", rslora=rslora)
    assert folder_format(peft_dir) == "peft" and folder_format(mlx_dir) == "mlx"
    want, got = logits(tiny_model_dir, mlx_dir), logits(tiny_model_dir, peft_dir)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert np.abs(want - logits(tiny_model_dir, None)).max() > 1e-2  # the adapter really changes the model


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_round_trip_mlx_to_peft_by_export_and_back_keeps_the_logits(kind, request, tiny_model_dir, tmp_path):
    mlx_dir = request.getfixturevalue(f"mlx_{kind}")
    peft_dir = write_peft_adapter(load_adapter(mlx_dir), tmp_path / "peft", str(tiny_model_dir))
    converted = mlx_adapter_dir(peft_dir, tiny_model_dir)
    assert json.loads((converted / "adapter_config.json").read_text())["fine_tune_type"] == kind
    np.testing.assert_allclose(logits(tiny_model_dir, peft_dir), logits(tiny_model_dir, mlx_dir), atol=1e-5,
                               rtol=1e-5)


@pytest.mark.slow
def test_the_conversion_is_made_once_and_keyed_by_the_files(mlx_lora, tiny_model_dir, tmp_path, cache):
    assert mlx_adapter_dir(mlx_lora, tiny_model_dir) == mlx_lora  # mlx-lm's own format: used as it is
    peft_dir = peft_from_mlx(mlx_lora, tmp_path / "peft")
    first = mlx_adapter_dir(peft_dir, tiny_model_dir)
    assert first.parent == cache and [p.name for p in cache.iterdir()] == [first.name]  # no temporary folder left
    written = (first / "adapters.safetensors").stat().st_mtime_ns
    assert mlx_adapter_dir(peft_dir, tiny_model_dir) == first
    assert (first / "adapters.safetensors").stat().st_mtime_ns == written  # reused, not written again
    copy = peft_from_mlx(mlx_lora, tmp_path / "elsewhere")  # same content elsewhere: the same conversion
    assert mlx_adapter_dir(copy, tiny_model_dir) == first
    other = tmp_path / "one-layer-base"  # a base of other shapes: checked again, not served the cached copy
    other.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
    with pytest.raises(ModelError, match="model.layers.1.* which the base model does not have"):
        mlx_adapter_dir(peft_dir, other)
    tensors = load_file(str(peft_dir / "adapter_model.safetensors"))
    key = next(k for k in tensors if k.endswith("lora_B.weight"))
    tensors[key] = tensors[key] * 2
    save_file(tensors, str(peft_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    assert mlx_adapter_dir(peft_dir, tiny_model_dir) != first  # other weights: converted again
    assert len(list(cache.iterdir())) == 2 and conversion_cache() == cache


def _write_bf16(path: Path, name: str, values: np.ndarray) -> None:
    """A safetensors file with one BF16 tensor (numpy has no bf16: the upper 16 bits of each float32)."""
    raw = (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    header = json.dumps({name: {"dtype": "BF16", "shape": list(values.shape), "data_offsets": [0, len(raw)]}})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + raw)


def test_bf16_weights_are_read_without_torch(tmp_path):
    values = np.array([[1.0, -2.5, 0.15625], [3.0e-3, 7.0, -0.0]], np.float32)
    _write_bf16(tmp_path / "w.safetensors", "x", values)
    got = read_tensors(tmp_path / "w.safetensors")["x"]
    assert got.dtype == np.float32 and got.shape == (2, 3)
    np.testing.assert_allclose(got, values, rtol=1e-2)  # bf16 keeps 8 bits of mantissa
    assert got[0, 0] == 1.0 and got[0, 1] == -2.5


def test_folders_that_hold_no_single_adapter_are_refused_saying_what_was_expected(tmp_path):
    with pytest.raises(ModelError, match="no adapter folder") as failure:
        folder_format(tmp_path / "missing")
    assert "adapters.safetensors" in str(failure.value) and "adapter_model.safetensors" in str(failure.value)
    with pytest.raises(ModelError, match="no adapter here") as failure:
        folder_format(tmp_path)
    assert str(tmp_path) in str(failure.value) and "--adapter-path" in str(failure.value)
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match="safe_serialization=True"):
        folder_format(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="without its adapter_config.json"):
        folder_format(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"fine_tune_type": "lora", "lora_parameters": {}}))
    with pytest.raises(ModelError, match="PEFT.*next to an mlx-lm adapter_config.json"):
        folder_format(tmp_path)
    (tmp_path / "adapters.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="both an mlx-lm adapter"):
        folder_format(tmp_path)
    (tmp_path / "adapter_model.safetensors").unlink()
    assert folder_format(tmp_path) == "mlx" and weights_file(tmp_path) == tmp_path / "adapters.safetensors"


@pytest.mark.slow
def test_a_damaged_peft_file_is_named_before_any_conversion(mlx_lora, tiny_model_dir, tmp_path, cache):
    peft_dir = peft_from_mlx(mlx_lora, tmp_path / "peft")
    data = (peft_dir / "adapter_model.safetensors").read_bytes()
    (peft_dir / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated") as failure:
        mlx_adapter_dir(peft_dir, tiny_model_dir)
    assert "adapter_model.safetensors" in str(failure.value) and not cache.exists()


@pytest.mark.slow
@pytest.mark.parametrize("setting, value, message", [
    ("fan_in_fan_out", True, "Conv1D"), ("modules_to_save", ["lm_head"], "fully trained copies"),
    ("bias", "lora_only", "trained biases"), ("lora_bias", True, "bias on lora_B"),
    ("use_qalora", True, "QA-LoRA"), ("init_lora_weights", "pissa", "path_initial_model_for_weight_conversion"),
    ("peft_type", "IA3", "not LoRA"),
])
def test_peft_options_mlx_lm_cannot_hold_are_refused(setting, value, message, mlx_lora, tiny_model_dir, tmp_path):
    peft_dir = peft_from_mlx(mlx_lora, tmp_path / "peft", **{setting: value})
    with pytest.raises(ModelError, match=message) as failure:
        mlx_adapter_dir(peft_dir, tiny_model_dir)
    assert "adapter_config.json" in str(failure.value)


@pytest.mark.slow
def test_modules_the_mlx_model_lacks_are_refused(mlx_lora, tiny_model_dir, tmp_path):
    peft_dir = peft_from_mlx(mlx_lora, tmp_path / "peft")
    tensors = load_file(str(peft_dir / "adapter_model.safetensors"))
    extra = {k.replace("layers.1.", "layers.7."): v for k, v in tensors.items() if ".layers.1.self_attn.q_proj" in k}
    save_file({**tensors, **extra}, str(peft_dir / "adapter_model.safetensors"))
    with pytest.raises(ModelError, match="model.layers.7.self_attn.q_proj.weight, which the base model does not have"):
        mlx_adapter_dir(peft_dir, tiny_model_dir)
    fused = {k.replace("q_proj", "qkv_proj"): v for k, v in tensors.items()}
    save_file(fused, str(peft_dir / "adapter_model.safetensors"))
    with pytest.raises(ModelError, match="qkv_proj"):
        mlx_adapter_dir(peft_dir, tiny_model_dir)
    save_file({**tensors, "base_model.model.lm_head.lora_A.weight": np.zeros((4, 256), np.float32)},
              str(peft_dir / "adapter_model.safetensors"))
    with pytest.raises(ModelError, match="lm_head"):
        mlx_adapter_dir(peft_dir, tiny_model_dir)
