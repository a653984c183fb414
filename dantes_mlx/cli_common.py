"""What every command's click module shares: the --config option, and running a stage the one way."""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path

import click

from dantes_mlx.config import ProjectFile, load_yaml
from dantes_mlx.errors import Interrupted
from dantes_mlx.stage import Summary
from dantes_mlx.workspace import Workspace

CONFIG_OPTION = click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                             default=None, help="Settings file (default: dantes.yaml if present).")


def project(config_path: str | Path | None) -> tuple[ProjectFile, Workspace]:
    """The loaded settings file (every setting checked) and the folders it names."""
    config = load_yaml(config_path)
    return config, Workspace.from_config(config)


def log(message: str) -> None:
    """A stage's progress and warnings: stderr, so that stdout holds only its summary."""
    click.echo(message, err=True)


def run_stage(run, settings, workspace: Workspace) -> Summary:
    """How every command runs its stage: progress on stderr, the summary on stdout, then the stage's failure
    (exit status 1); after Ctrl-C, the command that resumes."""
    try:
        summary = run(settings, workspace, log)
    except Interrupted as exc:
        resume = shlex.join(["dantes-mlx", *sys.argv[1:]])
        raise Interrupted(exc.detail, path=exc.path, fix=exc.fix or f"resume with: {resume}") from None
    show(summary)
    return summary


def show(summary: Summary) -> None:
    """Print a summary, then raise its failure: what was kept, what failed, how to go on."""
    click.echo(summary.summary())
    failure = summary.failure()
    if failure is not None:
        raise failure


class FiniteRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (a nan passes every bound: `--temp nan` sampled garbage)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if math.isnan(number) or math.isinf(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number
