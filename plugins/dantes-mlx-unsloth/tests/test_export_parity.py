"""The plugin's PEFT adapter in the core commands: `export` (four targets, parity against transformers + PEFT, the
TorchReference), and MLX (`ask`, the MLX reference) on its mlx-lm form, agreeing with transformers + PEFT.

In-process, no network: trains the tiny model 8 steps on the CPU, exports, runs llama.cpp and mlx.
Run: pytest plugins/dantes-mlx-unsloth/tests/test_export_parity.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import PERSONA, tiny_settings
from dantes_mlx_unsloth.parity import TorchReference
from dantes_mlx_unsloth.run import PATH_ENV

from dantes_mlx.cli import main
from dantes_mlx.export.parity import check_parity, default_prompts
from dantes_mlx.export.reference import MLXReference, make_reference
from dantes_mlx.train.stage import train

pytestmark = pytest.mark.slow
pytest.importorskip("llama_cpp", reason="the parity gate runs llama.cpp (llama-cpp-python)")


@pytest.fixture(scope="module")
def trained(tiny_model_dir, chat_data, tmp_path_factory):
    """A LoRA adapter on every linear layer, trained 8 steps by the plugin's torch loop."""
    out = tmp_path_factory.mktemp("plugin") / "adapters"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PATH_ENV, "loop")
        train(tiny_settings(tiny_model_dir, iters=8, rank=4, scale=4.0,
                            target_modules=["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                            "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]),
              chat_data, out)
    return out


@pytest.fixture(scope="module")
def exported(trained, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    result = CliRunner().invoke(main, ["export", "--adapter-path", str(trained), "--base-model", str(tiny_model_dir),
                                       "-o", str(out), "--quantization", "q8_0", "--no-ollama-create"])
    return out, result


def test_export_passes_parity_against_transformers_and_peft(exported):
    out, result = exported
    assert result.exit_code == 0, result.output
    assert "parity gate: transformers" in result.output and "+ PEFT" in result.output  # TorchReference
    for label in ("[fused f16] parity PASSED", "[fused q8_0] parity PASSED", "[base f16 + GGUF LoRA] parity PASSED"):
        assert label in result.output
    for name in ("dantes-f16.gguf", "dantes-q8_0.gguf", "dantes-lora-f16.gguf", "Modelfile", "peft/adapter_model.safetensors"):
        assert (out / name).is_file(), name


def test_the_reference_is_picked_from_the_backend_that_trained(trained, tiny_model_dir):
    assert isinstance(make_reference(tiny_model_dir, trained), TorchReference)


def test_parity_fails_when_the_gguf_lacks_the_adapter(exported, trained, tiny_model_dir):
    """The torch reference really holds the adapter: the bare base GGUF does not match it."""
    out, _ = exported
    report = check_parity(TorchReference(tiny_model_dir, trained), out / "base-f16.gguf", quantization="f16",
                          enforce=False)
    assert not report.passed and report.kl_mean > 1e-3


def test_torch_and_mlx_references_agree(trained, tiny_model_dir, tmp_path, monkeypatch):
    """transformers + PEFT and MLX + the adapter's mlx-lm form give the same logits (fp32 both)."""
    monkeypatch.setenv("DANTES_MLX_CACHE", str(tmp_path / "cache"))
    torch_ref, mlx_ref = TorchReference(tiny_model_dir, trained), MLXReference(tiny_model_dir, trained)
    _, messages = default_prompts()[2]
    ids = torch_ref.encode(torch_ref.render(messages))
    assert ids == mlx_ref.encode(mlx_ref.render(messages))
    np.testing.assert_allclose(torch_ref.logits(ids), mlx_ref.logits(ids), atol=2e-3, rtol=0)


def test_ask_answers_with_the_torch_trained_adapter_as_transformers_does(trained, tiny_model_dir, tmp_path,
                                                                        monkeypatch):
    """`dantes-mlx ask --adapter-path` on the PEFT folder (MLX on its mlx-lm form, base read from the adapter):
    the greedy answer transformers + PEFT gives, token for token."""
    monkeypatch.setenv("DANTES_MLX_CACHE", str(tmp_path / "cache"))
    messages = [{"role": "user", "content": f"{PERSONA}\n\nQui êtes-vous ?"}]
    result = CliRunner().invoke(main, ["ask", messages[0]["content"], "--adapter-path", str(trained), "--no-system",
                                       "--temp", "0", "--max-tokens", "12"])
    assert result.exit_code == 0, result.output
    torch_ref = TorchReference(tiny_model_dir, trained)
    ids = list(torch_ref.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False))
    answer = []
    for _ in range(12):  # greedy, as ask --temp 0
        answer.append(int(np.argmax(torch_ref.logits(ids + answer)[-1])))
        if answer[-1] == torch_ref.tokenizer.eos_token_id:
            answer.pop()
            break
    expected = torch_ref.tokenizer.decode(answer, skip_special_tokens=True).strip()
    assert expected and result.stdout.strip() == expected
    assert len(list((tmp_path / "cache/mlx-adapters").iterdir())) == 1  # converted once, into the cache


def test_a_dora_adapter_from_the_torch_backend_runs_in_mlx_as_in_transformers(tiny_model_dir, chat_data, tmp_path,
                                                                              monkeypatch):
    """peft's DoRA (lora_magnitude_vector) and mlx-lm's (m) mean the same: the converted adapter gives the logits
    transformers + PEFT gives, on layers the run adapted (num_layers 1: PEFT's layers_to_transform)."""
    monkeypatch.setenv("DANTES_MLX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(PATH_ENV, "loop")
    out = tmp_path / "dora"
    train(tiny_settings(tiny_model_dir, iters=4, rank=4, scale=4.0, fine_tune_type="dora", num_layers=1,
                        target_modules=["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"]), chat_data, out)
    torch_ref, mlx_ref = TorchReference(tiny_model_dir, out), MLXReference(tiny_model_dir, out)
    ids = torch_ref.encode(torch_ref.render(default_prompts()[0][1]))
    want = torch_ref.logits(ids)
    np.testing.assert_allclose(mlx_ref.logits(ids), want, atol=2e-3, rtol=0)
    assert np.abs(want - MLXReference(tiny_model_dir).logits(ids)).max() > 1e-3  # the adapter changes the model
