"""The whole pipeline: the offline demo end to end, `run`'s stage selection, the demo's LLM stand-in.

In-memory or temp folders, no network; the demo test builds and trains a tiny model (about a minute).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dantes_mlx.cli import main
from dantes_mlx.demo_writer import MODEL_ID, DemoPairWriter, template_pairs
from dantes_mlx.errors import ConfigError
from dantes_mlx.llm.base import LLMClient
from dantes_mlx.pipeline import DEMO_SCENE, STAGES, run, stage_range


def test_demo_writer_is_a_labelled_llm_stand_in():
    writer = DemoPairWriter()
    assert isinstance(writer, LLMClient) and "stand-in" in MODEL_ID
    messages = [{"role": "system", "content": "consignes"},
                {"role": "user", "content": "Contexte : Morrel arrive.\nCitation : --La peur est la sœur de l'espérance."}]
    schema = {"properties": {"pairs": {"minItems": 2}}}
    pairs = json.loads(writer.chat(messages, json_schema=schema).text)["pairs"]
    assert len(pairs) == 2 and len({p["instruction"] for p in pairs}) == 2
    assert all("La peur est la sœur de l'espérance." in p["response"] for p in pairs)
    assert template_pairs("--Oui.", "", 3) == template_pairs("--Oui.", "", 3)  # deterministic


def test_stage_range_selects_and_rejects():
    assert stage_range(None, None) == STAGES
    assert stage_range("prepare", "export") == ["prepare", "train", "export"]
    with pytest.raises(ConfigError, match="valid stages"):
        stage_range("cook", None)
    with pytest.raises(ConfigError, match="comes after"):
        stage_range("export", "clean")


def test_run_clean_and_extract_with_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "scene.txt").write_bytes(DEMO_SCENE.read_bytes())
    run({"extract": {"method": "rules"}}, start="clean", stop="extract", log=lambda m: None)
    rows = [json.loads(line) for line in (tmp_path / "data/citations/citations.jsonl").read_text().splitlines()]
    assert len(rows) >= 8 and all(r["method"] == "rules" and r["character"] == "Edmond Dantès" for r in rows)
    assert any("comte" in r["contexte"] or "Monte-Cristo" in r["contexte"] for r in rows)


def test_run_without_config_file_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code != 0 and "dantes-mlx init" in result.output


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    work = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--workdir", str(work), "--iters", "12"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((work / "demo.json").read_text(encoding="utf-8"))
    for key in ("book", "citations", "pairs", "base_model", "adapters"):
        assert Path(manifest[key]).exists(), key
    for split in ("train", "valid", "test"):
        assert (Path(manifest["dataset"]) / f"{split}.jsonl").stat().st_size > 0, split
    exports = manifest["exports"]
    assert exports["passed"] is True
    assert set(exports["parity"]) == {"fused f16", "fused q4_k_m", "base f16 + GGUF LoRA"}
    for role in ("peft", "gguf_lora", "fused_f16", "fused", "modelfile"):
        assert Path(exports["files"][role]).exists(), role
    assert (work / "adapters" / "loss.png").is_file()
    assert isinstance(manifest["answer"], str)
    assert "dantes-mlx run" in result.output  # tells the user how to do the real thing


@pytest.fixture()
def gutenberg_server(tmp_path):
    """A local stand-in for gutenberg.org serving the demo scene as ebook 1 (127.0.0.1 only)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    (root / "cache" / "epub" / "1").mkdir(parents=True)
    (root / "cache" / "epub" / "1" / "pg1.txt").write_bytes(DEMO_SCENE.read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.slow
def test_run_every_stage_from_dantes_yaml(tmp_path, monkeypatch, gutenberg_server, tiny_model_dir):
    import yaml

    import dantes_mlx.llm as llm

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(llm, "make_client", lambda cfg: DemoPairWriter())  # no generator LLM offline
    config = {
        "project": {"books": ["1"], "gutenberg_url": gutenberg_server},
        "extract": {"method": "rules"},
        "prepare": {"tokenizer": str(tiny_model_dir)},
        "train": {"backend": "mlx", "base_model": str(tiny_model_dir), "iters": 6, "batch_size": 2,
                  "num_layers": -1, "rank": 4, "learning_rate": 1e-3, "steps_per_eval": 6, "save_every": 3,
                  "val_batches": 1},
        "export": {"quantization": "q8_0", "ollama_create": False},
        "eval": {"samples": 2, "max_tokens": 8, "probes": ["Qui es-tu ?"]},
    }
    (tmp_path / "dantes.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data/raw/1.txt").is_file() and (tmp_path / "data/clean/1.txt").is_file()
    assert (tmp_path / "data/pairs/pairs.jsonl").stat().st_size > 0
    assert (tmp_path / "adapters/adapters.safetensors").is_file()
    manifest = json.loads((tmp_path / "export/export.json").read_text(encoding="utf-8"))
    assert manifest["passed"] is True and (tmp_path / "export/Modelfile").is_file()
    assert list((tmp_path / "reports").glob("eval-*/index.html"))
    # A second run resumes: training continues from its checkpoint instead of starting again.
    again = CliRunner().invoke(main, ["run", "--from", "train", "--to", "train"])
    assert again.exit_code == 0 and "resuming" in again.output, again.output
    # A regenerated dataset is new training data: train from scratch, not on top of the old adapter.
    with open(tmp_path / "data/dataset/train.jsonl", "a", encoding="utf-8") as fh:
        fh.write(open(tmp_path / "data/dataset/train.jsonl", encoding="utf-8").readline())
    fresh = CliRunner().invoke(main, ["run", "--from", "train", "--to", "train"])
    assert fresh.exit_code == 0 and "training from scratch" in fresh.output, fresh.output
