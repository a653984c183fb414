"""The prefs stage: preference rows from the SFT splits with a fake base model (same split per question, TRL
format, resume after a kill without asking again, rows left out with their reason), and the command.

In-memory fakes, no model, no network. Run: python -m pytest tests/prefs/test_prefs.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dantes_mlx.cli import main
from dantes_mlx.config import PrefsConfig
from dantes_mlx.errors import InputError, Interrupted
from dantes_mlx.prefs.build import STORE_FILE
from dantes_mlx.prefs.stage import Settings, run
from dantes_mlx.store import read_jsonl
from dantes_mlx.train.preferences import load_preferences
from dantes_mlx.workspace import Workspace


class FakeBase:
    """Answers like a generic assistant; counts its calls; raises KeyboardInterrupt after `stop_after` answers."""
    name = "fake-base"

    def __init__(self, stop_after: int | None = None, echo: str | None = None):
        self.calls, self.stop_after, self.echo = [], stop_after, echo

    def answer(self, messages):
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise KeyboardInterrupt
        self.calls.append(messages)
        question = messages[-1]["content"]
        return self.echo if self.echo is not None and "Marseille" in question else f"Je suis un assistant. ({question})"


def write_sft(folder: Path) -> Path:
    """prepare's layout: chat rows with a system persona (train, valid, test) and one completions split."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 5), ("valid", 2), ("test", 2)):
        rows = [{"messages": [{"role": "system", "content": "Tu es Edmond Dantès."},
                              {"role": "user", "content": f"{split} question {i} ?"},
                              {"role": "assistant", "content": f"Réponse de Dantès {split} {i}."}],
                 "source_id": f"{split}{i}"} for i in range(n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                               encoding="utf-8")
    return folder


def settings(data: Path, base, **kw) -> Settings:
    return Settings(PrefsConfig(), "unused", data_dir=str(data), answerer=base, **kw)


def test_rows_keep_their_split_and_trl_format(tmp_path):
    data = write_sft(tmp_path / "dataset")
    base = FakeBase()
    summary = run(settings(data, base), Workspace.under(tmp_path), lambda m: None)
    out = data / "preferences"
    pairs = load_preferences(out)
    assert [p.prompt[-1]["content"] for p in pairs.train] == [f"train question {i} ?" for i in range(5)]
    assert [p.prompt[-1]["content"] for p in pairs.valid] == [f"valid question {i} ?" for i in range(2)]
    assert not (out / "test.jsonl").exists()  # test stays held out for eval
    first = pairs.train[0]
    assert first.prompt[0] == {"role": "system", "content": "Tu es Edmond Dantès."}
    assert first.chosen == "Réponse de Dantès train 0." and first.rejected.startswith("Je suis un assistant.")
    row = next(read_jsonl(out / "train.jsonl"))[1]
    assert set(row) == {"prompt", "chosen", "rejected"} and row["chosen"][0]["role"] == "assistant"
    assert len(base.calls) == 7 and summary.asked == 7 and summary.reused == 0
    assert "train: 5 pairs" in summary.summary()


def test_a_killed_run_resumes_without_asking_again(tmp_path):
    data = write_sft(tmp_path / "dataset")
    with pytest.raises(Interrupted, match="3 base answers stored"):
        run(settings(data, FakeBase(stop_after=3)), Workspace.under(tmp_path), lambda m: None)
    assert not (data / "preferences" / "train.jsonl").exists()  # no half-written rows
    again = FakeBase()
    summary = run(settings(data, again), Workspace.under(tmp_path), lambda m: None)
    assert len(again.calls) == 4 and (summary.asked, summary.reused) == (4, 3)
    assert [c[-1]["content"] for c in again.calls][0] == "train question 3 ?"
    third = FakeBase()
    summary = run(settings(data, third), Workspace.under(tmp_path), lambda m: None)
    assert third.calls == [] and summary.reused == 7
    store = data / "preferences" / STORE_FILE
    assert len(store.read_text(encoding="utf-8").splitlines()) == 7  # never duplicated


def test_a_base_answer_equal_to_the_chosen_one_is_left_out_with_its_reason(tmp_path):
    data = tmp_path / "dataset"
    data.mkdir()
    rows = [{"prompt": "D'où venez-vous ? Marseille ?", "completion": "De Marseille."},
            {"prompt": "Qui êtes-vous ?", "completion": "Edmond Dantès."}]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    summary = run(settings(data, FakeBase(echo="De Marseille.")), Workspace.under(tmp_path), lambda m: None)
    assert summary.files["train"][1] == 1
    assert summary.skipped == [(f"{data / 'train.jsonl'}:1", "the base answer is the in-character answer")]
    assert "1 rows left out" in summary.summary()


def test_text_rows_and_a_missing_dataset_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="no train.jsonl"):
        run(settings(tmp_path / "none", FakeBase()), Workspace.under(tmp_path), lambda m: None)
    data = tmp_path / "text"
    data.mkdir()
    (data / "train.jsonl").write_text('{"text": "Il était une fois."}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"train.jsonl:1: .*no question") as info:
        run(settings(data, FakeBase()), Workspace.under(tmp_path), lambda m: None)
    assert "prepare --format chat" in str(info.value)
    with pytest.raises(InputError, match="would replace the SFT splits"):
        run(settings(write_sft(tmp_path / "d2"), FakeBase(), output=str(tmp_path / "d2")), Workspace.under(tmp_path),
            lambda m: None)


def test_the_command_says_where_the_rows_went(tmp_path, monkeypatch):
    data = write_sft(tmp_path / "data" / "dataset")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Settings, "make_answerer", lambda self: FakeBase())
    result = CliRunner().invoke(main, ["prefs", "--max-tokens", "32"])
    assert result.exit_code == 0, result.output
    assert f"train: 5 pairs -> {Path('data/dataset/preferences/train.jsonl')}" in result.output
    assert (data / "preferences" / "valid.jsonl").is_file()
