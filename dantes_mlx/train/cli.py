"""`dantes-mlx train` and `dantes-mlx backends`: options in, one call to dantes_mlx.train.stage out."""

from __future__ import annotations

import dataclasses

import click

from dantes_mlx.cli_common import CONFIG_OPTION, run_stage
from dantes_mlx.config import TrainConfig, load_yaml
from dantes_mlx.errors import ConfigError
from dantes_mlx.train.backends import choose_auto, list_backends
from dantes_mlx.train.mlx_lm_config import mlx_lm_config_error, read_mlx_lm_config
from dantes_mlx.train.stage import Settings, run
from dantes_mlx.workspace import Workspace

_TYPES = {"int": int, "float": float, "str": str}


def _split_list(ctx, param, value):
    """Repeatable and/or comma-separated list option; None when not given (YAML or default applies)."""
    items = [item.strip() for chunk in value or () for item in chunk.split(",") if item.strip()]
    return items or None


def config_options(cls):
    """One click option per field of a stage dataclass (None = not given, so YAML/defaults apply)."""
    def decorate(func):
        for f in reversed(dataclasses.fields(cls)):
            flag, kind = "--" + f.name.replace("_", "-"), str(f.type)
            help_text = f"{f.metadata.get('help', '')} [default: {f.default if f.default is not dataclasses.MISSING else f.default_factory()}]"
            if kind == "bool":
                opt = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=help_text)
            elif kind == "list":
                opt = click.option(flag, f.name, multiple=True, callback=_split_list,
                                   help=help_text + " (repeat or comma-separate)")
            else:
                opt = click.option(flag, f.name, type=_TYPES[kind], default=None, help=help_text)
            func = opt(func)
        return func
    return decorate


@click.command()
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Dataset folder with train/valid/test.jsonl [default: <project.data_dir>/dataset; with --method "
                   "dpo or orpo, its preferences/ folder written by `dantes-mlx prefs`]; for dpo/orpo, a folder of "
                   "TRL prompt/chosen/rejected rows works too.")
@click.option("--adapter-path", type=click.Path(file_okay=False), default=None,
              help="Output folder for adapters, checkpoints, metrics and plot [default: project.adapters_dir].")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --adapter-path.")
@click.option("--restart", is_flag=True,
              help="Start again from step 0 over an interrupted run in --adapter-path (its checkpoints are deleted).")
@CONFIG_OPTION
@config_options(TrainConfig)
def train(data_dir, adapter_path, resume, restart, config_path, **overrides):
    """Fine-tune the base model on the prepared dataset (LoRA, DoRA, QLoRA or full)."""
    try:
        config = load_yaml(config_path)
    except ConfigError:
        flat = read_mlx_lm_config(config_path)  # a lora.yaml written for mlx_lm.lora: say what to write
        if flat is not None:
            raise mlx_lm_config_error(config_path, flat) from None
        raise
    settings = Settings.from_config(config, data_dir=data_dir, adapter_path=adapter_path, resume=resume,
                                    restart=restart, **overrides)
    run_stage(run, settings, Workspace.from_config(config))


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Project config [default: dantes.yaml if present] (unused; for symmetry).")
def backends(config_path):
    """List the installed training backends, whether each can run here, and which `auto` picks."""
    infos = list_backends()
    for info in infos:
        status = click.style("usable", fg="green") if info.usable else click.style("not usable", fg="red")
        device = f" [{info.device}]" if info.device else ""
        click.echo(f"{info.name:<10} {status}{device}: {info.reason}  ({info.target})")
    try:
        choice = choose_auto(infos)
        click.echo(f"auto -> {choice.backend.name}: {choice.reason}"
                   + (f"  (warning: {choice.warning})" if choice.warning else ""))
    except ConfigError:
        click.echo("auto -> none usable")
