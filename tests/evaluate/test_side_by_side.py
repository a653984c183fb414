"""`eval --side-by-side`: finished reports (e.g. an SFT and a DPO adapter's) in one table; reports made on another
base, test set or sampling are refused. In-memory results.json files, no model. Run:
python -m pytest tests/evaluate/test_side_by_side.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dantes_mlx.cli import main
from dantes_mlx.errors import InputError
from dantes_mlx.evaluate.side_by_side import side_by_side

SETTINGS = {"max_tokens": 64, "temperature": 0.0, "seed": 0, "samples": 20}


def write_report(folder: Path, adapter: str, base_loss: float, tuned_loss: float, **changes) -> Path:
    folder.mkdir(parents=True)
    result = {"base_model": "/models/smol", "data_dir": "data/dataset", "adapter_path": adapter, "gguf": "",
              "settings": dict(SETTINGS), "metrics": {"base": {"loss": base_loss, "rouge_l": 0.1},
                                                      "tuned": {"loss": tuned_loss, "rouge_l": 0.2}}}
    for key, value in changes.items():
        (result["settings"] if key in SETTINGS else result)[key] = value
    (folder / "results.json").write_text(json.dumps(result), encoding="utf-8")
    return folder


def test_base_then_each_adapter_in_one_table(tmp_path):
    sft = write_report(tmp_path / "sft", "adapters-sft", 3.0, 2.0)
    dpo = write_report(tmp_path / "dpo", "adapters-dpo", 3.0, 2.5)
    table = side_by_side([sft, dpo]).splitlines()
    assert table[0] == "| metric | base | adapters-sft | adapters-dpo |"
    assert "| Test loss | 3.000 | 2.000 | 2.500 |" in table
    result = CliRunner().invoke(main, ["eval", "--side-by-side", str(sft), "--side-by-side", str(dpo)])
    assert result.exit_code == 0 and "| Test loss | 3.000 | 2.000 | 2.500 |" in result.output


@pytest.mark.parametrize("change, message", [({"base_model": "/models/other"}, "base_model"),
                                             ({"temperature": 0.7}, "eval.temperature")])
def test_reports_that_do_not_compare_are_refused(tmp_path, change, message):
    sft = write_report(tmp_path / "sft", "adapters-sft", 3.0, 2.0)
    other = write_report(tmp_path / "other", "adapters-dpo", 3.0, 2.5, **change)
    with pytest.raises(InputError, match=message):
        side_by_side([sft, other])
    with pytest.raises(InputError, match="not an eval report folder"):
        side_by_side([sft, tmp_path])
