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
