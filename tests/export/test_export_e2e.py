"""`dantes-mlx export` end to end on the tiny model: train a few steps with the mlx backend, export the four
targets, pass the parity gate (f16 exact, q4_k_m figures, base GGUF + GGUF LoRA), register with a fake
`ollama`; PEFT input unchanged; mutated exports (token scores -1000, A/B not transposed) fail.

In-process, no network. Run: /work/venv/bin/python -m pytest tests/export/test_export_e2e.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import make_mlx_adapter, peft_from_mlx
from test_modelfile import fake_ollama

from dantes_mlx.cli import main
from dantes_mlx.config import TrainConfig
from dantes_mlx.errors import ModelError, ParityError
from dantes_mlx.export.modelfile import instructions, parse_modelfile
from dantes_mlx.export.parity import check_parity
from dantes_mlx.export.reference import MLXReference
from dantes_mlx.export.targets import export_all

pytestmark = pytest.mark.slow

PERSONA = "Tu es Edmond Dantès, le comte de Monte-Cristo."
QA = [("Qui êtes-vous ?", "Je suis Edmond Dantès, marin de Marseille."),
      ("D'où venez-vous ?", "Je viens du château d'If, où j'ai souffert quatorze ans."),
      ("Que voulez-vous ?", "Je veux la justice, et rien d'autre, monsieur.")]


def write_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 12), ("valid", 4)):
        rows = [{"messages": [{"role": "user", "content": f"{PERSONA}\n\n{QA[i % 3][0]}"},
                              {"role": "assistant", "content": QA[i % 3][1]}]} for i in range(n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                               encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter trained for a few steps by `dantes-mlx train`'s mlx backend."""
    from dantes_mlx.train.stage import train

    root = tmp_path_factory.mktemp("train")
    cfg = TrainConfig(backend="mlx", base_model=str(tiny_model_dir), num_layers=-1, rank=8, scale=2.0,
                      iters=12, learning_rate=2e-3, batch_size=4, warmup_steps=0, dropout=0.0,
                      steps_per_report=4, steps_per_eval=12, save_every=12, val_batches=1, lr_schedule="constant")
    train(cfg, write_dataset(root / "dataset"), root / "adapters")
    return root / "adapters"


@pytest.fixture(scope="module")
def cli_export(trained, tiny_model_dir, tmp_path_factory):
    """`dantes-mlx export` through the CLI, with a fake `ollama` on PATH."""
    root = tmp_path_factory.mktemp("export")
    record = fake_ollama(root / "bin")
    (root / "dantes.yaml").write_text(json.dumps({"character": {"persona": PERSONA}}), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", str(root / "bin"))
        result = CliRunner().invoke(main, ["export", "--config", str(root / "dantes.yaml"),
                                           "--adapter-path", str(trained), "--base-model", str(tiny_model_dir),
                                           "-o", str(root / "out"), "--quantization", "q4_k_m",
                                           "--name", "dantes", "--ollama-base", ""])
    return root / "out", result, record


def test_export_writes_four_targets_and_passes_the_gate(cli_export):
    out, result, _ = cli_export
    assert result.exit_code == 0, result.output
    for name in ("peft/adapter_model.safetensors", "peft/adapter_config.json", "dantes-lora-f16.gguf",
                 "dantes-f16.gguf", "dantes-q4_k_m.gguf", "base-f16.gguf", "Modelfile", "Modelfile.adapter",
                 "export.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["passed"] is True
    f16, lora = manifest["parity"]["fused f16"], manifest["parity"]["base f16 + GGUF LoRA"]
    for report in (f16, lora):  # f16 matches to numerical noise
        assert report["passed"] and report["tokens_match"] and report["top1"] == 1.0 and report["kl_mean"] < 1e-3
    q4 = manifest["parity"]["fused q4_k_m"]
    assert q4["tokens_match"] and 0 < q4["kl_mean"] < q4["thresholds"]["max_kl"] and q4["top1"] >= 0.6
    assert f16["kl_mean"] < q4["kl_mean"]
    assert "parity PASSED (q4_k_m)" in result.output and "mean KL" in result.output
    assert "chat template" not in result.output  # the tiny model's template is Mistral v0.3's, as the Modelfile's
    assert json.loads((out / "peft/adapter_config.json").read_text())["lora_alpha"] == 8 * 2


def test_the_trained_adapter_changes_the_model(cli_export, tiny_model_dir):
    """The gate has teeth: the base model alone does not predict like the fused export."""
    out, _, _ = cli_export
    report = check_parity(MLXReference(tiny_model_dir), out / "dantes-f16.gguf", enforce=False)
    assert report.tokens_match and not report.passed and report.kl_mean > 1e-3


def test_modelfiles_parse_and_ollama_create_ran(cli_export):
    out, result, record = cli_export
    fused = instructions(parse_modelfile((out / "Modelfile").read_text(), out / "Modelfile"))
    assert fused["model"] == ["./dantes-q4_k_m.gguf"] and fused["system"] == [PERSONA]
    assert fused["stop"] == ["[INST]", "[/INST]", "</s>"] and "template" in fused and "license" in fused
    adapter = instructions(parse_modelfile((out / "Modelfile.adapter").read_text()))
    assert adapter["model"] == ["./base-f16.gguf"] and adapter["adapter"] == ["./dantes-lora-f16.gguf"]
    argv, cwd = json.loads(record.read_text().splitlines()[0])
    assert argv == ["create", "dantes", "-f", str((out / "Modelfile").resolve())]
    assert "ollama model 'dantes' created" in result.output


def test_peft_adapter_exports_unchanged(cli_export, tiny_model_dir, tmp_path, monkeypatch):
    """The CUDA plugin writes PEFT adapters: export reads them as they are and passes the same gate (MLX runs the
    adapter's mlx-lm form, converted once into the cache)."""
    out, _, _ = cli_export
    monkeypatch.setenv("DANTES_MLX_CACHE", str(tmp_path / "cache"))
    result = export_all(tiny_model_dir, out / "peft", tmp_path / "out", quantization="f16", persona=PERSONA,
                        log=lambda msg: None)
    assert result.passed and set(result.reports) == {"fused f16", "base f16 + GGUF LoRA"}
    assert (tmp_path / "out/peft/adapter_model.safetensors").read_bytes() == \
        (out / "peft/adapter_model.safetensors").read_bytes()
    assert "mlx_adapter" not in result.files and len(list((tmp_path / "cache/mlx-adapters").iterdir())) == 1
    assert result.reports["base f16 + GGUF LoRA"].top1 == 1.0


def test_a_peft_folder_goes_through_export_and_the_parity_command(trained, tmp_path, monkeypatch):
    """A PEFT folder as peft writes it (the torch backend's format): `export` passes the gate on it, and
    `dantes-mlx parity --adapter PEFT` checks a GGUF against MLX + its mlx-lm form."""
    monkeypatch.setenv("DANTES_MLX_CACHE", str(tmp_path / "cache"))
    peft = peft_from_mlx(trained, tmp_path / "peft")
    config = tmp_path / "dantes.yaml"
    config.write_text(json.dumps({"character": {"persona": PERSONA}}), encoding="utf-8")
    export = CliRunner().invoke(main, ["export", "--config", str(config), "--adapter-path", str(peft), "-o",
                                       str(tmp_path / "out"), "--quantization", "f16", "--no-ollama-create"])
    assert export.exit_code == 0, export.output
    assert "[fused f16] parity PASSED" in export.output and "[base f16 + GGUF LoRA] parity PASSED" in export.output
    args = ["parity", "--config", str(config), "--adapter", str(peft), "--quantization", "f16", "--gguf"]
    passed = CliRunner().invoke(main, [*args, str(tmp_path / "out/dantes-f16.gguf")])
    assert passed.exit_code == 0 and "parity PASSED (f16)" in passed.output, passed.output
    failed = CliRunner().invoke(main, [*args, str(tmp_path / "out/base-f16.gguf")])  # the GGUF without the adapter
    assert failed.exit_code == 1 and "parity FAILED" in failed.output


def test_token_scores_forced_to_minus_1000_fail_the_export(trained, tiny_model_dir, tmp_path, monkeypatch):
    """What `mlx_lm.fuse --export-gguf` writes: every score -1000, so llama.cpp tokenizes differently."""
    from dantes_mlx.export import gguf as gguf_writer

    real = gguf_writer.load_vocab

    def minus_1000(*args, **kwargs):
        vocab = real(*args, **kwargs)
        vocab.scores = [-1000.0] * len(vocab.scores)
        return vocab

    monkeypatch.setattr(gguf_writer, "load_vocab", minus_1000)
    for name in ("Modelfile", "Modelfile.adapter"):  # left by an earlier, good export to the same folder
        (tmp_path / name).write_text("FROM ./dantes-f16.gguf\n")
    with pytest.raises(ParityError, match="tokenizes .* differently") as failure:
        export_all(tiny_model_dir, trained, tmp_path, quantization="f16", persona=PERSONA, log=lambda m: None)
    assert "first difference at token" in str(failure.value) and "export.json" in str(failure.value)
    # nothing to hand to Ollama: no stale Modelfile pointing at the failed, overwritten GGUF either
    assert not (tmp_path / "Modelfile").exists() and not (tmp_path / "Modelfile.adapter").exists()
    assert json.loads((tmp_path / "export.json").read_text())["passed"] is False


def test_untransposed_adapter_is_refused(trained, tiny_model_dir, tmp_path, monkeypatch):
    """A converter that forgets to transpose A/B: the shapes no longer fit the base, export refuses it
    before writing anything (the GGUF LoRA route through llama.cpp is covered in test_export_lora_gguf)."""
    monkeypatch.setattr("dantes_mlx.adapter_format.to_peft_orientation", lambda a, b: (a, b))
    with pytest.raises(ModelError, match="transposed"):
        export_all(tiny_model_dir, trained, tmp_path / "out", quantization="f16", log=lambda m: None)
    assert not (tmp_path / "out").exists()


def test_dora_exports_fused_only(tiny_model_dir, tmp_path):
    folder = make_mlx_adapter(tiny_model_dir, tmp_path / "dora", kind="dora", scale=8.0)
    result = export_all(tiny_model_dir, folder, tmp_path / "out", quantization="f16", log=lambda m: None)
    assert result.passed and list(result.reports) == ["fused f16"] and result.reports["fused f16"].top1 == 1.0
    assert "gguf_lora" not in result.files and any("DoRA" in n for n in result.notes)
    assert json.loads((tmp_path / "out/peft/adapter_config.json").read_text())["use_dora"] is True


def test_no_parity_no_ollama(trained, tiny_model_dir, tmp_path):
    (tmp_path / "none.yaml").write_text("{}\n")
    result = CliRunner().invoke(main, ["export", "--config", str(tmp_path / "none.yaml"), "--adapter-path",
                                       str(trained), "-o", str(tmp_path / "out"), "--quantization", "f16",
                                       "--no-parity", "--no-ollama-create"])
    assert result.exit_code == 0, result.output
    assert "parity gate skipped" in result.output and "ollama create dantes -f" in result.output
    assert (tmp_path / "out/dantes-f16.gguf").is_file() and (tmp_path / "out/Modelfile").is_file()
    # export.ollama_base defaults to Ollama's Mistral-7B-Instruct-v0.3, which the tiny base is not: the adapter
    # route uses our own base GGUF, and says why.
    adapter = instructions(parse_modelfile((tmp_path / "out/Modelfile.adapter").read_text()))
    assert adapter["model"] == ["./base-f16.gguf"] and (tmp_path / "out/base-f16.gguf").is_file()
    assert "is Mistral-7B-Instruct-v0.3 but the base model is not" in result.output


def test_a_library_base_is_kept_when_the_shapes_match_and_any_other_tag_is_trusted():
    from dantes_mlx.export.targets import ExportResult, _library_base

    mistral = {"hidden_size": 4096, "num_hidden_layers": 32, "vocab_size": 32768}
    result = ExportResult(Path("out"))
    assert _library_base("mistral:7b-instruct-v0.3-fp16", mistral, result) == "mistral:7b-instruct-v0.3-fp16"
    assert _library_base("llama3.2:1b", {"hidden_size": 64}, result) == "llama3.2:1b" and not result.notes
    assert _library_base("mistral:7b-instruct-v0.3-q4_K_M", {**mistral, "vocab_size": 32000}, result) == ""
    assert "vocab_size 32000" in result.notes[0]


def test_failed_ollama_create_keeps_the_export_and_its_summary(tiny_model_dir, tmp_path, monkeypatch):
    """Ollama installed but its server down: the export itself is done; say so, with the command to rerun."""
    folder = make_mlx_adapter(tiny_model_dir, tmp_path / "adapter")
    fake_ollama(tmp_path / "bin", exit_code=1)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    (tmp_path / "none.yaml").write_text("{}\n")
    cli = ["export", "--config", str(tmp_path / "none.yaml"), "--adapter-path", str(folder), "-o",
           str(tmp_path / "out"), "--quantization", "f16", "--no-parity", "--ollama-create"]
    result = CliRunner().invoke(main, cli)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert "export -> " in result.output and "dantes-f16.gguf" in result.output  # the summary is shown
    assert "could not connect" in result.output and "ollama serve" in result.output
    assert f"ollama create dantes -f {(tmp_path / 'out' / 'Modelfile').resolve()}" in result.output
    manifest = json.loads((tmp_path / "out" / "export.json").read_text())
    assert "modelfile" in manifest["files"] and "could not connect" in manifest["ollama"]
    # A name Ollama refuses is caught before minutes of fusing and quantizing.
    bad = CliRunner().invoke(main, cli[:-5] + [str(tmp_path / "bad"), "--name=-rf", "--no-parity"])
    assert bad.exit_code == 1 and "valid Ollama model name" in bad.output and not (tmp_path / "bad").exists()


def test_export_writes_the_bases_chat_format_or_warns(tiny_model_dir, tmp_path):
    """A ChatML base gets ChatML's TEMPLATE and stops in both Modelfiles; a base of a third format gets Mistral's
    and a note saying Ollama would prompt it unlike training."""
    import shutil

    base = tmp_path / "chatml-base"
    shutil.copytree(tiny_model_dir, base)
    (base / "chat_template.jinja").write_text("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                                              "{{ m['content'] }}<|im_end|>\n{% endfor %}")
    folder = make_mlx_adapter(base, tmp_path / "adapter")
    result = export_all(base, folder, tmp_path / "out", quantization="f16", parity=False, log=lambda m: None)
    assert not any("chat template" in n for n in result.notes)
    for modelfile in ("Modelfile", "Modelfile.adapter"):
        text = (tmp_path / "out" / modelfile).read_text(encoding="utf-8")
        assert "<|im_start|>assistant" in text and "PARAMETER stop <|im_end|>" in text and "[INST]" not in text
    (base / "chat_template.jinja").write_text("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n"
                                              "{% endfor %}")
    result = export_all(base, folder, tmp_path / "out2", quantization="f16", parity=False, log=lambda m: None)
    assert any("chat template" in n and "### user" in n and "TEMPLATE" in n for n in result.notes)


def test_export_refuses_another_base_of_the_same_shapes(tmp_path):
    """Two tiny models of one shape (seeds 0 and 1): the adapter's recorded fingerprint tells them apart."""
    from dantes_mlx.models.tiny import build_tiny_model
    from dantes_mlx.workspace import BASE_FINGERPRINT_FILE, write_base_fingerprint

    trained_on = build_tiny_model(tmp_path / "seed0", seed=0)
    other = build_tiny_model(tmp_path / "seed1", seed=1)
    assert (trained_on / "config.json").read_text() == (other / "config.json").read_text()
    folder = make_mlx_adapter(trained_on, tmp_path / "adapter")
    write_base_fingerprint(str(trained_on), folder)  # what `dantes-mlx train` records
    with pytest.raises(ModelError) as err:
        export_all(other, folder, tmp_path / "out", quantization="f16", parity=False, log=lambda m: None)
    message = str(err.value)
    assert str(trained_on) in message and str(other) in message and "--allow-other-base" in message
    assert not (tmp_path / "out").exists()  # refused before writing anything
    (tmp_path / "none.yaml").write_text("{}\n")
    cli = ["export", "--config", str(tmp_path / "none.yaml"), "--adapter-path", str(folder), "--base-model",
           str(other), "-o", str(tmp_path / "cli"), "--quantization", "f16", "--no-parity", "--no-ollama-create"]
    refused = CliRunner().invoke(main, cli)
    assert refused.exit_code == 1 and "different model" in refused.output
    forced = CliRunner().invoke(main, cli + ["--allow-other-base"])
    assert forced.exit_code == 0, forced.output
    assert "--allow-other-base" in forced.output and (tmp_path / "cli" / "dantes-f16.gguf").is_file()
    # The right base passes silently; an adapter from before fingerprints exports with a warning.
    ok = export_all(trained_on, folder, tmp_path / "ok", quantization="f16", parity=False, log=lambda m: None)
    assert not any("fingerprint" in n for n in ok.notes)
    (folder / BASE_FINGERPRINT_FILE).unlink()
    old = export_all(other, folder, tmp_path / "old", quantization="f16", parity=False, log=lambda m: None)
    assert any("no base-model fingerprint" in n and str(other) in n for n in old.notes)


def test_full_finetune_exports_fused_only(tiny_model_dir, tmp_path):
    """fine_tune_type full: the saved tensors replace the base ones; no LoRA targets to write."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(0)
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    tuned = {k: (v + 0.05 * rng.standard_normal(v.shape)).astype(np.float32)
             for k, v in base.items() if k.startswith("model.layers.1.")}
    folder = tmp_path / "full"
    folder.mkdir()
    save_file(tuned, str(folder / "adapters.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"model": str(tiny_model_dir), "fine_tune_type": "full",
                                                             "num_layers": 1}))
    result = export_all(None, folder, tmp_path / "out", quantization="f16", log=lambda m: None)
    assert result.passed and list(result.reports) == ["fused f16"] and result.reports["fused f16"].top1 == 1.0
    assert "peft" not in result.files and "gguf_lora" not in result.files
    assert any("full fine-tune" in n for n in result.notes)


@pytest.mark.parametrize(("version", "created"), [("ollama version is 0.34.1", False),
                                                  ("ollama version is 0.34.0", True)])
def test_adapter_route_checks_the_ollama_version_before_create(tiny_model_dir, tmp_path, monkeypatch, version,
                                                                created):
    """export.ollama_route adapter registers Modelfile.adapter, which Ollama 0.34.1 and later refuse."""
    folder = make_mlx_adapter(tiny_model_dir, tmp_path / "adapter")
    record = fake_ollama(tmp_path / "bin", version=version)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    result = export_all(tiny_model_dir, folder, tmp_path / "out", quantization="f16", parity=False,
                        ollama_create=True, ollama_route="adapter", log=lambda m: None)
    calls = [json.loads(line)[0] for line in record.read_text().splitlines()]
    assert "0.34.1 and later refuse" in (tmp_path / "out" / "Modelfile.adapter").read_text()
    if created:
        assert not result.ollama_failed and calls[0] == ["--version"]
        assert calls[1] == ["create", "dantes", "-f", str((tmp_path / "out" / "Modelfile.adapter").resolve())]
    else:
        assert result.ollama_failed and calls == [["--version"]]
        assert "refuses Modelfiles with ADAPTER" in result.ollama and "Modelfile" in result.ollama


def test_unknown_or_impossible_ollama_routes_are_refused_first(tiny_model_dir, tmp_path):
    from dantes_mlx.errors import ConfigError

    lora = make_mlx_adapter(tiny_model_dir, tmp_path / "lora")
    with pytest.raises(ConfigError, match="fused, adapter"):
        export_all(tiny_model_dir, lora, tmp_path / "out", ollama_route="library", log=lambda m: None)
    dora = make_mlx_adapter(tiny_model_dir, tmp_path / "dora", kind="dora")
    with pytest.raises(ConfigError, match="needs a LoRA adapter"):
        export_all(tiny_model_dir, dora, tmp_path / "out", ollama_route="adapter", log=lambda m: None)
    assert not (tmp_path / "out").exists()
