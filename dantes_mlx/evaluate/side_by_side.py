"""Several finished eval reports side by side (base, then each report's fine-tuned model, e.g. SFT and DPO)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from dantes_mlx.errors import InputError
from dantes_mlx.evaluate.report import JUDGE_ROWS, METRIC_ROWS, _get, fmt_value
from dantes_mlx.store import write_text_atomic


def read_results(report_dir: Path) -> dict:
    """results.json of an eval report folder, or an error saying how to make it."""
    path = Path(report_dir) / "results.json"
    if not path.is_file():
        raise InputError("no results.json: not an eval report folder", path=report_dir,
                         fix="run `dantes-mlx eval --adapter-path ADAPTERS -o DIR` first, then give DIR")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg})", path=path, line=exc.lineno,
                         fix="run that evaluation again") from exc


def check_comparable(results: list[dict], dirs: list[Path]) -> None:
    """Same base model, test set and sampling in every report, else the comparison would mislead."""
    first = results[0]
    for result, folder in zip(results[1:], dirs[1:]):
        for key in ("base_model", "data_dir"):
            if result.get(key) != first.get(key):
                raise InputError(f"{key} {result.get(key)!r} differs from {first.get(key)!r} in {dirs[0]}",
                                 path=folder, fix="compare reports made on the same base model and test set")
        for key in ("max_tokens", "temperature", "seed", "samples"):
            if result["settings"].get(key) != first["settings"].get(key):
                raise InputError(f"eval.{key} differs from {dirs[0]}", path=folder,
                                 fix="evaluate every adapter with the same eval settings")


def load(report_dirs: list[str | Path]) -> tuple[list[Path], list[dict]]:
    """The report folders and their results.json, checked to be comparable (each file read once)."""
    dirs = [Path(d) for d in report_dirs]
    results = [read_results(d) for d in dirs]
    check_comparable(results, dirs)
    return dirs, results


def side_by_side(report_dirs: list[str | Path]) -> str:
    """A Markdown table: each metric for the base (from the first report) and for each report's adapter."""
    return table(*load(report_dirs))


def table(dirs: list[Path], results: list[dict]) -> str:
    names = model_names(results, dirs)
    columns = [results[0]["metrics"].get("base", {})] + [r["metrics"].get("tuned", {}) for r in results]
    lines = ["| metric | base | " + " | ".join(names) + " |", "| --- " * (len(names) + 2) + "|"]
    for label, path, spec, _ in METRIC_ROWS + JUDGE_ROWS:
        values = [_get(column, path) for column in columns]
        if any(v is not None for v in values):
            lines.append(f"| {label} | " + " | ".join(fmt_value(v, spec) for v in values) + " |")
    return "\n".join(lines)


def model_names(results: list[dict], dirs: list[Path]) -> list[str]:
    return [Path(r.get("adapter_path") or r.get("gguf") or str(d)).name for r, d in zip(results, dirs)]


def transcripts(dirs: list[Path], results: list[dict]) -> str:
    """The out-of-character answers and the scenes, base then each report's model, question by question."""
    names = ["base"] + model_names(results, dirs)
    sides = [results[0]["sides"]["base"]] + [r["sides"]["tuned"] for r in results]
    out = []
    for task in results[0]["tasks"]:
        if task["kind"] == "ooc":
            out += [f"### {_cell(task['question'])}", ""]
            out += [f"- **{name}**: {_cell(side['answers'].get(task['id'], ''))}" for name, side in zip(names, sides)]
            out.append("")
        elif task["kind"] == "scene":
            out += [f"### {task['id']}", ""]
            for turn, question in enumerate(task["turns"]):
                out += [f"**turn {turn + 1}: {_cell(question)}**", ""]
                for name, side in zip(names, sides):
                    replies = side.get("turns", {}).get(task["id"], [])
                    out.append(f"- **{name}**: {_cell(replies[turn] if turn < len(replies) else '')}")
                out.append("")
    return "\n".join(out)


def _cell(text: str) -> str:
    return html.escape(" ".join(str(text).split()), quote=False)


def write_side_by_side(report_dirs: list[str | Path], out_dir: str | Path) -> tuple[str, Path]:
    """(the metrics table, side-by-side.md in out_dir: the table, then every model's out-of-character answers and
    scenes)."""
    dirs, results = load(report_dirs)
    metrics = table(dirs, results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(["# Side by side", "", "Reports: " + ", ".join(f"`{d}`" for d in dirs), "", metrics, "",
                      "## Out-of-character questions and scenes", "", transcripts(dirs, results)])
    path = out / "side-by-side.md"
    write_text_atomic(path, text + "\n")
    return metrics, path
