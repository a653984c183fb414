"""The whole pipeline: the offline demo end to end, `run`'s stage selection, the demo's LLM stand-in.

In-memory or temp folders, no network; the demo test builds and trains a tiny model (about a minute).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dantes_mlx.cli import main
from dantes_mlx.config import load_yaml
from dantes_mlx.errors import ConfigError, InputError
from dantes_mlx.llm.base import LLMClient
from dantes_mlx.pipeline.demo import DEMO_SCENE
from dantes_mlx.pipeline.demo_writer import MODEL_ID, DemoPairWriter, template_pairs
from dantes_mlx.pipeline.run import STAGES, run, stage_range


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
    result = CliRunner().invoke(main, ["demo", "--workdir", str(work), "--tiny", "--iters", "12"])
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
        "llm": {"model": "generator.gguf"},  # answered by the stand-in above
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


# ---------------------------------------------------------------- run: settings checked first, stages as by hand
def _scene_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "scene.txt").write_bytes(DEMO_SCENE.read_bytes())


def test_run_checks_every_section_before_the_first_stage(tmp_path, monkeypatch):
    _scene_project(tmp_path, monkeypatch)
    (tmp_path / "dantes.yaml").write_text("extract:\n  method: rules\neval:\n  sampels: 2\n", encoding="utf-8")
    logged = []
    with pytest.raises(ConfigError) as info:
        run(load_yaml("dantes.yaml"), start="clean", log=logged.append)
    assert "sampels" in info.value.message and "dantes.yaml:4:" in info.value.message
    assert "'samples'" in info.value.message  # the close match
    assert logged == [] and not (tmp_path / "data" / "clean").exists()  # hours of work never started


def test_run_without_generator_says_what_to_set_before_any_stage(tmp_path, monkeypatch):
    _scene_project(tmp_path, monkeypatch)
    logged = []
    with pytest.raises(ConfigError) as info:
        run({}, start="clean", log=logged.append)
    message = info.value.message
    assert "llm.model" in message and "llm.url" in message and "--to extract" in message
    assert "--model" not in message.replace("llm.model", "")  # run has no --model option
    assert logged == []


def test_run_extract_without_clean_books_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="no clean"):
        run({"extract": {"method": "rules"}}, start="extract", stop="extract", log=lambda m: None)
    assert not (tmp_path / "data" / "citations" / "citations.jsonl").exists()


def test_run_writes_where_extract_and_generate_output_say(tmp_path, monkeypatch):
    import dantes_mlx.llm as llm

    _scene_project(tmp_path, monkeypatch)
    monkeypatch.setattr(llm, "make_client", lambda cfg: DemoPairWriter())
    config = {"llm": {"model": "gen.gguf"}, "extract": {"method": "rules", "output": "work/cits.jsonl"},
              "generate": {"output": "work/pairs.jsonl"}}
    run(config, start="clean", stop="generate", log=lambda m: None)
    assert (tmp_path / "work/cits.jsonl").stat().st_size > 0 and (tmp_path / "work/pairs.jsonl").stat().st_size > 0
    assert not (tmp_path / "data/citations").exists() and not (tmp_path / "data/pairs").exists()


def _citations_reply(messages):
    return {"citations": [{"contexte": "Dantès", "citation": "Merci, monsieur Morrel", "kind": "parole"}]}


def test_run_extract_reuses_what_the_extract_command_stored(tmp_path, monkeypatch):
    import dantes_mlx.llm as llm
    from dantes_mlx.llm.fake import FakeLLM

    _scene_project(tmp_path, monkeypatch)
    (tmp_path / "dantes.yaml").write_text("project:\n  books: [scene]\nllm:\n  model: gen.gguf\n  max_tokens: 900\n"
                                          "extract:\n  method: llm\n", encoding="utf-8")
    run(load_yaml("dantes.yaml"), start="clean", stop="clean", log=lambda m: None)
    by_hand = FakeLLM(default=_citations_reply)
    monkeypatch.setattr(llm, "make_client", lambda cfg: by_hand)
    result = CliRunner().invoke(main, ["extract", "--quiet"])
    assert result.exit_code == 0 and by_hand.calls, result.output
    assert by_hand.calls[0]["sampling"]["max_tokens"] == 900
    again = FakeLLM()  # no replies: any call is an AssertionError
    monkeypatch.setattr(llm, "make_client", lambda cfg: again)
    logged = []
    run(load_yaml("dantes.yaml"), start="extract", stop="extract", log=logged.append)
    assert again.calls == [] and "citations of Edmond Dantès kept (llm" in "\n".join(logged)


# ---------------------------------------------------------------- Ctrl-C: what was done is kept, the message says how to go on
class _InterruptingLLM:
    model_id = "interrupting"

    def chat(self, messages, json_schema=None, **sampling):
        raise KeyboardInterrupt


def test_ctrl_c_during_run_generate_says_how_to_resume(tmp_path, monkeypatch):
    import dantes_mlx.llm as llm

    _scene_project(tmp_path, monkeypatch)
    monkeypatch.setattr(llm, "make_client", lambda cfg: _InterruptingLLM())
    (tmp_path / "dantes.yaml").write_text("llm:\n  model: gen.gguf\nextract:\n  method: rules\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["run", "--from", "clean", "--to", "prepare"])
    assert result.exit_code == 130 and "Traceback" not in result.output, result.output
    assert "interrupted during generate" in result.output
    assert "dantes-mlx run --from generate --to prepare" in result.output


def _interrupted_training(cfg, data_dir, adapter_dir, resume=False, **kwargs):
    """What the mlx backend does on Ctrl-C after its first checkpoint: a state to resume, then the error."""
    from dantes_mlx.train.state import interrupted
    from dantes_mlx.workspace import STATE_FILE

    Path(adapter_dir).mkdir(parents=True, exist_ok=True)
    (Path(adapter_dir) / STATE_FILE).write_text('{"step": 2}', encoding="utf-8")
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise interrupted(2, Path(adapter_dir)) from None


def test_ctrl_c_during_run_training_points_at_run_not_at_a_missing_resume_flag(tmp_path, monkeypatch):
    import dantes_mlx.train.stage as train_module

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "dataset").mkdir(parents=True)
    (tmp_path / "dantes.yaml").write_text("project:\n  adapters_dir: out\n", encoding="utf-8")
    monkeypatch.setattr(train_module, "train", _interrupted_training)
    result = CliRunner().invoke(main, ["run", "--from", "train", "--to", "train"])
    assert result.exit_code == 130 and "Traceback" not in result.output, result.output
    assert "interrupted during train" in result.output and "--resume" not in result.output
    assert "dantes-mlx run --from train --to train" in result.output


def test_demo_interrupted_in_training_resumes_when_run_again(tmp_path, monkeypatch, tiny_model_dir):
    import shutil

    import dantes_mlx.models.tiny as tinymodel
    import dantes_mlx.train.stage as train_module

    def copy_tiny_model(out_dir, corpus=None, **kwargs):  # the demo's model, without training a tokenizer
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.copytree(tiny_model_dir, out_dir)
        return Path(out_dir)

    monkeypatch.setattr(tinymodel, "build_tiny_model", copy_tiny_model)
    monkeypatch.setattr(train_module, "train", _interrupted_training)
    work = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--workdir", str(work), "--tiny", "--iters", "4"])
    assert result.exit_code == 130 and "Traceback" not in result.output, result.output
    assert "--resume" not in result.output
    assert f"dantes-mlx demo --workdir {work} --tiny --iters 4" in result.output

    calls = []

    def record(cfg, data_dir, adapter_dir, resume=False, **kwargs):
        calls.append(resume)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train", record)
    again = CliRunner().invoke(main, ["demo", "--workdir", str(work), "--tiny", "--iters", "4"])
    assert calls == [True], again.output
    assert "resuming from the last checkpoint" in again.output
    assert "LLM: 0 calls (13 items cached" in again.output  # the pairs were not asked again
