"""The HTML report: escaping, self-containment, and a real render in headless Chromium whose screenshot and DOM
show the metrics table and the loss plot.

No model runs here: answers are written by the test, scored by the real metrics and a FakeLLM judge.
Chromium tests skip where no chromium is installed (CI installs Debian's `chromium`).
Run: /work/venv/bin/python -m pytest tests/evaluate/test_report_browser.py -q
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dantes_mlx.config import EvalConfig
from dantes_mlx.evaluate.compare import EvalResult, Side, Task, run_judge, score
from dantes_mlx.evaluate.judge import Judge, JudgeSettings
from dantes_mlx.evaluate.report import render_markdown, write_report
from dantes_mlx.llm.fake import fake_from_function

EVIL = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def make_result(tmp_path: Path) -> tuple[EvalResult, Path]:
    """A result as evaluate() builds it, with an adapter folder holding a real-format metrics.jsonl."""
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    rows = [{"step": s, "train_loss": 3.0 / (1 + s / 10), "lr": 1e-4} for s in range(10, 110, 10)]
    rows += [{"step": s, "val_loss": 3.2 / (1 + s / 12)} for s in (0, 50, 100)]
    (adapters / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tasks = [Task("probe", "probe-0", "Qui es-tu ?", [{"role": "user", "content": "Qui es-tu ?"}]),
             Task("test", "test-3", "D'où venez-vous ?", [{"role": "user", "content": "D'où venez-vous ?"}],
                  "Je viens du château d'If, monsieur, où j'ai appris la patience.")]
    result = EvalResult(created="2026-01-01T00:00:00", base_model="base", adapter_path=str(adapters), gguf="",
                        data_dir="data/dataset", character="Edmond Dantès",
                        settings={**EvalConfig().__dict__, "mask_prompt": True, "max_seq": 2048, "format": "chat",
                                  "test_rows": 1},
                        tasks=[t.__dict__ for t in tasks], train_metrics=rows)
    result.sides = {
        "base": Side("base", "mlx:base", loss=2.9, perplexity=18.2,
                     answers={"probe-0": "I am an AI assistant. " + EVIL, "test-3": "From the sea."}),
        "tuned": Side("tuned", "mlx:base+adapters", loss=1.4, perplexity=4.06,
                      answers={"probe-0": "Je suis Edmond Dantès, et je vous salue, monsieur.",
                               "test-3": "Je viens du château d'If, où j'ai appris à attendre."})}
    score(result, tasks, frozenset({"chatea", "patien", "monsie"}), None)
    judge = Judge(fake_from_function(lambda messages: {"winner": "B", "reason": "vouvoie <b>"}
                                     if "Réponse A" in messages[-1]["content"] else
                                     {"scores": {"fidelity": 5, "style": 6, "coherence": 4, "in_character": 7},
                                      "reasons": "Ton soutenu & " + EVIL}),
                  JudgeSettings("Edmond Dantès", "Tu es Edmond Dantès."))
    run_judge(result, tasks, judge)
    return result, adapters


def test_report_escapes_model_output_and_is_self_contained(tmp_path):
    result, adapters = make_result(tmp_path)
    index = write_report(result, tmp_path / "report", adapter_path=adapters)
    page = index.read_text(encoding="utf-8")
    assert "<script" not in page and "<img src=x" not in page and "&lt;script&gt;" in page
    # Self-contained: no external stylesheet, script or image; both plots inline as base64 PNG.
    assert not re.search(r"(src|href)=['\"](?!data:)", page)
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 2
    assert "<table id='metrics'>" in page and "<table class='qa' id='probe-answers'>" in page
    md = render_markdown(result)
    assert "<script" not in md and "&lt;script&gt;" in md and "| Test loss | 2.900 | 1.400 |" in md
    for name in ("report.md", "results.json", "loss.png", "lengths.png"):
        assert (tmp_path / "report" / name).is_file()
    # The judge's verdicts and reasons are shown next to the answers; the position-swapped pairwise
    # judge that always says "B" yields ties.
    assert "fidelity 5, style 6, coherence 4, in character 7" in page and "Ton soutenu &amp;" in page
    assert result.judge["pairwise_summary"]["tie"] == 2


def test_report_shows_stray_control_bytes_of_a_model_as_replacement_characters(tmp_path):
    """A small model's byte-fallback tokens can emit NUL or ESC: the .md must stay text (grep, diff, viewers)
    and the HTML valid; results.json keeps the exact answer."""
    result, adapters = make_result(tmp_path)
    result.sides["base"].answers["probe-0"] = "Je\x00 suis\x1b[31m là\tici\nfin"
    index = write_report(result, tmp_path / "report", adapter_path=adapters)
    for path in (index, tmp_path / "report" / "report.md"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", text), path.name
        assert "Je\ufffd suis\ufffd[31m là\tici" in text
    saved = json.loads((tmp_path / "report" / "results.json").read_text(encoding="utf-8"))
    assert saved["sides"]["base"]["answers"]["probe-0"] == "Je\x00 suis\x1b[31m là\tici\nfin"


def test_markdown_links_only_the_plots_this_run_wrote(tmp_path):
    """A GGUF eval has no adapter, hence no training curve: report.md must not link a missing (or, in a
    reused eval-<date> folder, an earlier run's) loss.png."""
    result, adapters = make_result(tmp_path)
    out = tmp_path / "report"
    write_report(result, out, adapter_path=adapters)
    assert "![training loss](loss.png)" in (out / "report.md").read_text(encoding="utf-8")
    result.train_metrics, result.adapter_path, result.gguf = [], "", "export/dantes-q4_k_m.gguf"
    write_report(result, out, adapter_path=None)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "loss.png" not in md.replace("no metrics.jsonl or loss.png", "") and not (out / "loss.png").exists()
    assert "![answer lengths](lengths.png)" in md and (out / "lengths.png").is_file()


def test_open_uses_webbrowser_with_a_file_uri(tmp_path, monkeypatch):
    """`eval --open` hands the report's file:// URI to the webbrowser module (never a shell)."""
    import webbrowser

    from click.testing import CliRunner

    from dantes_mlx.cli import main
    from dantes_mlx.evaluate import cli as evaluate
    from dantes_mlx.evaluate.stage import EvalSummary

    result, adapters = make_result(tmp_path)
    index = write_report(result, tmp_path / "report", adapter_path=adapters)
    opened = []
    monkeypatch.setattr(evaluate, "run", lambda *a, **k: EvalSummary(result, index))
    monkeypatch.setattr(webbrowser, "open", lambda uri: opened.append(uri) or True)
    run = CliRunner().invoke(main, ["eval", "--open", "--adapter-path", str(adapters)])
    assert run.exit_code == 0, run.output
    assert opened == [index.resolve().as_uri()] and "Test loss" in run.output


def chromium() -> str:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed (apt-get install chromium; CI installs it)")


def run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    return subprocess.run([chromium(), *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_chromium_renders_the_metrics_table_and_the_loss_plot(tmp_path):
    import matplotlib.image as mpimg
    import numpy as np

    result, adapters = make_result(tmp_path)
    index = write_report(result, tmp_path / "report", adapter_path=adapters)
    url = index.resolve().as_uri()

    dom = run_chromium(["--dump-dom", url], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<table id=\"metrics\">" in dom.stdout and "Test perplexity" in dom.stdout
    assert re.search(r'<img id="loss-plot" alt="training loss" src="data:image/png;base64,', dom.stdout)
    assert "<script>alert" not in dom.stdout  # the escaped answer stayed text in the parsed page

    shot = tmp_path / "shot.png"
    run = run_chromium([f"--screenshot={shot}", "--window-size=1280,2000", url], tmp_path / "profile-shot")
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1280) and pixels.std() > 0.05  # not a blank page
    rgb = (pixels * 255).astype(int)

    def count(color, tol=12):
        return int((np.abs(rgb - np.array(color)).max(axis=-1) <= tol).sum())

    # The metrics table's "better" cells (#e3f3e0) and the loss plot's train line (matplotlib's #1f77b4)
    # and validation markers (#ff7f0e) are on screen.
    assert count((0xE3, 0xF3, 0xE0), tol=3) > 2000
    assert count((0x1F, 0x77, 0xB4), tol=20) > 150
    assert count((0xFF, 0x7F, 0x0E), tol=20) > 100
