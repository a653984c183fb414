"""prepare with multi-turn conversations (leak-free across their citations, ooc tags kept) and --mix (train only,
at a ratio, seeded, bad files named by line).

In-process, no network, no tokenizer: `pytest tests/dataset/test_turns_mix.py -q`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dantes_mlx.cli import main
from dantes_mlx.config import DANTES_PERSONA, PrepareConfig
from dantes_mlx.dataset.prepare import prepare
from dantes_mlx.dataset.validate import validate_dir
from dantes_mlx.errors import ConfigError, InputError

WORDS = ["la mer", "Marseille", "le château d'If", "l'abbé Faria", "Mercédès", "le trésor", "Paris", "la vengeance",
         "le pardon", "Danglars", "Fernand", "Villefort", "Haydée", "Albert", "Morrel", "Caderousse"]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def conversations(n: int = 20) -> list[dict]:
    """Conversations as `generate --turns 3` writes them; conversation c cites citations c and c+1 (a chain that
    links every one of them), plus a few tagged out-of-character rows."""
    rows = []
    for c in range(n):
        messages = []
        for t in range(2 + c % 2):
            topic = WORDS[(c * 3 + t) % len(WORDS)]
            messages += [{"role": "user", "content": f"Parlez-moi de {topic}, question {t} de la scène {c}."},
                         {"role": "assistant", "content": f"{topic.capitalize()}, mon ami, m'a appris la patience ; "
                                                          f"c'est la leçon {c * 10 + t} de ma longue captivité."}]
        cited = [f"cit-{c:03d}", f"cit-{c + 1:03d}"] if c % 5 else [f"cit-{c:03d}"]
        rows.append({"messages": messages, "source_id": cited[0], "source_ids": cited, "source": "conversation"})
    for o in range(4):
        rows.append({"messages": [{"role": "user", "content": f"Que pensez-vous de {WORDS[o]} moderne, numéro {o} ?"},
                                  {"role": "assistant", "content": f"Je n'en sais rien, mon ami, réponse {o}."}],
                     "source_id": f"ooc-{o}", "source": "ooc", "ooc": True, "topics": ["x"]})
    return rows


def test_a_conversations_citations_never_straddle_splits_and_tags_are_kept(tmp_path):
    source = write_jsonl(tmp_path / "conv.jsonl", conversations())
    report = prepare([source], tmp_path / "out", PrepareConfig(split="60/20/20"), DANTES_PERSONA)
    where: dict[str, set] = {}
    rows = {split: read_rows(tmp_path / "out" / f"{split}.jsonl") for split in ("train", "valid", "test")}
    for split, split_rows in rows.items():
        for row in split_rows:
            for cited in row.get("source_ids", [row["source_id"]]):
                where.setdefault(cited, set()).add(split)
    assert all(len(splits) == 1 for splits in where.values())
    # conversations sharing citations form chains: 0 alone, 1-5, 6-10, 11-15, 16-19; and the 4 ooc rows
    assert report.groups == 5 + 4
    everything = [r for split_rows in rows.values() for r in split_rows]
    assert sum(r.get("ooc", False) for r in everything) == 4
    multi = [r for r in everything if len(r["messages"]) > 3]
    assert multi and all([m["role"] for m in r["messages"]][1:] == ["user", "assistant"] * ((len(r["messages"]) - 1)
                                                                                             // 2) for r in multi)
    assert not validate_dir(tmp_path / "out").errors


def test_the_leak_check_follows_every_cited_source(tmp_path):
    row = {"messages": [{"role": "user", "content": "Q ?"}, {"role": "assistant", "content": "R."}]}
    write_jsonl(tmp_path / "train.jsonl", [{**row, "source_id": "a", "source_ids": ["a", "b"]}])
    write_jsonl(tmp_path / "valid.jsonl", [{"messages": [{"role": "user", "content": "Autre ?"},
                                                         {"role": "assistant", "content": "Autre."}],
                                            "source_id": "b"}])
    problems = [str(p) for p in validate_dir(tmp_path).problems]
    assert any("leak: source_id 'b' is also in" in p for p in problems)


def general_rows(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Explique la notion numéro {i} de physique."},
                          {"role": "assistant", "content": f"La notion {i} est une loi de conservation."}]}
            for i in range(n)]


def test_mix_goes_to_train_only_at_the_ratio_and_is_seeded(tmp_path):
    source = write_jsonl(tmp_path / "conv.jsonl", conversations())
    mix = write_jsonl(tmp_path / "general.jsonl", general_rows(40))
    cfg = PrepareConfig(split="60/20/20", mix=str(mix), mix_ratio=0.5)
    plain = prepare([source], tmp_path / "plain", PrepareConfig(split="60/20/20"), DANTES_PERSONA)
    report = prepare([source], tmp_path / "a", cfg, DANTES_PERSONA)
    persona = plain.counts["train"]
    train = read_rows(tmp_path / "a" / "train.jsonl")
    mixed = [r for r in train if r.get("mixed")]
    assert len(mixed) == round(0.5 * persona) and len(train) == persona + len(mixed)
    assert all(r["messages"][0]["role"] == "user" for r in mixed)  # no persona system prompt on general rows
    assert all(r["source_id"].startswith("mix:general:") for r in mixed)
    for split in ("valid", "test"):
        assert read_rows(tmp_path / "a" / f"{split}.jsonl") == read_rows(tmp_path / "plain" / f"{split}.jsonl")
    assert f"--mix: mixed {len(mixed)} general rows from {mix} into train only (ratio 0.5 of {persona}" \
        in report.summary()
    prepare([source], tmp_path / "b", cfg, DANTES_PERSONA)
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()
    prepare([source], tmp_path / "c", PrepareConfig(split="60/20/20", mix=str(mix), mix_ratio=0.5, seed=1),
            DANTES_PERSONA)
    other = [r["source_id"] for r in read_rows(tmp_path / "c" / "train.jsonl") if r.get("mixed")]
    assert other != [r["source_id"] for r in mixed]


def test_mix_with_prompt_completion_rows_and_too_few_rows(tmp_path):
    source = write_jsonl(tmp_path / "conv.jsonl", conversations())
    mix = write_jsonl(tmp_path / "alpaca.jsonl", [{"prompt": f"Question {i} ?", "completion": f"Réponse {i}."}
                                                   for i in range(3)])
    report = prepare([source], tmp_path / "out", PrepareConfig(split="60/20/20", mix=str(mix), mix_ratio=1.0),
                     DANTES_PERSONA)
    assert report.mixed["rows"] == 3 and any("the mix file holds 3: all of them were mixed" in n for n in report.notes)


@pytest.mark.parametrize("lines, line, message", [
    ([{"messages": [{"role": "user", "content": "Q ?"}, {"role": "assistant", "content": "R."}]},
      {"messages": [{"role": "user", "content": "Q2 ?"}]}], 2, "missing assistant turn"),
    ([{"instruction": "Q ?", "response": "R."}], 1, "--mix rows must be chat"),
    ([{"prompt": "Q ?", "completion": "R."}, {"texte": "?"}], 2, "row format not recognised"),
])
def test_a_bad_mix_file_names_its_line_and_the_fix(tmp_path, lines, line, message):
    source = write_jsonl(tmp_path / "conv.jsonl", conversations())
    mix = write_jsonl(tmp_path / "mix.jsonl", lines)
    with pytest.raises(InputError) as err:
        prepare([source], tmp_path / "out", PrepareConfig(mix=str(mix), mix_ratio=0.5), DANTES_PERSONA)
    assert f"{mix}:{line}" in str(err.value) and message in str(err.value) and "fix" in str(err.value)
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_mix_settings_are_checked_before_any_work(tmp_path):
    source = write_jsonl(tmp_path / "conv.jsonl", conversations())
    with pytest.raises(ConfigError, match="no mix file"):
        prepare([source], tmp_path / "out", PrepareConfig(mix_ratio=0.5), DANTES_PERSONA)
    with pytest.raises(InputError, match="mix file not found"):
        prepare([source], tmp_path / "out", PrepareConfig(mix=str(tmp_path / "nope.jsonl"), mix_ratio=0.5),
                DANTES_PERSONA)


def test_cli_prepare_mix_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = write_jsonl(tmp_path / "conv.jsonl", conversations())
    write_jsonl(tmp_path / "general.jsonl", general_rows(40))
    result = CliRunner().invoke(main, ["prepare", str(source), "-o", "out", "--tokenizer", "none", "--mix",
                                       "general.jsonl", "--mix-ratio", "0.25", "--split", "60/20/20"])
    assert result.exit_code == 0, result.output
    assert "--mix: mixed" in result.output and "general rows from general.jsonl into train only" in result.output
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text("utf-8"))
    assert report["mixed"]["ratio"] == 0.25 and report["mixed"]["rows"] == round(0.25 * report["mixed"]["persona"])
