"""The parity gate on the tiny model: f16 passes, quantized figures, and mutated exports fail."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dantes_mlx.errors import ConfigError, InputError, ParityError
from dantes_mlx.export.gguf import load_weights, quantize, write_gguf
from dantes_mlx.export.parity import (MLXReference, check_parity, compare_logits, load_prompts,
                                      thresholds_for)
from dantes_mlx.export.vocab import load_vocab



@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return MLXReference(tiny_model_dir)


@pytest.fixture(scope="module")
def minus_1000_gguf(tiny_model_dir, tmp_path_factory):
    """What `mlx_lm.fuse --export-gguf` does to the vocabulary: every score -1000."""
    config = json.loads((tiny_model_dir / "config.json").read_text())
    vocab = load_vocab(tiny_model_dir, config["vocab_size"])
    vocab.scores = [-1000.0] * len(vocab.scores)
    return write_gguf(tiny_model_dir, tmp_path_factory.mktemp("mut") / "scores.gguf", vocab=vocab)


def test_f16_parity_passes(reference, tiny_gguf):
    report = check_parity(reference, tiny_gguf)
    assert report.quantization == "f16"  # read from the GGUF's file type
    assert report.passed and report.tokens_match
    assert report.top1 == 1.0 and report.kl_mean < 1e-3
    assert len(report.rows) == 5 and all(r.n_tokens > 10 for r in report.rows)


def test_quantized_parity_figures(reference, tiny_gguf, tmp_path):
    reports = {}
    for qtype in ("q8_0", "q4_k_m"):
        gguf = quantize(tiny_gguf, tmp_path / f"{qtype}.gguf", qtype)
        reports[qtype] = check_parity(reference, gguf, enforce=False)
        print(reports[qtype].summary())
    q8, q4 = reports["q8_0"], reports["q4_k_m"]
    assert q8.tokens_match and q4.tokens_match
    assert q8.passed and q4.passed, q4.summary()
    assert 0 < q8.kl_mean < q4.kl_mean  # q8_0 is measurably closer than q4_k_m
    assert q4.thresholds.max_kl > q8.thresholds.max_kl > thresholds_for("f16").max_kl


def test_scores_forced_to_minus_1000_fail_the_gate(reference, minus_1000_gguf):
    with pytest.raises(ParityError, match="tokenizes .* differently") as failure:
        check_parity(reference, minus_1000_gguf)
    assert "ids DIFFER" in str(failure.value) and "first difference at token" in str(failure.value)


def test_qk_left_in_hf_order_fails_the_gate(reference, tiny_model_dir, tmp_path):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    weights = {k: np.array(v) for k, v in load_weights(tiny_model_dir).items()}
    for key, heads in (("q_proj", config["num_attention_heads"]), ("k_proj", config["num_key_value_heads"])):
        for name in [n for n in weights if n.endswith(f"{key}.weight")]:
            w = weights[name]  # undo the writer's permutation, so the file keeps HF's row order
            weights[name] = (w.reshape(heads, w.shape[0] // heads // 2, 2, -1).swapaxes(1, 2).reshape(w.shape))
    gguf = write_gguf(tiny_model_dir, tmp_path / "unpermuted.gguf", weights=weights)
    report = check_parity(reference, gguf, enforce=False)
    assert report.tokens_match and not report.passed and report.kl_mean > 1e-2


def test_quantized_mlx_base_is_dequantized(tiny_model_dir, tmp_path):
    import mlx_lm

    qdir = tmp_path / "q4"
    mlx_lm.convert(str(tiny_model_dir), mlx_path=str(qdir), quantize=True, q_group_size=64, q_bits=4)
    assert json.loads((qdir / "config.json").read_text())["quantization"]["bits"] == 4
    # mlx_lm.convert writes no tokenizer.model: the vocabulary comes from tokenizer.json here.
    assert not (qdir / "tokenizer.model").exists()
    gguf = write_gguf(qdir, tmp_path / "q4-dequantized-f16.gguf")
    report = check_parity(MLXReference(qdir), gguf)
    assert report.passed and report.top1 == 1.0


def test_compare_logits_excuses_only_near_ties():
    ref = np.array([[2.0, 1.99, 0.0], [3.0, 1.0, 0.0]])
    got = np.array([[1.99, 2.0, 0.0], [1.0, 3.0, 0.0]])
    agree, strict, kl = compare_logits(ref, got, tie_tol=0.05)
    assert agree.tolist() == [True, False] and strict.tolist() == [False, False]
    assert kl[0] < 1e-3 < kl[1]
    same = compare_logits(ref, ref, 0.0)
    assert same[0].all() and np.allclose(same[2], 0.0)


def test_unknown_quantization_lists_valid_names():
    with pytest.raises(ConfigError, match="q4_k_m"):
        thresholds_for("q4_k_xl")


def test_load_prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('"Qui es-tu ?"\n\n[{"role": "user", "content": "Bonjour"}]\n'
                    '{"name": "sys", "messages": [{"role": "system", "content": "x"}, '
                    '{"role": "user", "content": "y"}]}\n', encoding="utf-8")
    prompts = load_prompts(path)
    assert [name for name, _ in prompts] == ["line1", "line3", "sys"]
    assert prompts[0][1] == [{"role": "user", "content": "Qui es-tu ?"}]
    path.write_text('"ok"\n{"foo": 1}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"prompts.jsonl:2"):
        load_prompts(path)


def test_parity_command(tiny_model_dir, tiny_gguf, minus_1000_gguf, tmp_path):
    from click.testing import CliRunner

    from dantes_mlx.cli import main

    out = tmp_path / "report.json"
    args = ["parity", "--model", str(tiny_model_dir), "--no-adapter", "--config", str(tmp_path / "none.yaml")]
    (tmp_path / "none.yaml").write_text("{}\n")
    ok = CliRunner().invoke(main, args + ["--gguf", str(tiny_gguf), "--json", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "parity PASSED (f16)" in ok.output and json.loads(out.read_text())["passed"] is True
    bad = CliRunner().invoke(main, args + ["--gguf", str(minus_1000_gguf)])
    assert bad.exit_code == 1 and "parity FAILED" in bad.output and "Traceback" not in bad.output
    clash = CliRunner().invoke(main, args + ["--gguf", str(tiny_gguf), "--adapter", str(tmp_path)])
    assert clash.exit_code == 2 and "--adapter and --no-adapter" in clash.output
    # --adapter-path, as train/export/ask/eval spell it, is accepted too
    alias = CliRunner().invoke(main, args + ["--gguf", str(tiny_gguf), "--adapter-path", str(tmp_path)])
    assert alias.exit_code == 2 and "--adapter and --no-adapter" in alias.output


def test_parity_command_compares_with_the_base_the_adapter_names(tiny_model_dir, tiny_gguf, tmp_path):
    # train.base_model is the default Hub repo (not cached here); the adapter records the tiny model,
    # as `train --base-model` writes it: parity must use that base, as export does.
    from click.testing import CliRunner
    from test_export_peft import make_mlx_adapter

    from dantes_mlx.cli import main

    adapter = make_mlx_adapter(tiny_model_dir, tmp_path / "adapters", b_std=0.0)  # B = 0: the base itself
    (tmp_path / "dantes.yaml").write_text("{}\n")
    result = CliRunner().invoke(main, ["parity", "--config", str(tmp_path / "dantes.yaml"), "--gguf",
                                       str(tiny_gguf), "--adapter", str(adapter)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "parity PASSED (f16)" in result.output


def test_parity_command_with_an_uncached_hub_model_fails_clearly(tiny_gguf, tmp_path, monkeypatch):
    import huggingface_hub
    from click.testing import CliRunner
    from huggingface_hub.errors import LocalEntryNotFoundError

    from dantes_mlx.cli import main

    def offline(repo_id, **kw):
        raise LocalEntryNotFoundError("no connection and not in the cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    (tmp_path / "dantes.yaml").write_text("{}\n")
    result = CliRunner().invoke(main, ["parity", "--config", str(tmp_path / "dantes.yaml"), "--gguf",
                                       str(tiny_gguf), "--model", "someone/not-cached", "--no-adapter"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert "someone/not-cached" in result.output and "local cache" in result.output


def test_missing_or_broken_gguf_is_a_clear_error(reference, tmp_path):
    from dantes_mlx.errors import ModelError

    with pytest.raises(ModelError, match="not found"):
        check_parity(reference, tmp_path / "absent.gguf")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    with pytest.raises(ModelError, match="broken.gguf"):
        check_parity(reference, broken)


def transformers5_config(model_dir, dest, **changes):
    """A copy of the model whose config.json keeps rope_theta only under rope_parameters, as transformers 5
    re-saves it (the weights are links to the original files)."""
    dest.mkdir()
    for item in model_dir.iterdir():
        (dest / item.name).symlink_to(item)
    config = json.loads((model_dir / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": config.pop("rope_theta")}
    config.update(changes)
    (dest / "config.json").unlink()
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_rope_theta_under_rope_parameters_reaches_the_gguf_and_mlx(tiny_model_dir, tmp_path):
    import gguf
    import mlx_lm

    model = transformers5_config(tiny_model_dir, tmp_path / "t5")
    plain, _ = mlx_lm.load(str(model))
    assert plain.args.rope_theta == 10000  # mlx-lm alone falls back to its default: why the override exists
    out = write_gguf(model, tmp_path / "t5-f16.gguf")
    assert gguf.GGUFReader(str(out)).fields["llama.rope.freq_base"].contents() == 1e6
    reference = MLXReference(model)
    assert reference.rope_thetas == {"config.json": 1e6, "mlx-lm": 1e6}
    report = check_parity(reference, out)
    assert report.passed and report.rope_theta == 1e6


def test_a_gguf_with_another_rope_theta_fails_the_gate(reference, tiny_model_dir, tmp_path):
    wrong = transformers5_config(tiny_model_dir, tmp_path / "wrong")
    config = json.loads((wrong / "config.json").read_text())
    config["rope_parameters"]["rope_theta"] = 10000.0
    (wrong / "config.json").write_text(json.dumps(config))
    out = write_gguf(wrong, tmp_path / "wrong-f16.gguf")
    report = check_parity(reference, out, enforce=False)
    assert not report.passed
    assert any("rope_theta differs: config.json 1e+06, mlx-lm 1e+06, GGUF 10000" in f for f in report.failures)


@pytest.fixture(scope="module")
def tuned(tiny_model_dir, tmp_path_factory):
    """A synthetic LoRA (random nonzero B, not trained) whose effect on the predictions is clear."""
    from test_export_peft import make_mlx_adapter

    adapter = make_mlx_adapter(tiny_model_dir, tmp_path_factory.mktemp("tuned") / "adapter", b_std=0.01)
    return adapter, MLXReference(tiny_model_dir, adapter)


def test_a_gguf_without_the_fine_tune_fails_even_within_the_quantization_bounds(tuned, reference, tiny_model_dir,
                                                                              tiny_gguf, tmp_path):
    from dantes_mlx.export import export_all

    adapter, tuned_reference = tuned
    result = export_all(tiny_model_dir, adapter, tmp_path / "out", quantization="q4_k_m", log=lambda m: None)
    assert result.passed, result.summary()
    carried = result.reports["fused q4_k_m"].finetune
    assert carried.effect > 0.03 and carried.share > 0.5
    base_q4 = quantize(tiny_gguf, tmp_path / "base-q4_k_m.gguf", "q4_k_m")
    report = check_parity(tuned_reference, base_q4, enforce=False, base=reference)
    # Inside q4_k_m's KL and top-1 bounds (quantization noise is larger than this fine-tune's effect)...
    assert report.kl_mean < report.thresholds.max_kl and report.top1 >= report.thresholds.min_top1
    # ...but no closer to the fine-tuned model than the base is: the fine-tune check alone fails it.
    assert not report.passed and report.finetune.share < -0.5 and len(report.failures) == 1
    assert "was the adapter left out?" in report.failures[0], report.summary()
    with pytest.raises(ParityError, match=r"fine-tune share -[01]\.\d\d < 0\.25"):
        check_parity(tuned_reference, tiny_gguf, base=reference)


def test_an_adapter_that_changes_nothing_skips_the_fine_tune_check(reference, tiny_model_dir, tiny_gguf, tmp_path):
    from test_export_peft import make_mlx_adapter

    zero = MLXReference(tiny_model_dir, make_mlx_adapter(tiny_model_dir, tmp_path / "zero", b_std=0.0))
    report = check_parity(zero, tiny_gguf, base=reference)
    assert report.passed and not report.finetune.applies and "check skipped" in report.summary()


def test_finetune_share_is_about_one_with_the_fine_tune_and_minus_one_without():
    from dantes_mlx.export.finetune_check import finetune_check, kl_divergence

    rng = np.random.default_rng(0)
    base = [rng.normal(0, 3, (50, 40))]
    tuned = [base[0] + rng.normal(0, 0.5, (50, 40))]
    noise = rng.normal(0, 0.7, (50, 40))  # more noise than fine-tune, as a q4 file of a small model
    for gguf, expected in ((tuned[0] + noise, 1.0), (base[0] + noise, -1.0)):
        check = finetune_check(tuned, base, [gguf], float(kl_divergence(tuned[0], gguf).mean()))
        assert abs(check.share - expected) < 0.35, (expected, check)
    assert finetune_check(tuned, base, [base[0]], float(kl_divergence(tuned[0], base[0]).mean())).share < -0.9
