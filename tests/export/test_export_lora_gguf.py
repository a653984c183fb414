"""GGUF LoRA adapter: metadata and shapes llama.cpp expects, agreement with MLX base + adapter through
llama.cpp, and the mutations the gate must catch (alpha = rank, A/B not transposed, DoRA).

In-process, no network: the tiny Mistral, its f16 GGUF (`tiny_gguf`) and random mlx-lm adapters.
Run: /work/venv/bin/python -m pytest tests/export/test_export_lora_gguf.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_mlx_adapter

from dantes_mlx.adapter_format import load_adapter
from dantes_mlx.errors import ModelError, ParityError
from dantes_mlx.export.gate import gate_verdict, parity_gate
from dantes_mlx.export.gguf import permute_qk
from dantes_mlx.export.gguf_lora import write_gguf_lora
from dantes_mlx.export.parity import check_parity
from dantes_mlx.export.reference import MLXReference

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    # scale 8: an alpha that forgot the scale would make this adapter 8x too weak.
    return make_mlx_adapter(tiny_model_dir, tmp_path_factory.mktemp("lora") / "adapters", scale=8.0)


@pytest.fixture(scope="module")
def reference(tiny_model_dir, adapter_dir):
    return MLXReference(tiny_model_dir, adapter_dir)


@pytest.fixture(scope="module")
def lora_gguf(adapter_dir, tiny_model_dir, tmp_path_factory):
    return write_gguf_lora(load_adapter(adapter_dir), tiny_model_dir, tmp_path_factory.mktemp("g") / "lora.gguf")


def test_metadata_names_and_shapes(lora_gguf, adapter_dir, tiny_model_dir):
    import gguf

    reader = gguf.GGUFReader(str(lora_gguf))

    def field(key):
        f = reader.fields[key]
        value = f.parts[f.data[0]]
        return bytes(value).decode() if f.types[0] == gguf.GGUFValueType.STRING else value[0]

    assert field("general.type") == "adapter" and field("adapter.type") == "lora"
    assert field("general.architecture") == "llama"
    assert field("adapter.lora.alpha") == pytest.approx(32.0)  # scale 8 x rank 4
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 * 2 * 5
    # ggml shapes: lora_a [in, r], lora_b [r, out] for blk.N.attn_k.weight ([in, out] = [256, 128]).
    assert list(tensors["blk.1.attn_k.weight.lora_a"].shape) == [256, 4]
    assert list(tensors["blk.1.attn_k.weight.lora_b"].shape) == [4, 128]
    # B of q/k is permuted like the base q/k rows; B of v is not.
    adapter = {(m.layer, m.module): m for m in load_adapter(adapter_dir).modules}
    config = json.loads((tiny_model_dir / "config.json").read_text())
    got_k = np.array(tensors["blk.1.attn_k.weight.lora_b"].data, dtype=np.float32)
    k_b = adapter[(1, "self_attn.k_proj")].b
    np.testing.assert_allclose(got_k, permute_qk(k_b, config["num_key_value_heads"]), atol=1e-3)
    assert not np.allclose(got_k, k_b, atol=1e-3)
    got_v = np.array(tensors["blk.1.attn_v.weight.lora_b"].data, dtype=np.float32)
    np.testing.assert_allclose(got_v, adapter[(1, "self_attn.v_proj")].b, atol=1e-3)


def test_gguf_lora_on_base_gguf_agrees_with_mlx(reference, tiny_gguf, lora_gguf, tiny_model_dir):
    report = check_parity(reference, tiny_gguf, lora_gguf)
    assert report.passed and report.tokens_match and report.top1 == 1.0 and report.kl_mean < 1e-4
    # The check has teeth: the base GGUF alone is far from MLX base + adapter.
    without = check_parity(reference, tiny_gguf, enforce=False)
    assert not without.passed and without.kl_mean > 100 * report.kl_mean


def test_dropping_the_scale_from_alpha_breaks_parity(reference, adapter_dir, tiny_model_dir, tiny_gguf,
                                                     tmp_path, monkeypatch):
    """A converter writing lora_alpha = rank (mlx-lm's scale forgotten) gives an adapter 8x too weak."""
    monkeypatch.setattr("dantes_mlx.export.gguf_lora.lora_alpha", lambda scale, rank: float(rank))
    weak = write_gguf_lora(load_adapter(adapter_dir), tiny_model_dir, tmp_path / "weak.gguf")
    report = check_parity(reference, tiny_gguf, weak, enforce=False)
    assert report.tokens_match and not report.passed
    assert report.kl_mean > 1e-2 and report.top1 < 1.0
    with pytest.raises(ParityError, match="does not predict like the trained model"):
        check_parity(reference, tiny_gguf, weak)


def test_untransposed_matrices_are_refused_and_fail_the_gate(tiny_model_dir, tiny_gguf, tmp_path, monkeypatch):
    """A/B not transposed: our own check refuses the adapter; forced past it, llama.cpp refuses the file
    ("lora_a tensor is not transposed"), and the gate reports a failure instead of crashing."""
    folder = make_mlx_adapter(tiny_model_dir, tmp_path / "adapters", keys=("self_attn.v_proj", "self_attn.o_proj"))
    reference = MLXReference(tiny_model_dir, folder)
    monkeypatch.setattr("dantes_mlx.adapter_format.to_peft_orientation", lambda a, b: (a, b))
    untransposed = load_adapter(folder)
    with pytest.raises(ModelError, match="transposed"):
        write_gguf_lora(untransposed, tiny_model_dir, tmp_path / "refused.gguf")
    monkeypatch.setattr("dantes_mlx.export.gguf_lora.check_adapter", lambda adapter, config: None)
    bad = write_gguf_lora(untransposed, tiny_model_dir, tmp_path / "bad.gguf")
    reports = parity_gate(reference, [("base f16 + GGUF LoRA", tiny_gguf, bad, "f16")], prompts=None)
    report = reports["base f16 + GGUF LoRA"]
    assert not report.passed and "llama.cpp could not" in report.failures[0]
    with pytest.raises(ParityError, match="llama.cpp could not"):
        gate_verdict(reports, tmp_path / "export.json")


def test_dora_cannot_be_a_gguf_lora(tiny_model_dir, tmp_path):
    folder = make_mlx_adapter(tiny_model_dir, tmp_path / "dora", kind="dora", keys=("self_attn.q_proj",))
    with pytest.raises(ModelError, match="fused GGUF"):
        write_gguf_lora(load_adapter(folder), tiny_model_dir, tmp_path / "dora.gguf")
