"""Bad inputs across every command: each ends with a clear error and leaves every file as it was.

A table of careless-user inputs (bad settings files, out-of-range flags, outputs that are inputs or of the wrong
kind, damaged files). Each row asserts: a non-zero exit, no traceback, a message naming the file and the line or
field and the fix, and every file that existed before byte-identical afterwards (and no lock file left).
In-process (click's CliRunner), temp dirs, no network: `pytest tests/test_bad_inputs.py -q`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dantes_mlx.cli import main

SCENE = ("Le navire entra dans le port de Marseille.\n\n"
         "— Un grand malheur, monsieur Morrel ! répondit Dantès, un grand malheur.\n\n"
         "— Et le chargement ? demanda l'armateur.\n\n"
         "— Il est en bon état, monsieur Morrel, je vous en réponds, dit Dantès.\n")
LAUGHS = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(  # "billion laughs": 10^9 values once expanded
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))


def chat_row(i: int, split: str) -> dict:
    return {"messages": [{"role": "user", "content": f"Que pensez-vous de la mer, question {split} {i} ?"},
                         {"role": "assistant", "content": f"La mer m'a appris la patience, réponse {split} {i}."}],
            "source_id": f"{split}-{i}"}


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def make_project(root: Path, model_dir: Path) -> None:
    """A project folder holding one of every file the commands read or write."""
    (root / "book.txt").write_text(SCENE, encoding="utf-8")
    (root / "latin1.txt").write_bytes(SCENE.encode("latin-1", "replace"))
    write_jsonl(root / "citations.jsonl", [{"citation": "--Un grand malheur, monsieur Morrel!", "contexte": "port"}])
    (root / "latin_citations.jsonl").write_bytes('{"citation": "Été"}\n'.encode("latin-1"))
    write_jsonl(root / "pairs.jsonl", [{"instruction": f"Question numéro {i} sur la mer ?", "source_id": f"s{i}",
                                        "response": f"Réponse numéro {i} : la mer m'a tout appris."} for i in range(30)])
    write_jsonl(root / "labels.jsonl", [{"text": "Facture fausse.", "label": "compta"}])
    (root / "raw.txt").write_text('{"instruction": "Qui ?", "response": "Moi."}\n', encoding="utf-8")
    for split, n in (("train", 8), ("valid", 4), ("test", 4)):
        write_jsonl(root / "ds" / f"{split}.jsonl", [chat_row(i, split) for i in range(n)])
    adapters = root / "adapters"
    adapters.mkdir()
    (adapters / "adapter_config.json").write_text(json.dumps({"model": str(model_dir), "fine_tune_type": "lora"}))
    (adapters / "adapters.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": {\"dtype\"")  # cut
    (adapters / "0000010_adapters.safetensors").write_bytes(b"")
    (adapters / "train_state.json").write_text(json.dumps({"step": 10, "iters": 20,
                                                           "checkpoint": "0000010_adapters.safetensors",
                                                           "config": {}}))
    (adapters / "dataset.sha256").write_text("0" * 64)  # trained on another dataset
    cut = root / "cut_model"
    cut.mkdir()
    for file in model_dir.iterdir():
        data = file.read_bytes()
        (cut / file.name).write_bytes(data[:len(data) // 2] if file.suffix == ".safetensors" else data)
    (root / "folder").mkdir()
    (root / "data" / "citations").mkdir(parents=True)
    (root / "data" / "citations" / "citations.jsonl").write_text("{\"citation\": \"gardée\"}\n", encoding="utf-8")


def yaml_file(name: str, text: str | bytes):
    """A setup step writing a settings file."""
    def setup(root: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return setup


# (id, setup or None, args, strings the message must hold). {model} is the tiny model folder.
CASES = [
    # -- settings files: structure, types, ranges, duplicates, anchors
    ("yaml-section-as-list", yaml_file("bad.yaml", "train: [1, 2]\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:1", "[train]", "mapping"]),
    ("yaml-binary", yaml_file("bad.yaml", b"\x00\xff\xfe\x89PNG binary"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml", "not UTF-8"]),
    ("yaml-books-int", yaml_file("bad.yaml", "project:\n  books: 17989\n"),
     ["fetch", "--config", "bad.yaml"], ["bad.yaml:2", "'books'", "a list"]),
    ("yaml-name-list", yaml_file("bad.yaml", "character:\n  name: [Edmond, Dantès]\n"),
     ["extract", "--method", "rules", "--input", "book.txt", "-o", "new.jsonl", "--config", "bad.yaml"],
     ["bad.yaml:2", "'name'", "must be text"]),
    ("yaml-aliases-string", yaml_file("bad.yaml", "character:\n  aliases: Dantès\n"),
     ["extract", "--method", "rules", "--input", "book.txt", "-o", "new.jsonl", "--config", "bad.yaml"],
     ["bad.yaml:2", "'aliases'", "[name]"]),
    ("yaml-duplicate-section", yaml_file("bad.yaml", "train:\n  iters: 5\ntrain:\n  rank: 4\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:3", "'train'", "given twice", "line 1"]),
    ("yaml-duplicate-key", yaml_file("bad.yaml", "train:\n  iters: 5\n  rank: 4\n  iters: 9\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:4", "'iters'", "given twice"]),
    ("yaml-billion-laughs", yaml_file("bad.yaml", LAUGHS),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml", "anchors and aliases"]),
    ("yaml-recursive-alias", yaml_file("bad.yaml", "eval:\n  probes: &p [a, *p]\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:2", "refers to the value"]),
    ("yaml-syntax", yaml_file("bad.yaml", "train:\n  iters: [5\n  rank: 4\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:", "invalid YAML"]),
    ("yaml-top-level-list", yaml_file("bad.yaml", "- train\n- eval\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml", "mapping of sections"]),
    ("yaml-unknown-section", yaml_file("bad.yaml", "trian:\n  iters: 5\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:1", "did you mean 'train'"]),
    ("yaml-unknown-key", yaml_file("bad.yaml", "train:\n  lerning_rate: 0.1\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:2", "did you mean 'learning_rate'"]),
    ("yaml-negative-learning-rate", yaml_file("bad.yaml", "train:\n  learning_rate: -1\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:2", "'learning_rate'", "greater than 0"]),
    ("yaml-nan-learning-rate", yaml_file("bad.yaml", "train:\n  learning_rate: .nan\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:2", "'learning_rate'"]),
    ("yaml-iters-text", yaml_file("bad.yaml", "train:\n  iters: many\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:2", "'iters'", "whole number"]),
    ("yaml-negative-temperature", yaml_file("bad.yaml", "llm:\n  temperature: -0.5\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:2", "'temperature'", "0 or more"]),
    ("yaml-split-over-100", yaml_file("bad.yaml", "prepare:\n  split: 90/20/10\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:2", "'split'", "add up to 100"]),
    ("yaml-reasoning-off-is-a-boolean", yaml_file("bad.yaml", "llm:\n  reasoning_effort: off\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:2", "'reasoning_effort'", "text", "quotes"]),
    ("yaml-top-p-zero", yaml_file("bad.yaml", "eval:\n  top_p: 0\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:2", "'top_p'", "more than 0"]),
    ("yaml-grounding-over-100", yaml_file("bad.yaml", "extract:\n  min_grounding: 150\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:2", "'min_grounding'", "at most 100"]),
    ("yaml-quantize-3", yaml_file("bad.yaml", "train:\n  quantize_base: 3\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:2", "'quantize_base'", "0, 4, 8"]),
    ("yaml-language-name", yaml_file("bad.yaml", "character:\n  language: French\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:2", "'language'", "ISO 639-1"]),
    ("yaml-messages-not-mappings", yaml_file("bad.yaml", "export:\n  ollama_messages: [bonjour]\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:2", "'ollama_messages'", "mappings"]),
    ("yaml-method-unknown", yaml_file("bad.yaml", "extract:\n  method: magic\n"),
     ["stats", "ds", "--tokenizer", "none", "--config", "bad.yaml"], ["bad.yaml:2", "'method'", "auto, hybrid, llm, rules"]),
    ("config-is-a-folder", None, ["fetch", "--config", "ds"], ["ds", "is a folder"]),
    ("config-is-a-folder-for-stats", None, ["stats", "ds", "--config", "ds"], ["'--config'", "is a directory"]),
    # -- flags out of range
    ("train-negative-learning-rate", None, ["train", "--data", "ds", "--learning-rate", "-1"],
     ["--learning-rate", "greater than 0"]),
    ("train-negative-scale", None, ["train", "--data", "ds", "--scale", "-1"], ["--scale", "greater than 0"]),
    ("train-negative-epochs", None, ["train", "--data", "ds", "--epochs", "-1"], ["--epochs", "0 or more"]),
    ("train-quantize-3", None, ["train", "--data", "ds", "--quantize-base", "3"], ["--quantize-base", "0, 4, 8"]),
    ("train-grad-accumulation-0", None, ["train", "--data", "ds", "--grad-accumulation", "0"],
     ["--grad-accumulation", "1 or more"]),
    ("train-steps-per-eval-0", None, ["train", "--data", "ds", "--steps-per-eval", "0"],
     ["--steps-per-eval", "1 or more"]),
    ("train-rank-0", None, ["train", "--data", "ds", "--rank", "0"], ["--rank", "1 or more"]),
    ("train-dropout-1.5", None, ["train", "--data", "ds", "--dropout", "1.5"], ["--dropout", "less than 1"]),
    ("train-iters-0", None, ["train", "--data", "ds", "--iters", "0"], ["--iters", "1 or more"]),
    ("prepare-split-nan", None, ["prepare", "pairs.jsonl", "-o", "new_ds", "--tokenizer", "none", "--split",
                                 "nan/10/10"], ["--split", "add up to 100"]),
    ("prepare-split-120", None, ["prepare", "pairs.jsonl", "-o", "new_ds", "--tokenizer", "none", "--split",
                                 "90/20/10"], ["--split", "90/20/10"]),
    ("ask-max-tokens-negative", None, ["ask", "--gguf", "x.gguf", "--max-tokens", "-1", "Qui ?"], ["'--max-tokens'", ">=1"]),
    ("ask-top-p-zero", None, ["ask", "--gguf", "x.gguf", "--top-p", "0", "Qui ?"], ["'--top-p'", "0<x<=1"]),
    ("ask-temp-nan", None, ["ask", "--gguf", "x.gguf", "--temp", "nan", "Qui ?"], ["'--temp'", "not a finite number"]),
    ("chat-top-p-inf", None, ["chat", "--gguf", "x.gguf", "--top-p", "inf"], ["'--top-p'"]),
    ("generate-temperature-nan", None, ["generate", "citations.jsonl", "-o", "p.jsonl", "--temperature", "nan"],
     ["'--temperature'", "not a finite number"]),
    ("extract-chunk-lines-0", None, ["extract", "--input", "book.txt", "-o", "new.jsonl", "--chunk-lines", "0"],
     ["--chunk-lines", "1 or more"]),
    ("generate-k-0", None, ["generate", "citations.jsonl", "-o", "new.jsonl", "-k", "0"],
     ["--pairs-per-citation", "1 or more"]),
    ("eval-max-tokens-0", None, ["eval", "--adapter-path", "adapters", "--data", "ds", "--max-tokens", "0"],
     ["--max-tokens", "1 or more"]),
    ("fetch-unicode-digits", None, ["fetch", "١٢٣", "--raw-dir", "raw"], ["'١٢٣'", "ebook id"]),
    ("stats-top-0", None, ["stats", "ds", "--tokenizer", "none", "--top", "0"], ["'--top'", ">=1"]),
    # -- outputs that are inputs, or of the wrong kind
    ("extract-output-is-the-book", None, ["extract", "--method", "rules", "--input", "book.txt", "-o", "book.txt"],
     ["book.txt", "would overwrite the input"]),
    ("extract-output-is-a-folder", None, ["extract", "--method", "rules", "--input", "book.txt", "-o", "folder"],
     ["folder", "is a folder"]),
    ("extract-output-under-a-file", None, ["extract", "--method", "rules", "--input", "book.txt", "-o",
                                           "book.txt/c.jsonl"], ["book.txt", "is a file, not a folder"]),
    ("extract-all-speakers-over-input", None, ["extract", "--all-speakers", "--input", "book.txt", "-o", "book.txt"],
     ["book.txt", "would overwrite the input"]),
    ("extract-latin1-book", None, ["extract", "--method", "rules", "--input", "latin1.txt", "-o", "new.jsonl"],
     ["latin1.txt", "not UTF-8", "iconv"]),
    ("generate-output-is-its-input", None, ["generate", "citations.jsonl", "-o", "citations.jsonl", "--url",
                                            "http://127.0.0.1:9/v1"], ["citations.jsonl", "would overwrite the input"]),
    ("generate-output-is-a-folder", None, ["generate", "citations.jsonl", "-o", "folder", "--url",
                                           "http://127.0.0.1:9/v1"], ["folder", "is a folder"]),
    ("generate-latin1-citations", None, ["generate", "latin_citations.jsonl", "-o", "new.jsonl", "--url",
                                         "http://127.0.0.1:9/v1"], ["latin_citations.jsonl:1", "not UTF-8"]),
    ("generate-labels-over-input", None, ["generate", "--labels", "labels.jsonl", "-o", "labels.jsonl"],
     ["labels.jsonl", "would overwrite the input"]),
    ("generate-from-raw-over-input", None, ["generate", "--from-raw", "raw.txt", "-o", "raw.txt"],
     ["raw.txt", "would overwrite the input"]),
    ("card-fan-in-1", None, ["card", "citations.jsonl", "-o", "new_card", "--fan-in", "1", "--url",
                             "http://127.0.0.1:9/v1"], ["--fan-in", "2 or more"]),
    ("card-output-is-a-file", None, ["card", "citations.jsonl", "-o", "citations.jsonl", "--url",
                                     "http://127.0.0.1:9/v1"], ["citations.jsonl", "is a file"]),
    ("card-latin1-citations", None, ["card", "latin_citations.jsonl", "-o", "new_card", "--url",
                                     "http://127.0.0.1:9/v1"], ["latin_citations.jsonl:1", "not UTF-8"]),
    ("prepare-card-json-not-json", yaml_file("data/card/card.json", "{pas du json"),
     ["prepare", "pairs.jsonl", "-o", "new_ds", "--tokenizer", "none"], ["card.json", "not a card", "dantes-mlx card"]),
    ("prepare-output-is-a-file", None, ["prepare", "pairs.jsonl", "-o", "pairs.jsonl", "--tokenizer", "none"],
     ["pairs.jsonl", "is a file"]),
    ("prepare-input-is-a-split-it-writes", None, ["prepare", "ds/train.jsonl", "-o", "ds", "--tokenizer", "none"],
     ["train.jsonl", "would overwrite the input"]),
    ("prepare-save-hf-holds-the-input", None, ["prepare", "pairs.jsonl", "-o", "new_ds", "--tokenizer", "none",
                                               "--save-hf", "."], ["--save-hf", "pairs.jsonl"]),
    ("prepare-save-hf-not-a-datasetdict", None, ["prepare", "pairs.jsonl", "-o", "new_ds", "--tokenizer", "none",
                                                 "--save-hf", "adapters"], ["adapters", "not a saved DatasetDict"]),
    ("stats-plot-is-a-folder", None, ["stats", "ds", "--tokenizer", "none", "--plot", "folder"],
     ["folder", "is a folder", "--plot"]),
    ("stats-plot-over-a-split", None, ["stats", "ds", "--tokenizer", "none", "--plot", "ds/train.jsonl"],
     ["train.jsonl", "would overwrite the input"]),
    ("clean-output-is-the-input", None, ["clean", "book.txt", "-o", "book.txt"], ["book.txt", "would overwrite"]),
    ("init-output-is-a-folder", None, ["init", "-o", "folder", "--force"], ["folder", "is a folder"]),
    ("fetch-raw-dir-is-a-file", None, ["fetch", "17989", "--raw-dir", "book.txt"], ["book.txt", "is a file"]),
    ("train-adapters-into-the-dataset", None, ["train", "--data", "ds", "--adapter-path", "ds"],
     ["ds", "would overwrite the input", "--adapter-path"]),
    ("train-resume-on-another-dataset", None, ["train", "--data", "ds", "--resume"],
     ["dataset.sha256", "another dataset", "--restart"]),
    ("eval-report-into-the-dataset", None, ["eval", "--adapter-path", "adapters", "--data", "ds", "-o", "ds"],
     ["ds", "would overwrite the input", "--out-dir"]),
    ("export-into-the-adapter-folder", None, ["export", "--adapter-path", "adapters", "-o", "adapters"],
     ["adapters", "would overwrite the input"]),
    ("parity-json-over-the-gguf", None, ["parity", "--gguf", "book.txt", "--json", "book.txt", "--no-adapter"],
     ["book.txt", "would overwrite the input", "--json"]),
    ("run-pairs-over-citations", yaml_file("same.yaml", "extract:\n  output: c.jsonl\ngenerate:\n  output: c.jsonl\n"),
     ["run", "--config", "same.yaml", "--to", "clean"], ["c.jsonl", "would overwrite the input", "generate.output"]),
    # -- damaged files and values a later step cannot hold
    ("ask-truncated-model", None, ["ask", "--model", "cut_model", "--base-only", "Qui ?"],
     ["model.safetensors", "truncated"]),
    ("ask-truncated-adapter", None, ["ask", "--model", "{model}", "--adapter-path", "adapters", "Qui ?"],
     ["adapters.safetensors", "not a whole safetensors file", "train again"]),
    ("export-persona-with-triple-quotes", yaml_file("p.yaml", 'character:\n  persona: \'Je dis """ non\'\n'),
     ["export", "--config", "p.yaml", "--adapter-path", "adapters", "-o", "exp"], ["p.yaml:2: system prompt (character.persona)",
                                                                                  '"""']),
    ("export-stop-with-triple-quotes", yaml_file("s.yaml", "export:\n  ollama_parameters: {stop: ['a\"\"\"b']}\n"),
     ["export", "--config", "s.yaml", "--adapter-path", "adapters", "-o", "exp"],
     ["s.yaml:2: export.ollama_parameters", "stop", '"""']),
    ("export-num-ctx-not-a-number", yaml_file("n.yaml", "export:\n  ollama_parameters: {num_ctx: big}\n"),
     ["export", "--config", "n.yaml", "--adapter-path", "adapters", "-o", "exp"],
     ["n.yaml:2: export.ollama_parameters", "num_ctx", "integer"]),
    ("run-unknown-quantization", yaml_file("q.yaml", "export:\n  quantization: q3_fancy\n"),
     ["run", "--config", "q.yaml"], ["q.yaml:2: export.quantization", "q3_fancy", "q4_k_m"]),
    ("run-persona-with-triple-quotes", yaml_file("p.yaml", 'character:\n  persona: \'Je dis """ non\'\n'),
     ["run", "--config", "p.yaml"], ["p.yaml:2: system prompt (character.persona)", '"""']),
]


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir) -> Path:
    return tiny_model_dir


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_table_covers_at_least_fifty_inputs_and_every_command():
    assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)
    commands = {args[0] for _, _, args, _ in CASES}
    assert commands >= {"init", "fetch", "clean", "extract", "generate", "prepare", "stats", "train", "export",
                        "parity", "ask", "eval", "run"}


@pytest.mark.parametrize("name, setup, args, needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error_and_changes_no_file(name, setup, args, needles, tmp_path, monkeypatch, model_dir):
    make_project(tmp_path, model_dir)
    if setup is not None:
        setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = snapshot(tmp_path)
    result = CliRunner().invoke(main, [a.replace("{model}", str(model_dir)) for a in args])
    out = result.output
    assert result.exit_code != 0, out
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # handled: click's exit, no traceback
    assert "Traceback" not in out
    assert "fix:" in out or "Invalid value for '" in out, out  # our errors say the fix; click's say the range
    for needle in needles:
        assert needle in out, (needle, out)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # no file changed
    assert not [k for k in after if k.endswith(".lock")]  # and no lock left behind
