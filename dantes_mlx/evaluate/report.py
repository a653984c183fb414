"""The evaluation report: results.json, report.md and a self-contained index.html (inline CSS, base64 images)."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from dantes_mlx.evaluate.persona import breaks
from dantes_mlx.store import write_text_atomic
from dantes_mlx.train.metrics import plot_losses
from dantes_mlx.workspace import METRICS_FILE, PLOT_FILE

if TYPE_CHECKING:
    from dantes_mlx.evaluate.compare import EvalResult

SIDE_NAMES = {"base": "base", "tuned": "fine-tuned", "reference": "reference (test set)"}
PLOT_ALT = {"loss.png": "training loss", "lengths.png": "answer lengths"}
CRITERIA_NAMES = {"fidelity": "fidelity", "style": "style", "coherence": "coherence", "in_character": "in character"}

# (label, where the value is, format, which direction is better: "low", "high" or "")
METRIC_ROWS = [
    ("Test loss", ("loss",), "{:.3f}", "low"),
    ("Test perplexity", ("perplexity",), "{:.2f}", "low"),
    ("ROUGE-L F1 vs held-out answers", ("rouge_l",), "{:.3f}", "high"),
    ("Embedding similarity vs held-out answers", ("embedding_similarity",), "{:.3f}", "high"),
    ("Answer length, median words", ("length", "median"), "{:.0f}", ""),
    ("Answers in French", ("french_share",), "pct", "high"),
    ("Vouvoiement (vous, votre)", ("vous_share",), "pct", "high"),
    ("Tutoiement (tu, ton)", ("tu_share",), "pct", "low"),
    ("First-person answers (je, moi, mon)", ("first_person_share",), "pct", "high"),
    ("Words shared with the character's citations", ("citation_overlap",), "pct", "high"),
    ("Out-of-character probes answered in character", ("ooc", "in_character"), "pct", "high"),
    ("Scenes: in character at the last turn", ("scenes", "last_turn"), "pct", "high"),
    ("Scenes: in character at every turn", ("scenes", "every_turn"), "pct", "high"),
    ("Scenes: one address form (vous or tu) throughout", ("scenes", "address_consistent"), "pct", "high"),
]
# The judge's means, also kept in each side's metrics so that `eval --side-by-side` can line them up.
JUDGE_ROWS = [
    ("Judge: overall (1-7)", ("judge", "overall"), "{:.2f}", "high"),
    ("Judge: in character (1-7)", ("judge", "in_character"), "{:.2f}", "high"),
    ("Judge: in character on out-of-character probes (1-7)", ("judge", "in_character_ooc"), "{:.2f}", "high"),
    ("Judge: in character at the scenes' last turn (1-7)", ("judge", "in_character_scene"), "{:.2f}", "high"),
]

CSS = """
body{font-family:-apple-system,system-ui,'Segoe UI',Roboto,sans-serif;margin:0;background:#f6f5f1;color:#222}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:1.7em;margin:.2em 0}h2{margin-top:1.8em;border-bottom:2px solid #d8d2c2;padding-bottom:.2em}
.meta{color:#555;font-size:.92em}.meta code{background:#ece8dd;padding:1px 4px;border-radius:3px}
table{border-collapse:collapse;margin:.6em 0;background:#fff;box-shadow:0 1px 2px #0001}
th,td{border:1px solid #ddd6c6;padding:6px 10px;text-align:left;vertical-align:top}
th{background:#ece8dd}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.better{background:#e3f3e0;font-weight:600}td.worse{background:#fbe9e7}
img{max-width:100%;background:#fff;border:1px solid #ddd6c6}
.plots{display:flex;gap:16px;flex-wrap:wrap}.plots figure{margin:0;flex:1 1 480px}
.qa{width:100%;table-layout:fixed}.qa td{white-space:pre-wrap;font-size:.93em;line-height:1.4}
.question{font-weight:600;background:#faf8f2}.judge{color:#555;font-size:.85em;margin-top:.5em;
white-space:normal;border-top:1px dashed #ccc;padding-top:.3em}
.notes li{color:#555}.verdict{font-size:.85em;color:#333}
.failures{border:2px solid #b00;padding:.2em 1em;color:#700}
"""


def _get(metrics: dict, path: tuple):
    value = metrics
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def fmt_value(value, spec: str) -> str:
    if value is None:
        return "n/a"
    if spec == "pct":
        return f"{100 * value:.0f}%"
    if isinstance(value, float) and abs(value) >= 1e4:  # a base model's perplexity on unseen text
        return f"{value:.3g}"
    return spec.format(value)


def metric_table(result: "EvalResult") -> tuple[list[str], list[list[str]], list[list[str]]]:
    """(header, rows of cells, rows of cell classes) for the base / fine-tuned / reference table."""
    cols = [c for c in ("base", "tuned", "reference") if c in result.metrics]
    header = ["metric"] + [SIDE_NAMES[c] for c in cols]
    rows, classes = [], []
    for label, path, spec, better in METRIC_ROWS:
        values = [_get(result.metrics.get(c, {}), path) for c in cols]
        if all(v is None for v in values):
            continue
        rows.append([label] + [fmt_value(v, spec) for v in values])
        classes.append([""] + [_compare(c, values, cols, better) for c in cols])
    if result.judge:
        for crit in ("fidelity", "style", "coherence", "in_character", "overall"):
            values = [result.judge["rubric_summary"].get(c, {}).get(crit) if c != "reference" else None for c in cols]
            rows.append([f"Judge: {CRITERIA_NAMES.get(crit, crit)} (1-7)"] + [fmt_value(v, "{:.2f}") for v in values])
            classes.append([""] + [_compare(c, values, cols, "high") for c in cols])
        for label, path, spec, better in JUDGE_ROWS[2:]:
            values = [_get(result.metrics.get(c, {}), path) if c != "reference" else None for c in cols]
            if any(v is not None for v in values):
                rows.append([label] + [fmt_value(v, spec) for v in values])
                classes.append([""] + [_compare(c, values, cols, better) for c in cols])
        p = result.judge["pairwise_summary"]
        wins = {"base": p["base"], "tuned": p["tuned"]}
        rows.append([f"Judge: pairwise wins, both orders agreeing ({p['tie']} ties of {p['n']})"]
                    + [str(wins[c]) if c in wins else "" for c in cols])
        classes.append([""] + [_compare(c, [wins.get(x) for x in cols], cols, "high") for c in cols])
    for c_name, key, label in (("accuracy", "accuracy", "Classification accuracy"), ("macro_f1", "macro_f1",
                                                                                     "Classification macro F1")):
        if result.classification:
            values = [result.classification.get(c, {}).get(key) for c in cols]
            rows.append([label] + [fmt_value(v, "pct") for v in values])
            classes.append([""] + [_compare(c, values, cols, "high") for c in cols])
    return header, rows, classes


def _compare(col: str, values: list, cols: list, better: str) -> str:
    """'better' / 'worse' for the base and fine-tuned cells when one beats the other."""
    if col not in ("base", "tuned") or not better or "base" not in cols or "tuned" not in cols:
        return ""
    b, t = values[cols.index("base")], values[cols.index("tuned")]
    if b is None or t is None or b == t:
        return ""
    tuned_wins = (t < b) if better == "low" else (t > b)
    return "better" if tuned_wins == (col == "tuned") else "worse"


# ---------------------------------------------------------------- plots
def plot_training(result: "EvalResult", adapter_path, out_dir: Path) -> Path | None:
    """loss.png: the training run's train/valid loss re-plotted from metrics.jsonl (else its own loss.png)."""
    target = out_dir / "loss.png"
    if adapter_path and (Path(adapter_path) / METRICS_FILE).is_file() and result.train_metrics:
        return plot_losses(Path(adapter_path) / METRICS_FILE, target, title="training loss (adapter)")
    if adapter_path and (Path(adapter_path) / PLOT_FILE).is_file():
        shutil.copyfile(Path(adapter_path) / PLOT_FILE, target)
        return target
    return None


def plot_lengths(result: "EvalResult", out_dir: Path) -> Path | None:
    """lengths.png: answer lengths in words, base vs fine-tuned vs the test set's answers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {SIDE_NAMES[c]: result.metrics[c]["lengths"] for c in ("base", "tuned", "reference")
              if result.metrics.get(c, {}).get("lengths")}
    if not series:
        return None
    every = [n for s in series.values() for n in s]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    bins = min(30, max(5, len(set(every))))
    for name, lengths in series.items():
        ax.hist(lengths, bins=bins, range=(min(every), max(every) + 1), alpha=0.5, label=f"{name} ({len(lengths)})")
    ax.set_xlabel("words per answer")
    ax.set_ylabel("answers")
    ax.set_title("Answer lengths")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "lengths.png"
    tmp = path.with_name("lengths.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- HTML
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _text(text) -> str:
    """str(text) with stray control bytes (a small model's byte tokens) shown as U+FFFD: NUL makes report.md
    binary to grep and diff, and control characters are invalid in HTML."""
    return _CONTROL.sub("\ufffd", str(text))


def _e(text) -> str:
    return html.escape(_text(text), quote=True)


def _img(path: Path | None, alt: str, element_id: str) -> str:
    if path is None:
        return f"<p class='meta'>{_e(alt)}: not available</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img id='{element_id}' alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


def _table(header, rows, classes=None, table_id="", css="") -> str:
    attrs = (f" id='{table_id}'" if table_id else "") + (f" class='{css}'" if css else "")
    out = [f"<table{attrs}>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            cls = ((classes[i][j] if classes else "") + (" num" if j else "")).strip()
            cells.append(f"<td class='{cls}'>{_e(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out + ["</table>"])


def _judge_html(result: "EvalResult", role: str, task_id: str) -> str:
    verdict = result.judge.get("rubric", {}).get(role, {}).get(task_id) if result.judge else None
    if not verdict:
        return ""
    if "scores" not in verdict:
        return f"<div class='judge'>judge reply unusable: {_e(verdict.get('error', ''))}</div>"
    scores = ", ".join(f"{CRITERIA_NAMES[k]} {v}" for k, v in verdict["scores"].items())
    return f"<div class='judge'><b>judge</b>: {_e(scores)}<br>{_e(verdict['reasons'])}</div>"


def _pair_html(result: "EvalResult", task_id: str) -> str:
    pair = result.judge.get("pairwise", {}).get(task_id) if result.judge else None
    if not pair:
        return ""
    orders = (f"base first: {pair['base_first'].get('winner', 'error')}, "
              f"fine-tuned first: {pair['tuned_first'].get('winner', 'error')}")
    who = {"tuned": "fine-tuned", "base": "base", "tie": "tie"}[pair["verdict"]]
    return f"<div class='verdict'>pairwise: <b>{_e(who)}</b> ({_e(orders)})</div>"


def qa_section(result: "EvalResult", kind: str, with_reference: bool) -> str:
    tasks = [t for t in result.tasks if t["kind"] == kind]
    if not tasks:
        return ""
    header = ["base", "fine-tuned"] + (["reference (held-out answer)"] if with_reference else [])
    out = [f"<table class='qa' id='{kind}-answers'><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>"]
    for t in tasks:
        out.append(f"<tr><td class='question' colspan='{len(header)}'>{_e(t['question'])}{_pair_html(result, t['id'])}"
                   "</td></tr><tr>")
        for role in ("base", "tuned"):
            answer = result.sides[role].answers.get(t["id"], "")
            out.append(f"<td>{_e(answer)}{_judge_html(result, role, t['id'])}</td>")
        if with_reference:
            out.append(f"<td>{_e(t['reference'])}</td>")
        out.append("</tr>")
    return "\n".join(out + ["</table>"])


def scene_section(result: "EvalResult") -> str:
    """Each scene turn by turn: the question, then each model's answer (given its own earlier answers)."""
    language = result.settings.get("language", "fr")
    out = []
    for t in (t for t in result.tasks if t["kind"] == "scene"):
        out.append(f"<table class='qa' id='{_e(t['id'])}'><tr><th>{_e(t['id'])}</th><th>base</th><th>fine-tuned</th>"
                   "</tr>")
        for turn, question in enumerate(t["turns"]):
            cells = []
            for role in ("base", "tuned"):
                replies = result.sides[role].turns.get(t["id"], [])
                answer = replies[turn] if turn < len(replies) else ""
                broke = breaks(answer, language)
                flag = f"<div class='judge'>breaks character: {_e('; '.join(broke))}</div>" if broke else ""
                cells.append(f"<td>{_e(answer)}{flag}</td>")
            out.append(f"<tr><td class='question'>turn {turn + 1}: {_e(question)}</td>{''.join(cells)}</tr>")
        out.append("</table>")
    return "\n".join(out)


def classification_html(result: "EvalResult") -> str:
    parts = []
    for role, c in result.classification.items():
        parts.append(f"<h3>{_e(SIDE_NAMES[role])}: accuracy {fmt_value(c['accuracy'], 'pct')} on {c['n']} rows</h3>")
        rows = [[label, fmt_value(v["precision"], "pct"), fmt_value(v["recall"], "pct"), fmt_value(v["f1"], "pct"),
                 str(v["support"])] for label, v in c["per_class"].items()]
        parts.append(_table(["label", "precision", "recall", "F1", "support"], rows))
        matrix = [[g] + [str(c["confusion"][g][p]) for p in c["columns"]] for g in c["labels"]]
        parts.append("<p class='meta'>confusion matrix (rows: gold label, columns: predicted)</p>")
        parts.append(_table(["gold \\ predicted"] + c["columns"], matrix, css="confusion"))
    return "\n".join(parts)


def render_html(result: "EvalResult", loss_png: Path | None, lengths_png: Path | None) -> str:
    header, rows, classes = metric_table(result)
    sides = result.sides
    engines = "".join(f"<li>{_e(SIDE_NAMES[r])}: <code>{_e(s.engine)}</code>{' — ' + _e(s.loss_note) if s.loss_note else ''}"
                      "</li>" for r, s in sides.items())
    notes = "".join(f"<li>{_e(n)}</li>" for n in result.notes)
    s = result.settings
    body = [
        f"<h1>Evaluation: does the fine-tuned model speak like {_e(result.character)}?</h1>",
        f"<p class='meta'>{_e(result.created)} · data <code>{_e(result.data_dir)}</code> ({s['test_rows']} test rows, "
        f"{_e(s['format'])}) · temperature {s['temperature']} · max tokens {s['max_tokens']} · seed {s['seed']}</p>",
        f"<ul class='meta'>{engines}</ul>",
        *_failures_html(result),
        "<h2>Metrics</h2>", _table(header, rows, classes, table_id="metrics"),
        "<p class='meta'>Green: the better of base and fine-tuned. Loss and perplexity: mlx-lm's evaluation on "
        f"test.jsonl{' (answer tokens only)' if s['mask_prompt'] else ''}. Style markers over the probe and test "
        "answers.</p>",
        "<h2>Training and answer lengths</h2><div class='plots'>",
        f"<figure>{_img(loss_png, 'training loss', 'loss-plot')}</figure>",
        f"<figure>{_img(lengths_png, 'answer length histogram', 'length-plot')}</figure></div>",
    ]
    if result.judge:
        p = result.judge["pairwise_summary"]
        body += ["<h2>Judge</h2>", f"<p>Judge model <code>{_e(result.judge['model'])}</code>. Pairwise, each question "
                 f"asked twice with the answers swapped; a win counts only when both orders agree: fine-tuned "
                 f"{p['tuned']}, base {p['base']}, ties {p['tie']}. The judge picked the same position in both "
                 f"orders for {fmt_value(p['position_bias'], 'pct')} of the questions (order bias).</p>"]
    if result.classification:
        body += ["<h2>Classification</h2>", classification_html(result)]
    body += ["<h2>Probe questions (off-book)</h2>", qa_section(result, "probe", False)]
    if any(t["kind"] == "ooc" for t in result.tasks):
        body += ["<h2>Out-of-character questions</h2><p class='meta'>Does each model stay in character when asked "
                 "about things outside the book? An answer breaks character when it calls itself an AI, names the "
                 "company behind it, writes an assistant's stock phrases or layout, or leaves the book's "
                 "language.</p>", qa_section(result, "ooc", False)]
    if any(t["kind"] == "scene" for t in result.tasks):
        body += ["<h2>Scenes (several turns)</h2><p class='meta'>Each model answers turn by turn, its own earlier "
                 "answers in the context: does the persona still hold at the last turn?</p>", scene_section(result)]
    if any(t["kind"] == "test" for t in result.tasks):
        body += ["<h2>Held-out test questions (sample)</h2>", qa_section(result, "test", True)]
    body += ["<h2>Notes</h2>", f"<ul class='notes'>{notes}</ul>"]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>dantes-mlx evaluation — {_e(result.character)}</title><style>{CSS}</style></head>"
            "<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n")


# ---------------------------------------------------------------- Markdown
def _md(text) -> str:
    """Model output made inert in Markdown: HTML-escaped, one quoted paragraph."""
    lines = html.escape(_text(text), quote=False).splitlines() or [""]
    return "\n".join("> " + line for line in lines)


def _md_cell(text) -> str:
    return html.escape(_text(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _failures_html(result: "EvalResult") -> list[str]:
    """What could not be measured (e.g. the judge's server was down), at the top of the report."""
    failures = getattr(result, "failures", [])
    if not failures:
        return []
    items = "".join(f"<li>{_e(f)}</li>" for f in failures)
    return [f"<div class='failures'><p><b>Not everything could be measured:</b></p><ul>{items}</ul></div>"]


def render_markdown(result: "EvalResult", plots: tuple = ()) -> str:
    """The report in Markdown; `plots`: the PNG files written beside it, linked by name."""
    header, rows, _ = metric_table(result)
    out = [f"# Evaluation: {_md_cell(result.character)}", "",
           f"{result.created} · data `{result.data_dir}` · {result.settings['test_rows']} test rows", ""]
    out += [f"- {SIDE_NAMES[r]}: `{s.engine}`" + (f" ({s.loss_note})" if s.loss_note else "")
            for r, s in result.sides.items()]
    failures = getattr(result, "failures", [])
    if failures:
        out += ["", "**Not everything could be measured:**", ""] + [f"- {_md_cell(f)}" for f in failures]
    out += ["", "## Metrics", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    out.append("")
    for plot in (p for p in plots if p):
        out += [f"![{PLOT_ALT[plot.name]}]({plot.name})", ""]
    for kind, title in (("probe", "Probe questions"), ("ooc", "Out-of-character questions"),
                        ("test", "Held-out test questions (sample)")):
        tasks = [t for t in result.tasks if t["kind"] == kind]
        if tasks:
            out += [f"## {title}", ""]
        for t in tasks:
            out += [f"### {_md_cell(t['question'])}", ""]
            for role in ("base", "tuned"):
                out += [f"**{SIDE_NAMES[role]}**", "", _md(result.sides[role].answers.get(t["id"], "")), ""]
                verdict = result.judge.get("rubric", {}).get(role, {}).get(t["id"]) if result.judge else None
                if verdict and "scores" in verdict:
                    out += [f"*judge: {', '.join(f'{k} {v}' for k, v in verdict['scores'].items())}* — "
                            f"{_md_cell(verdict['reasons'])}", ""]
            if kind == "test":
                out += ["**reference**", "", _md(t["reference"]), ""]
    out += scene_markdown(result)
    out += ["## Notes", ""] + [f"- {_md_cell(n)}" for n in result.notes]
    return "\n".join(out) + "\n"


def scene_markdown(result: "EvalResult") -> list[str]:
    """The scenes turn by turn, in Markdown."""
    scenes = [t for t in result.tasks if t["kind"] == "scene"]
    out = ["## Scenes (several turns)", ""] if scenes else []
    for t in scenes:
        out += [f"### {t['id']}", ""]
        for turn, question in enumerate(t["turns"]):
            out += [f"**turn {turn + 1}: {_md_cell(question)}**", ""]
            for role in ("base", "tuned"):
                replies = result.sides[role].turns.get(t["id"], [])
                out += [f"*{SIDE_NAMES[role]}*", "", _md(replies[turn] if turn < len(replies) else ""), ""]
    return out


def write_report(result: "EvalResult", out_dir: str | Path, adapter_path=None) -> Path:
    """Write results.json, the plots, report.md and index.html into out_dir; returns index.html's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loss_png = plot_training(result, adapter_path, out_dir)
    if loss_png is None:
        result.notes.append("training loss curve: no metrics.jsonl or loss.png in the adapter folder")
    lengths_png = plot_lengths(result, out_dir)
    for name, made in (("loss.png", loss_png), ("lengths.png", lengths_png)):
        if made is None:  # an earlier eval in this folder (same date) must not show its plot as ours
            (out_dir / name).unlink(missing_ok=True)
    data = asdict(result)
    write_text_atomic(out_dir / "results.json", json.dumps(data, ensure_ascii=False, indent=1, default=str))
    write_text_atomic(out_dir / "report.md", render_markdown(result, (loss_png, lengths_png)))
    index = out_dir / "index.html"
    write_text_atomic(index, render_html(result, loss_png, lengths_png))
    return index


def text_summary(result: "EvalResult") -> str:
    """The metrics table as plain text for the terminal."""
    header, rows, _ = metric_table(result)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + rows]
    failed = [f"not measured: {f}" for f in getattr(result, "failures", [])]
    return "\n".join(lines + [f"note: {n}" for n in result.notes] + failed)
