"""`prepare` end to end: CLI and config, provenance, HF DatasetDict, and a round trip through mlx-lm's loader
and trainer on the tiny model (tmp files, no network)."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from dantes_mlx.cli import main
from dantes_mlx.config import DANTES_PERSONA, PrepareConfig
from dantes_mlx.dataset.prepare import prepare, push_hf

FIXTURES = Path(__file__).parent.parent / "fixtures"
TOPICS = ["la mer", "Marseille", "le château d'If", "l'abbé Faria", "Mercédès", "le trésor", "Paris",
          "la vengeance", "le pardon", "Danglars", "Fernand", "Villefort", "Haydée", "Albert", "Morrel"]


def pairs_file(path: Path, n_citations: int = 15, per_citation: int = 3) -> Path:
    """Rows as the generate stage writes them: several pairs per citation sharing a source_id."""
    rows = []
    for c in range(n_citations):
        for k in range(per_citation):
            rows.append({"instruction": f"Question {k} : que vous inspire {TOPICS[c % len(TOPICS)]} ({c}) ?",
                         "response": f"{TOPICS[(c * 7 + k) % len(TOPICS)].capitalize()} m'a appris la patience et "
                                     f"la justice, leçon numéro {c * 10 + k} de ma longue captivité.",
                         "source_id": f"cit-{c:03d}", "citation": f"Citation {c}", "model": "fake",
                         "prompt_version": "v1"})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cli_prepare_with_yaml_defaults_and_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = pairs_file(tmp_path / "pairs.jsonl")
    (tmp_path / "dantes.yaml").write_text("prepare:\n  split: 60/20/20\n  seed: 3\n"
                                          "character:\n  persona: Tu es Edmond.\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["prepare", str(source), "-o", "out", "--tokenizer", "none"])
    assert result.exit_code == 0, result.output
    assert "wrote train 27, valid 9, test 9 rows" in result.output and "0 error(s)" in result.output
    row = read_rows(tmp_path / "out" / "train.jsonl")[0]
    assert row["messages"][0] == {"role": "system", "content": "Tu es Edmond."}
    assert row["source_id"].startswith("cit-")
    flags = CliRunner().invoke(main, ["prepare", str(source), "-o", "out2", "--split", "80/10/10", "--no-system",
                                      "--format", "completions", "--tokenizer", "none"])
    assert flags.exit_code == 0, flags.output
    assert "wrote train 36, valid 6, test 3 rows" in flags.output  # whole citations of 3 rows each
    assert set(read_rows(tmp_path / "out2" / "valid.jsonl")[0]) == {"prompt", "completion", "source_id"}
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text("utf-8"))
    assert report["counts"] == {"train": 27, "valid": 9, "test": 9}


def test_prepare_with_an_uncached_hub_tokenizer_offline_fails_fast(tmp_path):
    import os
    import subprocess
    import sys
    import time

    # An empty HF cache and a Hub endpoint nothing listens on: no network, and huggingface_hub's retries
    # (about 45 s) would blow the subprocess timeout.
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    source = pairs_file(tmp_path / "pairs.jsonl")
    tic = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "dantes_mlx", "prepare", str(source), "-o", str(tmp_path / "out"),
                           "--tokenizer", "someone/not-cached-tokenizer"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=25)
    assert proc.returncode == 1 and time.monotonic() - tic < 20, proc.stderr[-2000:]
    err = proc.stderr
    assert "someone/not-cached-tokenizer" in err and "not in the local Hugging Face cache" in err
    assert "hf download someone/not-cached-tokenizer" in err and "HF_HUB_OFFLINE=1" in err
    assert "--tokenizer" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_default_input_is_the_generate_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "pairs").mkdir(parents=True)
    pairs_file(tmp_path / "data" / "pairs" / "pairs.jsonl")
    (tmp_path / "data" / "pairs" / "pairs.rejects.jsonl").write_text('{"broken": 1}\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["prepare", "--tokenizer", "none"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "dataset" / "train.jsonl").is_file()
    empty = CliRunner().invoke(main, ["prepare", "--tokenizer", "none", "--config", str(tmp_path / "none.yaml")])
    assert empty.exit_code == 1 and "config file not found" in empty.output
    # generate.output set in dantes.yaml: that file, as `run` reads it
    pairs_file(tmp_path / "mine.jsonl")
    (tmp_path / "dantes.yaml").write_text("generate:\n  output: mine.jsonl\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["prepare", "--tokenizer", "none", "-o", "out"])
    assert result.exit_code == 0, result.output
    assert [i[0] for i in json.loads((tmp_path / "out" / "prepare_report.json").read_text())["inputs"]] == ["mine.jsonl"]
    (tmp_path / "mine.jsonl").unlink()
    result = CliRunner().invoke(main, ["prepare", "--tokenizer", "none", "-o", "out"])
    assert result.exit_code != 0 and "mine.jsonl" in result.output and "generate" in result.output


def test_prepare_reports_drops_and_no_source_id_spans_splits(tmp_path):
    source = pairs_file(tmp_path / "pairs.jsonl")
    rows = read_rows(source)
    rows.append(dict(rows[4]))  # exact duplicate
    rows.append(dict(rows[7], response=rows[7]["response"] + " ")) # same after normalisation
    rows.append(dict(rows[2], response=""))  # empty answer
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = prepare([source], tmp_path / "out", PrepareConfig(split="60/20/20"), DANTES_PERSONA)
    assert [(where.rsplit(":", 1)[1], reason) for where, reason, _ in report.duplicates] == \
        [("46", "exact duplicate"), ("47", "exact duplicate")]
    assert report.invalid == [(f"{source}:48", "empty assistant content at message 1")]
    assert "dedupe: dropped 2 row(s) (2 exact duplicate)" in report.summary()
    assert any("could not check that the chat template keeps system messages" in n for n in report.notes)
    where: dict[str, set] = {}
    for split in ("train", "valid", "test"):
        for row in read_rows(tmp_path / "out" / f"{split}.jsonl"):
            where.setdefault(row["source_id"], set()).add(split)
    assert len(where) == 15 and all(len(s) == 1 for s in where.values())


def test_empty_split_files_are_not_written(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "test.jsonl").write_text("stale\n", encoding="utf-8")
    report = prepare([pairs_file(tmp_path / "p.jsonl")], out, PrepareConfig(split="90/10"))
    assert report.counts["test"] == 0 and not (out / "test.jsonl").exists()


def test_save_hf_dataset_dict_to_disk(tmp_path):
    import datasets
    cfg = PrepareConfig(split="60/20/20", save_hf=str(tmp_path / "hf"))
    report = prepare([FIXTURES / "email_routing.jsonl"], tmp_path / "out", cfg)
    loaded = datasets.load_from_disk(report.hf_dir)
    assert set(loaded) == {"train", "valid", "test"}
    assert sum(len(loaded[s]) for s in loaded) == 54
    assert set(loaded["train"].column_names) == {"messages", "source_id", "label"}
    assert loaded["valid"][0]["messages"][-1]["role"] == "assistant"


def test_push_to_hub_uses_the_env_token_and_never_prints_it(monkeypatch, tmp_path):
    import datasets
    calls = []
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub",
                        lambda self, repo, **kw: calls.append((repo, kw, {k: len(v) for k, v in self.items()})))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    report = prepare([FIXTURES / "email_routing.jsonl"], tmp_path / "out",
                     PrepareConfig(split="60/20/20", hub_repo="me/emails"))
    assert calls == [("me/emails", {"private": True, "token": "hf_secret_value"},
                      {"train": 32, "valid": 11, "test": 11})]
    assert "hf_secret_value" not in report.summary()

    def refuse(self, repo, **kw):
        raise RuntimeError("401 Unauthorized for token hf_secret_value")

    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", refuse)
    with pytest.raises(Exception) as err:
        push_hf({"train": [{"text": "x", "source_id": "1"}]}, "me/emails")
    assert "hf_secret_value" not in str(err.value) and "hf auth login" in str(err.value)


@pytest.mark.slow
def test_round_trip_through_mlx_lm_loader_and_one_training_step(tmp_path, tiny_model_dir):
    """prepare -> mlx_lm.tuner.datasets.load_dataset (extra keys ignored) -> one mlx-lm training step."""
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx_lm import load
    from mlx_lm.tuner import datasets as mlx_datasets
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.trainer import TrainingArgs, train
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from dantes_mlx.models.hub import load_tokenizer

    hf_tokenizer, _ = load_tokenizer(str(tiny_model_dir))
    out = tmp_path / "ds"
    report = prepare([pairs_file(tmp_path / "pairs.jsonl")], out, PrepareConfig(split="60/20/20"),
                     "Tu es Edmond Dantès.", hf_tokenizer)
    assert not report.validation.errors and report.validation.token_stats["train"]["max"] < 200
    assert any("drops a system message" in note for note in report.notes)  # Mistral's template: folded in
    first = read_rows(out / "train.jsonl")[0]
    assert first["messages"][0]["content"].startswith("Tu es Edmond Dantès.\n\n") and "source_id" in first

    model, tokenizer = load(str(tiny_model_dir))
    args = types.SimpleNamespace(data=str(out), train=True, test=True, mask_prompt=True, hf_dataset=False)
    train_set, valid_set, test_set = mlx_datasets.load_dataset(args, tokenizer)
    assert type(train_set).__name__ == "ChatDataset" and (len(train_set), len(valid_set), len(test_set)) == (27, 9, 9)
    tokens, offset = train_set.process(train_set[0])
    assert 0 < offset < len(tokens) and tokens[-1] == tokenizer.eos_token_id
    # Why the persona is folded: left as a system message, Mistral's template drops it from the full row
    # but keeps it in the prompt mlx-lm masks, so the mask covers the whole answer (nothing to learn).
    unfolded = {"messages": [{"role": "system", "content": DANTES_PERSONA},
                             {"role": "user", "content": "Qui êtes-vous ?"}, first["messages"][-1]]}
    raw_tokens, raw_offset = mlx_datasets.ChatDataset([unfolded], tokenizer, mask_prompt=True).process(unfolded)
    assert raw_offset >= len(raw_tokens)
    # The other two output formats load through the same code path.
    for fmt, kind in (("completions", "CompletionsDataset"), ("text", "TextDataset")):
        prepare([pairs_file(tmp_path / "pairs.jsonl")], tmp_path / fmt, PrepareConfig(format=fmt, system_prompt=False),
                tokenizer=hf_tokenizer)
        loaded = mlx_datasets.load_dataset(types.SimpleNamespace(data=str(tmp_path / fmt), train=True, test=False,
                                                                 mask_prompt=fmt != "text"), tokenizer)[0]
        assert type(loaded).__name__ == kind and len(loaded.process(loaded[0])[0]) > 5

    mx.random.seed(0)
    model.freeze()
    linear_to_lora_layers(model, 2, {"rank": 4, "scale": 2.0, "dropout": 0.0})
    losses = []

    class Record(TrainingCallback):
        def on_train_loss_report(self, info):
            losses.append(info["train_loss"])

    train(model, optim.Adam(learning_rate=1e-3), mlx_datasets.CacheDataset(train_set),
          mlx_datasets.CacheDataset(valid_set),
          TrainingArgs(batch_size=2, iters=1, val_batches=1, steps_per_report=1, steps_per_eval=1,
                       steps_per_save=100, max_seq_length=256, adapter_file=str(tmp_path / "adapters.safetensors")),
          training_callback=Record())
    assert len(losses) == 1 and math.isfinite(losses[0]) and losses[0] > 0


def test_labelled_texts_get_no_persona_but_character_pairs_do(tmp_path):
    rows = [{"prompt": f"Classe ce message : demande numéro {i}", "completion": "support" if i % 2 else "ventes",
             "source_id": f"text-{i}", "source": "label", "label": "support" if i % 2 else "ventes"} for i in range(20)]
    labelled = tmp_path / "labels.jsonl"
    labelled.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = prepare([labelled], tmp_path / "cls", PrepareConfig(format="chat"), DANTES_PERSONA)
    train = read_rows(tmp_path / "cls" / "train.jsonl")
    assert all(m["role"] != "system" and DANTES_PERSONA not in m["content"] for r in train for m in r["messages"])
    assert any("classification" in n for n in report.notes)
    prepare([pairs_file(tmp_path / "p.jsonl")], tmp_path / "voice", PrepareConfig(format="chat"), DANTES_PERSONA)
    voice = read_rows(tmp_path / "voice" / "train.jsonl")
    assert all(r["messages"][0] == {"role": "system", "content": DANTES_PERSONA} for r in voice)


WEATHER_TOOLS = [{"type": "function", "function": {
    "name": "meteo", "description": "La météo d'une ville",
    "parameters": {"type": "object", "properties": {"ville": {"type": "string"}}, "required": ["ville"]}}}]


def tool_rows(n: int) -> list[dict]:
    """mlx-lm's `tools` rows: an assistant turn with tool_calls and no content, answered by a `tool` message."""
    rows = []
    for i in range(n):
        city = f"{TOPICS[i % len(TOPICS)]} {i}"
        call = {"id": f"call_{i}", "type": "function",
                "function": {"name": "meteo", "arguments": json.dumps({"ville": city}, ensure_ascii=False)}}
        assistant = {"role": "assistant", "tool_calls": [call]} if i % 2 else \
            {"role": "assistant", "content": None, "tool_calls": [call]}
        rows.append({"messages": [{"role": "user", "content": f"Quel temps fait-il à {city} ?"}, assistant,
                                  {"role": "tool", "tool_call_id": f"call_{i}", "content": f"{{\"ciel\": {i}}}"},
                                  {"role": "assistant", "content": f"Le ciel numéro {i} couvre {city}."}],
                     "tools": WEATHER_TOOLS, "source_id": f"tool-{i}"})
    return rows


def test_tools_rows_are_split_unchanged_in_chat_format(tmp_path):
    """mlx-lm's ChatDataset passes `messages` and the row's `tools` to apply_chat_template as they are."""
    rows = tool_rows(11)
    call_only = {"messages": rows.pop()["messages"][:2], "tools": WEATHER_TOOLS, "source_id": "call-only"}
    rows += [call_only, dict(call_only), dict(rows[5])]  # two exact duplicates, one of them content-less
    source = tmp_path / "tools.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = prepare([source], tmp_path / "out", PrepareConfig(split="60/20/20"), DANTES_PERSONA)
    assert [reason for _, reason, _ in report.duplicates] == ["exact duplicate", "exact duplicate"]
    assert not report.validation.errors, report.validation.summary()
    written = {r["source_id"]: r for s in ("train", "valid", "test") for r in read_rows(tmp_path / "out" / f"{s}.jsonl")}
    assert len(written) == 11
    for row in rows[:11]:
        out = written[row["source_id"]]
        assert out["tools"] == WEATHER_TOOLS
        assert out["messages"][0] == {"role": "system", "content": DANTES_PERSONA}
        assert out["messages"][1:] == row["messages"]  # tool_calls, tool_call_id, a null or absent content kept

    from mlx_lm.tuner.datasets import ChatDataset

    class RecordingTokenizer:  # what mlx-lm's ChatDataset hands the chat template for our row
        calls: list = []

        def apply_chat_template(self, messages, tools=None, **kwargs):
            self.calls.append((messages, tools))
            return [1, 2, 3]

    tokenizer = RecordingTokenizer()
    ChatDataset([out], tokenizer).process(out)
    assert tokenizer.calls == [(out["messages"], WEATHER_TOOLS)]


@pytest.mark.parametrize("fmt", ["completions", "text"])
def test_tools_rows_need_the_chat_format(tmp_path, fmt):
    from dantes_mlx.errors import InputError

    source = tmp_path / "tools.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in tool_rows(4)), encoding="utf-8")
    with pytest.raises(InputError) as err:
        prepare([source], tmp_path / "out", PrepareConfig(format=fmt))
    assert "tools.jsonl:" in str(err.value) and "--format chat" in str(err.value)
    assert not (tmp_path / "out" / "train.jsonl").exists()
