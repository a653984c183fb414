"""`stats`: counts, length histogram PNG, label balance and repeated answer openings (tmp files, no network)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from dantes_mlx.cli import main
from dantes_mlx.config import PrepareConfig
from dantes_mlx.dataset.prepare import prepare
from dantes_mlx.dataset.stats import answer_opening, dataset_stats
from dantes_mlx.models.hub import load_tokenizer

FIXTURES = Path(__file__).parent.parent / "fixtures"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def collapsed_pairs(path: Path) -> Path:
    """Answers of which half open with the same words: the template collapse stats should show."""
    rows = []
    for i in range(20):
        opening = "Mon cher ami, la vengeance" if i % 2 == 0 else f"Voyez-vous, le sujet {i}"
        rows.append({"instruction": f"Question {i} sur le destin numéro {i * 3} ?",
                     "response": f"{opening} est une affaire de patience et de temps, leçon {i * 11}.",
                     "source_id": f"c{i}"})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_answer_opening_normalises():
    assert answer_opening("« Mon cher  ami », dit-il.", 3) == "mon cher ami"


def test_counts_openings_and_histogram(tmp_path):
    prepare([collapsed_pairs(tmp_path / "p.jsonl")], tmp_path / "ds", PrepareConfig(split="60/20/20"))
    stats = dataset_stats(tmp_path / "ds", plot_path=tmp_path / "ds" / "lengths.png")
    assert stats.rows == {"train": 12, "valid": 4, "test": 4} and stats.unit == "words"
    assert stats.openings[0] == ("mon cher ami la", 10) and stats.answers == 20
    assert (tmp_path / "ds" / "lengths.png").read_bytes()[:8] == PNG_MAGIC
    assert "50.0%  mon cher ami la" in stats.summary()


def test_label_balance_and_token_lengths(tmp_path, tiny_model_dir):
    prepare([FIXTURES / "email_routing.jsonl"], tmp_path / "ds", PrepareConfig(split="60/20/20", system_prompt=False))
    tokenizer, _ = load_tokenizer(str(tiny_model_dir))
    stats = dataset_stats(tmp_path / "ds", tokenizer)
    assert stats.unit == "tokens" and len(stats.lengths["train"]) == 32
    assert sum(stats.labels["valid"].values()) == 11 and set(stats.labels["test"]) == {
        "RH", "Support", "Commercial", "Finance", "SPAM"}
    assert "label balance:" in stats.summary() and "SPAM" in stats.summary()
    assert not stats.openings and "template collapse" not in stats.summary()  # labels repeat by design


def test_stats_cli(tmp_path):
    prepare([collapsed_pairs(tmp_path / "p.jsonl")], tmp_path / "ds", PrepareConfig())
    result = CliRunner().invoke(main, ["stats", str(tmp_path / "ds"), "--tokenizer", "none", "--top", "2"])
    assert result.exit_code == 0, result.output
    assert "lengths in words (skipped" in result.output and "top answer openings" in result.output
    assert (tmp_path / "ds" / "lengths.png").is_file()


def test_rows_stats_cannot_read_are_counted_and_named(tmp_path):
    """validate calls these rows errors; stats must not quietly describe the rest as if it were everything."""
    prepare([collapsed_pairs(tmp_path / "p.jsonl")], tmp_path / "ds", PrepareConfig(split="60/20/20"))
    valid = tmp_path / "ds" / "valid.jsonl"
    valid.write_text(valid.read_text("utf-8") + '{"messages": [{"role": "user"\n{"foo": 1}\n', encoding="utf-8")
    stats = dataset_stats(tmp_path / "ds")
    assert stats.rows == {"train": 12, "valid": 4, "test": 4}
    assert [(Path(p.path).name, p.line) for p in stats.unreadable] == [("valid.jsonl", 5), ("valid.jsonl", 6)]
    assert "2 row(s) left out of these numbers" in stats.summary() and "valid.jsonl:5" in stats.summary()
    result = CliRunner().invoke(main, ["stats", str(tmp_path / "ds"), "--tokenizer", "none"])
    assert result.exit_code == 1 and "top answer openings" in result.output  # the numbers, then the error
    assert "valid.jsonl:5" in result.output and "2 row(s)" in result.output and "dantes-mlx validate" in result.output
    assert "Traceback" not in result.output
