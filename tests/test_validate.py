"""`validate`: each problem found with its file and line, token checks on the tiny model, fixes, the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from dantes_mlx.cli import main
from dantes_mlx.validate import load_tokenizer, truncate_row, validate_dir

SYSTEM = {"role": "system", "content": "Tu es Edmond Dantès."}


def chat(q: str, a: str, source: str, system: bool = False) -> dict:
    messages = ([SYSTEM] if system else []) + [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {"messages": messages, "source_id": source}


def clean_rows(split: str, n: int) -> list[dict]:
    topics = ["la mer", "Marseille", "le château d'If", "l'abbé Faria", "Mercédès", "le trésor", "Paris",
              "la vengeance", "le pardon", "Danglars", "Fernand", "Villefort"]
    return [chat(f"Que pensez-vous de {topics[i % len(topics)]}, question {split} {i} ?",
                 f"Réponse {split} {i} : {topics[(i * 5) % len(topics)]} m'a appris la patience numéro {i * 37}.",
                 f"{split}-{i}") for i in range(n)]


def write_dir(folder: Path, splits: dict[str, list]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        lines = [r if isinstance(r, (str, bytes)) else json.dumps(r, ensure_ascii=False) for r in rows]
        data = b"".join((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n" for line in lines)
        (folder / f"{split}.jsonl").write_bytes(data)
    return folder


def found(report, filename: str, line: int, text: str, severity: str = "error") -> bool:
    return any(Path(p.path).name == filename and p.line == line and text in p.message and p.severity == severity
               for p in report.problems)


@pytest.fixture
def clean_dir(tmp_path):
    return write_dir(tmp_path / "ds", {"train": clean_rows("train", 8), "valid": clean_rows("valid", 4),
                                       "test": clean_rows("test", 4)})


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir):
    tokenizer, note = load_tokenizer(str(tiny_model_dir))
    assert tokenizer is not None, note
    return tokenizer


def test_a_clean_folder_passes(clean_dir):
    report = validate_dir(clean_dir)
    assert report.errors == [] and report.rows == {"train": 8, "valid": 4, "test": 4}
    assert "skipped" in report.token_note


def test_splits_smaller_than_the_batch_size(clean_dir):
    report = validate_dir(clean_dir, batch_size=6)
    assert found(report, "valid.jsonl", None, "fewer than the batch size 6")
    assert found(report, "test.jsonl", None, "fewer than the batch size 6", "warning")
    assert not found(report, "train.jsonl", None, "batch size")


def test_each_problem_is_found_with_file_and_line(tmp_path):
    train = clean_rows("train", 6)
    train[1] = '{"messages": [{"role": "user", "content": "coupé'  # broken JSON
    train[2] = {"messages": [{"role": "user", "content": "Et la suite ?"}], "source_id": "t2"}
    train[3] = {"messages": [{"role": "user", "content": "Un"}, {"role": "user", "content": "Deux"},
                             {"role": "assistant", "content": "Trois"}], "source_id": "t3"}
    train[4] = chat("Une question sans réponse ?", "   ", "t4")
    train[5] = chat("Comment avez-vous survécu à quatorze années au château d'If ?",
                    "J'ai compté les jours sur la pierre humide, écouté la mer contre les rochers, appris "
                    "de l'abbé Faria les langues, la chimie et l'histoire, et nourri chaque nuit l'espoir "
                    "d'une justice que Dieu seul pouvait me rendre ; la patience fut ma prière, la vengeance "
                    "mon étoile, et le trésor de Monte-Cristo la clef qui ouvrit enfin la porte de ma prison "
                    "vers le monde des vivants.", "t5")
    valid = clean_rows("valid", 3)
    valid[2] = dict(train[0], source_id="valid-2")  # the same (question, answer) as train line 1
    test = clean_rows("test", 3)
    near = json.loads(json.dumps(train[5]))
    near["messages"][1]["content"] = near["messages"][1]["content"].replace("humide", "froide")
    near["source_id"] = "test-near"
    test[1] = near
    test[2] = dict(clean_rows("test", 3)[2], source_id="train-0")  # provenance shared with train
    report = validate_dir(write_dir(tmp_path / "ds", {"train": train, "valid": valid, "test": test}),
                          near_threshold=0.8)
    assert found(report, "train.jsonl", 2, "invalid JSON")
    assert found(report, "train.jsonl", 3, "missing assistant turn")
    assert found(report, "train.jsonl", 4, "two user turns in a row")
    assert found(report, "train.jsonl", 5, "empty assistant content")
    assert found(report, "valid.jsonl", 3, "leak: same (question, answer) as train.jsonl:1")
    assert found(report, "test.jsonl", 2, "leak: near-identical (question, answer) to train.jsonl:6")
    assert found(report, "test.jsonl", 3, "leak: source_id 'train-0' is also in train.jsonl:1")
    assert len(report.errors) == 7, "\n".join(map(str, report.problems))


def test_encoding_control_characters_and_mixed_formats(tmp_path):
    train = clean_rows("train", 4)
    train[1] = b'{"text": "caf\xe9"}'
    train[2] = chat("Bon\x07jour ?", "Bonsoir.", "t2")
    train[3] = {"prompt": "Une question ?", "completion": "Une réponse.", "source_id": "t3"}
    report = validate_dir(write_dir(tmp_path / "ds", {"train": train}))
    assert found(report, "train.jsonl", 2, "invalid UTF-8")
    assert found(report, "train.jsonl", 3, "control characters")
    assert found(report, "train.jsonl", 4, "completions row in a file that starts as chat")
    assert found(report, "ds", None, "no valid.jsonl", "warning")


def test_token_stats_and_rows_over_max_length(tmp_path, tiny_tokenizer):
    train = clean_rows("train", 5)
    train[3] = chat("Racontez-moi votre évasion.", " ".join(["la mer immense et noire"] * 40), "long")
    folder = write_dir(tmp_path / "ds", {"train": train, "valid": clean_rows("valid", 2)})
    report = validate_dir(folder, tiny_tokenizer, "tiny", max_seq_length=64)
    stats = report.token_stats["train"]
    assert stats["count"] == 5 and stats["min"] <= stats["median"] <= stats["p95"] <= stats["max"] > 64
    assert found(report, "train.jsonl", 4, "over max_seq_length 64")
    assert [(Path(row.path).name, row.line) for row, _ in report.too_long] == [("train.jsonl", 4)]


@pytest.mark.parametrize("fix", ["truncate", "drop"])
def test_truncate_or_drop_rewrites_the_file(tmp_path, tiny_tokenizer, fix):
    train = clean_rows("train", 5)
    train[3] = chat("Racontez-moi votre évasion.", " ".join(["la mer immense et noire"] * 40), "long")
    folder = write_dir(tmp_path / "ds", {"train": train, "valid": clean_rows("valid", 2)})
    valid_before = (folder / "valid.jsonl").read_bytes()
    report = validate_dir(folder, tiny_tokenizer, "tiny", max_seq_length=64, fix=fix)
    assert report.errors == [] and report.too_long == []
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text("utf-8").splitlines()]
    assert (folder / "valid.jsonl").read_bytes() == valid_before
    assert not list(folder.glob("*.tmp"))
    if fix == "truncate":
        assert report.fixed == {"truncated": 1} and len(rows) == 5
        answer = rows[3]["messages"][1]["content"]
        assert answer.startswith("la mer immense") and len(answer) < len(train[3]["messages"][1]["content"])
        assert report.token_stats["train"]["max"] <= 64
    else:
        assert report.fixed == {"dropped": 1} and [r["source_id"] for r in rows] == [f"train-{i}" for i in (0, 1, 2, 4)]


def test_dropped_system_message_is_reported(tmp_path, tiny_tokenizer):
    rows = [chat("Qui êtes-vous ?", "Un marin de Marseille.", "s1", system=True)]
    report = validate_dir(write_dir(tmp_path / "ds", {"train": rows}), tiny_tokenizer, "tiny")
    assert found(report, "train.jsonl", 1, "drops the system message", "warning")


def test_load_tokenizer_says_why_it_skips(monkeypatch, tiny_model_dir):
    from dantes_mlx.errors import ModelError

    assert load_tokenizer("none")[0] is None and "no tokenizer" in load_tokenizer("none")[1]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="'someone/not-a-cached-model' is not in the local Hugging Face cache "
                                         ".* and HF_HUB_OFFLINE is set") as err:
        load_tokenizer("someone/not-a-cached-model")
    assert "hf download someone/not-a-cached-model" in str(err.value)
    tokenizer, note = load_tokenizer(str(tiny_model_dir))
    assert tokenizer is not None and str(tiny_model_dir) in note


def test_cli_exit_status_and_messages(tmp_path, clean_dir):
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(clean_dir), "--tokenizer", "none"])
    assert ok.exit_code == 0, ok.output
    assert "0 error(s)" in ok.output
    bad = write_dir(tmp_path / "bad", {"train": clean_rows("train", 2) + ["{oops"]})
    result = runner.invoke(main, ["validate", str(bad), "--tokenizer", "none"])
    assert result.exit_code == 1
    assert f"{bad / 'train.jsonl'}:3: error: invalid JSON" in result.output
    missing = runner.invoke(main, ["validate", str(tmp_path / "nowhere"), "--tokenizer", "none"])
    assert missing.exit_code == 1 and "dataset folder not found" in missing.output


def test_rows_without_source_id_give_one_warning_per_file(tmp_path):
    rows = [{"messages": r["messages"]} for r in clean_rows("train", 5)]
    report = validate_dir(write_dir(tmp_path / "ds", {"train": rows}))
    warnings = [p for p in report.problems if "without source_id" in p.message]
    assert len(warnings) == 1 and warnings[0].line == 1 and "5 row(s)" in warnings[0].message


TOOL_ROW = {"messages": [{"role": "user", "content": "Quel temps fait-il à Marseille ?"},
                         {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                             "name": "meteo", "arguments": "{\"ville\": \"Marseille\"}"}}]},
                         {"role": "tool", "content": "{\"ciel\": \"bleu\"}"},
                         {"role": "assistant", "content": "Le ciel est bleu sur Marseille."}],
            "tools": [{"type": "function", "function": {"name": "meteo", "description": "La météo d'une ville",
                                                        "parameters": {"type": "object", "properties": {}}}}],
            "source_id": "tool-1"}


def test_mlx_lm_tools_rows_pass_and_a_stray_tool_message_does_not(tmp_path):
    """mlx-lm's LORA.md documents a `tools` format: tool_calls without content, then `tool` messages."""
    call_only = {"messages": TOOL_ROW["messages"][:2], "tools": TOOL_ROW["tools"], "source_id": "tool-2"}
    stray = chat("Bonjour", "Bonjour à vous.", "tool-3")
    stray["messages"].insert(1, {"role": "tool", "content": "{}"})
    report = validate_dir(write_dir(tmp_path / "ds", {"train": clean_rows("train", 4) + [TOOL_ROW, call_only, stray]}))
    assert [(Path(p.path).name, p.line) for p in report.errors] == [("train.jsonl", 7)]
    assert "does not follow an assistant turn with tool_calls" in report.errors[0].message


def test_a_shared_instruction_is_not_a_leak_but_the_same_email_is(tmp_path):
    instruction = ("Classe l'e-mail suivant dans l'une de ces catégories : Achats, Comptabilité, Informatique, "
                   "Juridique, Logistique, Paie, Qualité, Recrutement, Ressources humaines, Sécurité. Réponds "
                   "uniquement par le nom de la catégorie.\n\n")
    words = "imprimante facture badge stylos devis salon livraison audit écran clavier souris réseau".split()
    rng = random.Random(0)
    rows = [{"prompt": instruction + " ".join(rng.sample(words, 2 + n % 10)), "completion": "Achats",
             "source_id": f"m{n}"} for n in range(28)]
    leak = dict(rows[9], prompt=rows[9]["prompt"] + " merci", source_id="again")  # 11 words + 1
    report = validate_dir(write_dir(tmp_path / "ds", {"train": rows[:20], "valid": rows[20:] + [leak]}))
    assert [p.message.split(" (Jaccard")[0] for p in report.problems] == [
        "leak: near-identical (question, answer) to train.jsonl:10"]


def test_the_length_checked_is_the_one_training_keeps(tmp_path, tiny_model_dir, monkeypatch):
    """train.max_seq_length: 64 in dantes.yaml: mlx-lm will cut at 64, so validate must report there, not at 2048."""
    train = clean_rows("train", 4) + [chat("Racontez-moi votre évasion.", " ".join(["la mer immense"] * 40), "long")]
    folder = write_dir(tmp_path / "ds", {"train": train, "valid": clean_rows("valid", 4)})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dantes.yaml").write_text("train:\n  max_seq_length: 64\n  batch_size: 2\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(main, ["validate", str(folder), "--tokenizer", str(tiny_model_dir)])
    assert result.exit_code == 1 and "train.jsonl:5: error:" in result.output
    assert "over max_seq_length 64 (mlx-lm cuts it there" in result.output
    flag = runner.invoke(main, ["validate", str(folder), "--tokenizer", str(tiny_model_dir), "--max-seq-length", "4096"])
    assert flag.exit_code == 0, flag.output


def test_a_final_tool_call_is_dropped_not_truncated():
    """--truncate cuts the final answer at a word; a row ending with tool_calls has none: drop it, no KeyError."""
    call_only = {"messages": TOOL_ROW["messages"][:2], "tools": TOOL_ROW["tools"], "source_id": "tool-2"}
    assert truncate_row(None, call_only, "chat", 8) is None


def test_truncate_keeps_each_original_and_never_replaces_a_backup(tmp_path, tiny_tokenizer):
    train = clean_rows("train", 5)
    train[3] = chat("Racontez-moi votre évasion.", " ".join(["la mer immense et noire"] * 40), "long")
    folder = write_dir(tmp_path / "ds", {"train": train, "valid": clean_rows("valid", 2)})
    original = (folder / "train.jsonl").read_bytes()
    report = validate_dir(folder, tiny_tokenizer, "tiny", max_seq_length=64, fix="truncate")
    assert (folder / "train.jsonl.orig").read_bytes() == original
    assert report.backups == [(folder / "train.jsonl", folder / "train.jsonl.orig")]
    assert "original of train.jsonl kept as" in report.summary()
    assert not (folder / "valid.jsonl.orig").exists()  # a split with nothing to fix is not touched
    (folder / "train.jsonl").write_bytes(original)  # the user puts the long row back and fixes again
    validate_dir(folder, tiny_tokenizer, "tiny", max_seq_length=64, fix="drop")
    assert (folder / "train.jsonl.orig").read_bytes() == original == (folder / "train.jsonl.orig.2").read_bytes()


@pytest.mark.parametrize("fix", ["truncate", "drop"])
def test_a_fix_that_would_empty_a_split_rewrites_nothing(tmp_path, tiny_tokenizer, fix):
    from dantes_mlx.errors import InputError

    folder = write_dir(tmp_path / "ds", {"train": clean_rows("train", 5), "valid": clean_rows("valid", 2),
                                         "test": clean_rows("test", 2)})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(InputError, match="would leave no row in") as info:
        validate_dir(folder, tiny_tokenizer, "tiny", max_seq_length=10, fix=fix)
    assert "--max-seq-length" in info.value.fix
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_cli_truncate_to_ten_tokens_is_refused_and_the_splits_stay(tmp_path, tiny_model_dir):
    folder = write_dir(tmp_path / "ds", {"train": clean_rows("train", 8), "valid": clean_rows("valid", 4),
                                         "test": clean_rows("test", 4)})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = CliRunner().invoke(main, ["validate", str(folder), "--tokenizer", str(tiny_model_dir),
                                       "--truncate", "--max-seq-length", "10"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "would leave no row" in result.output and "fix:" in result.output
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
