"""`dantes-mlx chat` and `dantes-mlx ask`: pick an engine from the options, then stream its replies."""

from __future__ import annotations

import sys

import click

from dantes_mlx.chat.loop import HELP, build_messages, chat_loop
from dantes_mlx.chat.session import Settings, open_session
from dantes_mlx.cli_common import FiniteRange, project


def engine_options(func):
    """Options shared by chat and ask: which model, which adapter, sampling, system prompt."""
    options = [
        click.option("--model", default=None, help="Base model (HF id or folder) [default: the adapter's base, "
                                                    "else train.base_model]."),
        click.option("--adapter-path", default=None, type=click.Path(file_okay=False),
                     help="MLX adapter folder [default: project.adapters_dir when it holds an adapter]."),
        click.option("--base-only", is_flag=True, help="Ignore any adapter: talk to the base model."),
        click.option("--gguf", default=None, type=click.Path(dir_okay=False),
                     help="Chat with this GGUF through llama.cpp instead of MLX."),
        click.option("--lora", default=None, type=click.Path(dir_okay=False),
                     help="GGUF LoRA adapter applied to --gguf."),
        click.option("--n-ctx", default=4096, show_default=True, type=click.IntRange(min=64),
                     help="Context length of the --gguf engine (older exchanges are dropped past it)."),
        click.option("--temp", default=0.7, show_default=True, type=FiniteRange(min=0),
                     help="Sampling temperature (0: greedy)."),
        click.option("--top-p", default=0.9, show_default=True, type=FiniteRange(0, 1, min_open=True),
                     help="Nucleus sampling (1: off)."),
        click.option("--max-tokens", default=256, show_default=True, type=click.IntRange(min=1),
                     help="Tokens per reply."),
        click.option("--seed", default=0, show_default=True, type=int, help="Sampling seed."),
        click.option("--system", default=None, help="System prompt [default: character.persona]."),
        click.option("--no-system", is_flag=True, help="Send no system prompt."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                     help="Project config [default: dantes.yaml if present]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _setup(base_only, adapter_path, gguf, system, no_system, config_path, **options):
    """(engine, system prompt) from the options and the project config."""
    for clash, flags in ((base_only and adapter_path, "--base-only and --adapter-path"),
                         (gguf and adapter_path, "--gguf and --adapter-path (a GGUF takes a GGUF LoRA: --lora)"),
                         (no_system and system is not None, "--system and --no-system")):
        if clash:
            raise click.UsageError(f"{flags} cannot be used together; keep one")
    config, workspace = project(config_path)
    settings = Settings.from_config(config, base_only=base_only, adapter_path=adapter_path, gguf=gguf,
                                    system=system, no_system=no_system, **options)
    engine, system = open_session(settings, workspace)
    click.secho(f"[{engine.name}]", err=True, dim=True)
    click.secho(f"[system prompt: {settings.system_note()}]", err=True, dim=True)
    return engine, system


@click.command()
@click.argument("question", required=False)
@engine_options
def ask(question, temp, top_p, max_tokens, seed, **options):
    """Ask the fine-tuned model one question; the answer streams to stdout. QUESTION `-` (or none, with
    piped input) reads it from stdin."""
    if question is None and sys.stdin.isatty():
        raise click.UsageError("Missing argument 'QUESTION' (or pipe it: echo '...' | dantes-mlx ask -)")
    if question in (None, "-"):
        question = sys.stdin.read().strip()
        if not question:
            raise click.UsageError("no question on stdin")
    engine, system = _setup(**options)
    for piece in engine.stream(build_messages(system, [], question), temp=temp, top_p=top_p,
                               max_tokens=max_tokens, seed=seed):
        click.echo(piece, nl=False)
    click.echo()


@click.command()
@engine_options
def chat(temp, top_p, max_tokens, seed, **options):
    """Chat with the fine-tuned model (/reset, /system TEXT, /exit)."""
    engine, system = _setup(**options)
    click.secho(HELP, err=True, dim=True)
    chat_loop(engine, iter(sys.stdin.readline, ""), lambda text: click.echo(text, nl=False), system=system,
              temp=temp, top_p=top_p, max_tokens=max_tokens, seed=seed)
