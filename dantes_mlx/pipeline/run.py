"""`run`: every stage from dantes.yaml in order, each through its package's own entry, each resumable."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Callable

from dantes_mlx.book import stage as book
from dantes_mlx.card import stage as card
from dantes_mlx.config import SECTIONS, LLMConfig, section
from dantes_mlx.dataset import stage as dataset
from dantes_mlx.errors import ConfigError, Interrupted
from dantes_mlx.evaluate import stage as evaluate
from dantes_mlx.export import stage as export
from dantes_mlx.extract import stage as extract
from dantes_mlx.extract.output import side_paths
from dantes_mlx.generate import stage as generate
from dantes_mlx.generate.pairs import check_paths as check_pairs_path
from dantes_mlx.outputs import check_output
from dantes_mlx.stage import Log, Summary, stderr
from dantes_mlx.train import stage as train
from dantes_mlx.workspace import Workspace

# Each stage: its settings from a loaded dantes.yaml (no flags), and its entry, the one its command calls.
ENTRIES: dict[str, tuple[Callable, Callable]] = {
    "fetch": (book.FetchSettings.from_config, book.run_fetch),
    "clean": (book.CleanSettings.from_config, book.run_clean),
    "extract": (lambda c: extract.Settings.from_config(c, every_clean_book=True, progress=False), extract.run),
    "generate": (lambda c: generate.Settings.from_config(c, progress=False), generate.run),
    "card": (lambda c: card.Settings.from_config(c, progress=False), card.run_if_llm),  # skipped without an LLM
    "prepare": (dataset.PrepareSettings.from_config, dataset.run_prepare),
    "train": (lambda c: train.Settings.from_config(c, resume=None), train.run),  # resume on the same dataset
    "export": (export.Settings.from_config, export.run),
    "eval": (evaluate.Settings.from_config, evaluate.run),
}
STAGES = list(ENTRIES)


class PipelineInterrupted(Interrupted):
    """Ctrl-C during a stage: what the stages finished is kept; the message gives the command that goes on."""


def interrupted_by_user(exc: BaseException) -> bool:
    """Ctrl-C, as such or as the stage's own error (LLM stores, a training stopped at its checkpoint)."""
    return isinstance(exc, (KeyboardInterrupt, Interrupted)) or isinstance(exc.__context__, KeyboardInterrupt)


def stopped(stage: str, exc: BaseException, command: str) -> PipelineInterrupted:
    """The error a Ctrl-C in `stage` becomes: the stage's own note, then the command that continues."""
    note = (getattr(exc, "detail", None) or str(exc) or "Ctrl-C").removeprefix("interrupted: ")
    return PipelineInterrupted(f"interrupted during {stage}: {note}",
                               fix=f"run `{command}` to continue: stores, caches and checkpoints are reused")


def begin(name: str, log: Log) -> float:
    """The banner of a stage; its start time."""
    log(f"\n== {name} " + "=" * max(0, 60 - len(name)))
    return time.monotonic()


def finish(summary: Summary, log: Log) -> Summary:
    """Log a stage's summary; its failure stops the run, unless the stage's outputs are complete."""
    log(summary.summary())
    failure = summary.failure()
    if failure is not None and getattr(failure, "stops_run", True):
        raise failure  # the next stage must not read a partial or stale file
    return summary


def stage_range(start: str | None, stop: str | None) -> list[str]:
    """The stages from `start` to `stop` inclusive, with an error listing valid names."""
    for name in (start, stop):
        if name and name not in ENTRIES:
            raise ConfigError(f"unknown stage {name!r}", fix=f"valid stages: {', '.join(STAGES)}")
    first = STAGES.index(start) if start else 0
    last = STAGES.index(stop) if stop else len(STAGES) - 1
    if first > last:
        raise ConfigError(f"--from {start} comes after --to {stop}", fix=f"stages run in order: {', '.join(STAGES)}")
    return STAGES[first:last + 1]


def check_layout(workspace: Workspace) -> None:
    """The files `run` writes, checked before the first stage: no stage's output is another stage's input."""
    citations, pairs = workspace.citations, workspace.pairs
    check_output(citations, writes=side_paths(citations), flag="extract.output", example="citations.jsonl")
    check_pairs_path(pairs, [citations, *side_paths(citations)], flag="generate.output")
    check_output(workspace.dataset, kind="dir", inputs=[citations, pairs], flag="project.data_dir",
                 writes=workspace.split_files())


def check_run(config: dict, stages: list[str]) -> None:
    """Every setting of dantes.yaml, checked before the first stage: a typo fails now, not hours later."""
    for cls in SECTIONS.values():
        section(cls, config)
    if "export" in stages:  # a persona the Modelfile cannot hold fails now, not after training
        export.check_export_settings(config)
    llm = section(LLMConfig, config)
    if "generate" in stages and not (llm.model or llm.url):
        path = getattr(config, "path", None) or "dantes.yaml"
        raise ConfigError("no generator LLM configured for the generate stage", path=f"{path} [llm]",
                          fix="set llm.model (a GGUF path or HF_REPO:FILE.gguf) or llm.url (llama-server, Ollama), "
                              "or stop before it with `--to extract`")
    check_layout(Workspace.from_config(config))


def run(config: dict, start: str | None = None, stop: str | None = None, log: Log = stderr) -> None:
    """Every stage from dantes.yaml; each resumes where it stopped (stores, caches, checkpoints)."""
    stages = stage_range(start, stop)
    check_run(config, stages)
    workspace = Workspace.from_config(config)
    path = getattr(config, "path", None)
    command = ["dantes-mlx", "run"] + (["--config", str(path)] if path and Path(path) != Path("dantes.yaml") else [])
    for name in stages:
        began = begin(name, log)
        make_settings, run_stage = ENTRIES[name]
        try:
            finish(run_stage(make_settings(config), workspace, log), log)
        except (KeyboardInterrupt, Exception) as exc:
            if interrupted_by_user(exc):
                resume = command + ["--from", name] + (["--to", stop] if stop else [])
                raise stopped(name, exc, shlex.join(resume)) from None
            raise
        log(f"[{name}] done in {time.monotonic() - began:.1f} s")
