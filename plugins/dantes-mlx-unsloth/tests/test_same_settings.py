"""Same settings, both backends: mlx and unsloth adapters have the same layers, shapes, targets and scale.

One training step with each backend on the tiny model, both read back with dantes_mlx.adapter_format.load_adapter.
Run: pytest plugins/dantes-mlx-unsloth/tests/test_same_settings.py -q
"""

from __future__ import annotations

import pytest
from conftest import tiny_settings
from dantes_mlx_unsloth.run import PATH_ENV

from dantes_mlx.adapter_format import load_adapter
from dantes_mlx.train.stage import train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_mlx_and_peft_adapters_match(tiny_model_dir, chat_data, tmp_path, monkeypatch, kind):
    monkeypatch.setenv(PATH_ENV, "loop")
    settings = dict(fine_tune_type=kind, rank=6, scale=2.5, num_layers=1, iters=1, save_every=1,
                    steps_per_report=1, val_batches=1,
                    target_modules=["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"])
    adapters = {}
    for backend in ("mlx", "unsloth"):
        result = train(tiny_settings(tiny_model_dir, backend=backend, **settings), chat_data, tmp_path / backend)
        assert result.backend == backend
        adapters[backend] = load_adapter(tmp_path / backend)
    mlx, peft = adapters["mlx"], adapters["unsloth"]
    assert (mlx.source, peft.source) == ("mlx", "peft")
    assert mlx.kind == peft.kind == kind
    assert mlx.layers == peft.layers == [1]  # num_layers=1: the last of the tiny model's two blocks
    assert mlx.target_modules == peft.target_modules == ["mlp.down_proj", "self_attn.q_proj", "self_attn.v_proj"]
    by_key = {(m.layer, m.module): m for m in peft.modules}
    for m in mlx.modules:
        p = by_key[(m.layer, m.module)]
        assert m.a.shape == p.a.shape and m.b.shape == p.b.shape and m.rank == p.rank == 6
        assert m.scale == pytest.approx(p.scale) == 2.5  # PEFT's lora_alpha / r == mlx-lm's scale
        if kind == "dora":
            assert m.magnitude.shape == p.magnitude.shape == (m.b.shape[0],)
        assert abs(p.b).max() > 0 and abs(m.b).max() > 0  # both took a real step from B = 0
