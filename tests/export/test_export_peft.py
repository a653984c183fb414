"""Adapter formats: mlx-lm -> PEFT key names, transposes and lora_alpha; PEFT -> mlx-lm; round trips; DoRA.

In-process, no network: adapters are built on the tiny Mistral (`tiny_model_dir`) by mlx-lm's own
`linear_to_lora_layers`, with random nonzero A and B so that they change the model.
Run: /work/venv/bin/python -m pytest tests/export/test_export_peft.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from dantes_mlx.adapter_format import check_adapter, load_adapter, write_mlx_adapter
from dantes_mlx.errors import ModelError
from dantes_mlx.export.peft import lora_alpha, write_peft_adapter
from dantes_mlx.workspace import AdapterFolder
from helpers import ATTENTION, make_mlx_adapter


def recorded_base_model(folder: Path) -> str | None:
    """The base an adapter folder records (the workspace reads adapter_config.json's model or PEFT's base)."""
    return AdapterFolder(folder).recorded_base()


def model_config(model_dir: Path) -> dict:
    return json.loads((model_dir / "config.json").read_text())


@pytest.fixture(scope="module")
def mlx_lora(tiny_model_dir, tmp_path_factory) -> Path:
    return make_mlx_adapter(tiny_model_dir, tmp_path_factory.mktemp("lora") / "adapters")


@pytest.fixture(scope="module")
def mlx_dora(tiny_model_dir, tmp_path_factory) -> Path:
    return make_mlx_adapter(tiny_model_dir, tmp_path_factory.mktemp("dora") / "adapters", kind="dora",
                            keys=ATTENTION)


@pytest.mark.slow
def test_mlx_to_peft_names_transposes_and_alpha(mlx_lora, tiny_model_dir, tmp_path):
    raw = load_file(str(mlx_lora / "adapters.safetensors"))
    adapter = load_adapter(mlx_lora)
    assert adapter.source == "mlx" and adapter.kind == "lora" and len(adapter.modules) == 2 * 5
    out = write_peft_adapter(adapter, tmp_path / "peft", "mistralai/Mistral-7B-Instruct-v0.3")
    tensors = load_file(str(out / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.1.self_attn.k_proj"
    # mlx-lm: lora_a (in, r), lora_b (r, out); PEFT: lora_A (r, in), lora_B (out, r).
    assert raw["model.layers.1.self_attn.k_proj.lora_a"].shape == (256, 4)
    assert tensors[f"{key}.lora_A.weight"].shape == (4, 256) and tensors[f"{key}.lora_B.weight"].shape == (128, 4)
    np.testing.assert_array_equal(tensors[f"{key}.lora_A.weight"], raw["model.layers.1.self_attn.k_proj.lora_a"].T)
    np.testing.assert_array_equal(tensors[f"{key}.lora_B.weight"], raw["model.layers.1.self_attn.k_proj.lora_b"].T)
    assert len(tensors) == 2 * 10
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 32 == lora_alpha(8.0, 4)  # scale x rank
    assert config["task_type"] == "CAUSAL_LM" and config["peft_type"] == "LORA" and not config["use_dora"]
    assert config["target_modules"] == ["down_proj", "k_proj", "o_proj", "q_proj", "v_proj"]
    assert config["layers_to_transform"] == [0, 1]
    assert config["base_model_name_or_path"] == "mistralai/Mistral-7B-Instruct-v0.3"


@pytest.mark.slow
def test_peft_delta_equals_mlx_delta(mlx_lora, tmp_path):
    """What PEFT applies (lora_alpha / r * B A) is what mlx-lm applies (scale * (A_mlx B_mlx)^T)."""
    raw = load_file(str(mlx_lora / "adapters.safetensors"))
    out = write_peft_adapter(load_adapter(mlx_lora), tmp_path / "peft")
    tensors = load_file(str(out / "adapter_model.safetensors"))
    config = json.loads((out / "adapter_config.json").read_text())
    name = "model.layers.0.self_attn.q_proj"
    peft_delta = config["lora_alpha"] / config["r"] * tensors[f"base_model.model.{name}.lora_B.weight"] \
        @ tensors[f"base_model.model.{name}.lora_A.weight"]
    mlx_delta = 8.0 * (raw[f"{name}.lora_a"] @ raw[f"{name}.lora_b"]).T
    np.testing.assert_allclose(peft_delta, mlx_delta, rtol=1e-5, atol=1e-7)
    assert np.abs(mlx_delta).max() > 1e-3  # a real, nonzero adapter


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["mlx_lora", "mlx_dora"])
def test_round_trip_mlx_peft_mlx(fixture, request, tiny_model_dir, tmp_path):
    folder = request.getfixturevalue(fixture)
    original = load_adapter(folder)
    peft_dir = write_peft_adapter(original, tmp_path / "peft")
    via_peft = load_adapter(peft_dir)
    assert via_peft.source == "peft" and via_peft.kind == original.kind
    back_dir = write_mlx_adapter(via_peft, tmp_path / "mlx", model_config(tiny_model_dir)["num_hidden_layers"])
    back = load_adapter(back_dir)
    assert back.source == "mlx"
    for a, b, c in zip(original.modules, via_peft.modules, back.modules):
        assert (a.layer, a.module) == (b.layer, b.module) == (c.layer, c.module)
        assert a.scale == pytest.approx(b.scale) == pytest.approx(c.scale)
        for x, y in ((a.a, b.a), (a.b, b.b), (a.a, c.a), (a.b, c.b)):
            np.testing.assert_array_equal(x, y)
        if original.kind == "dora":
            np.testing.assert_array_equal(a.magnitude, b.magnitude)
            np.testing.assert_array_equal(a.magnitude, c.magnitude)
    # The raw mlx-lm files come back identical too.
    before = load_file(str(folder / "adapters.safetensors"))
    after = load_file(str(back_dir / "adapters.safetensors"))
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


@pytest.mark.slow
def test_dora_magnitudes_use_peft_names(mlx_dora, tmp_path):
    out = write_peft_adapter(load_adapter(mlx_dora), tmp_path / "peft")
    tensors = load_file(str(out / "adapter_model.safetensors"))
    raw = load_file(str(mlx_dora / "adapters.safetensors"))
    key = "base_model.model.model.layers.0.self_attn.v_proj.lora_magnitude_vector"
    np.testing.assert_array_equal(tensors[key], raw["model.layers.0.self_attn.v_proj.m"])
    assert json.loads((out / "adapter_config.json").read_text())["use_dora"] is True


def write_peft_by_hand(folder: Path, modules: dict[str, tuple[int, int, int]], config: dict, seed: int = 0) -> Path:
    """A PEFT folder as peft's save_pretrained writes it; modules: name -> (rank, out, in)."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, (rank, out_f, in_f) in modules.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = rng.normal(0, 0.05, (rank, in_f)).astype(np.float32)
        tensors[f"base_model.model.{name}.lora_B.weight"] = rng.normal(0, 0.05, (out_f, rank)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "task_type": "CAUSAL_LM",
                                                           "bias": "none", **config}))
    return folder


def test_peft_scales_rslora_and_patterns(tmp_path):
    modules = {"model.layers.0.self_attn.q_proj": (8, 256, 256), "model.layers.1.self_attn.q_proj": (4, 256, 256)}
    folder = write_peft_by_hand(tmp_path / "p", modules, {
        "r": 8, "lora_alpha": 16, "rank_pattern": {"model.layers.1.self_attn.q_proj": 4},
        "alpha_pattern": {"model.layers.1.self_attn.q_proj": 32}, "base_model_name_or_path": "some/base"})
    adapter = load_adapter(folder)
    assert [(m.rank, m.scale) for m in adapter.modules] == [(8, 2.0), (4, 8.0)]
    assert recorded_base_model(folder) == "some/base"
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_rslora": True, "alpha_pattern": {}}))
    assert [m.scale for m in load_adapter(folder).modules] == [pytest.approx(16 / 8 ** 0.5), pytest.approx(16 / 2)]


@pytest.mark.slow
def test_mixed_ranks_and_scales_load_in_mlx_lm(tiny_model_dir, tmp_path):
    """PEFT layers with their own rank/scale become one mlx-lm rank/scale without changing W + s B A."""
    import mlx_lm
    from mlx.utils import tree_flatten

    modules = {"model.layers.0.self_attn.q_proj": (8, 256, 256), "model.layers.1.self_attn.v_proj": (4, 128, 256)}
    folder = write_peft_by_hand(tmp_path / "p", modules, {"r": 8, "lora_alpha": 16, "rank_pattern": {
        "model.layers.1.self_attn.v_proj": 4}, "alpha_pattern": {"model.layers.1.self_attn.v_proj": 40}})
    adapter = load_adapter(folder)
    mlx_dir = write_mlx_adapter(adapter, tmp_path / "mlx", 2, str(tiny_model_dir))
    model, _ = mlx_lm.load(str(tiny_model_dir), adapter_path=str(mlx_dir))
    params = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    scale = json.loads((mlx_dir / "adapter_config.json").read_text())["lora_parameters"]["scale"]
    for m in adapter.modules:
        prefix = f"model.layers.{m.layer}.{m.module}"
        delta = scale * (params[f"{prefix}.lora_a"] @ params[f"{prefix}.lora_b"]).T
        np.testing.assert_allclose(delta, m.scale * m.b @ m.a, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_check_adapter_refuses_transposed_or_foreign_adapters(mlx_lora, tiny_model_dir):
    config = model_config(tiny_model_dir)
    adapter = load_adapter(mlx_lora)
    check_adapter(adapter, config)
    swapped = load_adapter(mlx_lora)
    m = swapped.modules[1]  # k_proj: (r, in) = (4, 256), (out, r) = (128, 4)
    m.a, m.b = m.a.T, m.b.T  # a converter that forgot to transpose
    with pytest.raises(ModelError, match="transposed") as failure:
        check_adapter(swapped, config)
    assert "adapters.safetensors" in str(failure.value) and "self_attn.k_proj" in str(failure.value)
    with pytest.raises(ModelError, match="does not have"):
        check_adapter(adapter, {**config, "num_hidden_layers": 1})


@pytest.mark.slow
def test_load_adapter_errors_say_what_to_do(tmp_path, mlx_lora):
    with pytest.raises(ModelError, match="no adapter here") as failure:
        load_adapter(tmp_path)
    assert "--adapter-path" in str(failure.value)
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match="safe_serialization=True"):
        load_adapter(tmp_path)
    folder = write_peft_by_hand(tmp_path / "emb", {"model.layers.0.self_attn.q_proj": (4, 256, 256)}, {"r": 4, "lora_alpha": 8})
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    tensors["base_model.model.model.embed_tokens.lora_embedding_A"] = np.zeros((4, 10), np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    with pytest.raises(ModelError, match="embed_tokens"):
        load_adapter(folder)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(ModelError, match="IA3"):
        load_adapter(folder)
    assert recorded_base_model(mlx_lora) and recorded_base_model(tmp_path / "nothing") is None


@pytest.mark.slow
def test_real_peft_loads_the_adapter(mlx_lora, tiny_model_dir, tmp_path):
    """With torch + peft installed (the CUDA plugin's environment), PEFT applies our adapter like MLX does."""
    torch = pytest.importorskip("torch", reason="torch is not in the core venv; the CUDA plugin's tests cover it")
    peft = pytest.importorskip("peft", reason="peft is not in the core venv; the CUDA plugin's tests cover it")
    import mlx.core as mx
    import mlx_lm
    from transformers import AutoModelForCausalLM

    out = write_peft_adapter(load_adapter(mlx_lora), tmp_path / "peft", str(tiny_model_dir))
    model = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out)).eval()
    ids = [1, 20, 30, 40, 50, 60]
    with torch.no_grad():
        got = model(torch.tensor([ids])).logits[0].float().numpy()
    mlx_model, _ = mlx_lm.load(str(tiny_model_dir), adapter_path=str(mlx_lora))
    want = np.array(mlx_model(mx.array([ids]))[0].astype(mx.float32))
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-3)
