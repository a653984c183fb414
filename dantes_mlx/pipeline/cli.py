"""`dantes-mlx init`, `demo` and `run`: a new project's dantes.yaml, and the whole pipeline in one command."""

from __future__ import annotations

from pathlib import Path

import click

from dantes_mlx.config import DEFAULT_CONFIG_FILE, load_yaml
from dantes_mlx.pipeline.demo import demo as run_demo
from dantes_mlx.pipeline.init import project_values, write_project_file
from dantes_mlx.pipeline.run import run as run_pipeline


@click.command()
@click.option("-o", "--output", type=click.Path(path_type=Path), default=DEFAULT_CONFIG_FILE, show_default=True,
              help="Project file to write.")
@click.option("--character", help="Name of the character the model speaks as (default: Edmond Dantès).")
@click.option("--alias", "aliases", multiple=True, help="Another name the book uses for the character (repeatable).")
@click.option("--book", "books", multiple=True, help="Project Gutenberg ebook id (repeatable).")
@click.option("--language", help="Language of the book, ISO 639-1 (default: fr).")
@click.option("--persona", help="System prompt of the persona (default: written from the character's name).")
@click.option("--generator-model", help="Generator LLM: GGUF path or HF_REPO:FILE.gguf (llm.model).")
@click.option("--base-model", help="Base model to fine-tune: HF repo id or local folder (train.base_model).")
@click.option("--data-dir", help="Pipeline working folder (default: data).")
@click.option("--force", is_flag=True, help="Overwrite an existing project file.")
def init(output, character, aliases, books, language, persona, generator_model, base_model, data_dir, force):
    """Write a commented dantes.yaml for a new project."""
    values = project_values(character, aliases, books, language, persona, generator_model, base_model, data_dir)
    write_project_file(output, values, force)
    click.echo(f"wrote {output}")
    if character and not books:
        click.echo("  no --book given: list your ebook ids under project.books, or use `dantes-mlx fetch --file`")


@click.command()
@click.option("--workdir", default="demo-run", show_default=True, type=click.Path(file_okay=False),
              help="Folder that receives every file of the demo (and demo.json naming them).")
@click.option("--book", default=None, help="A Project Gutenberg ebook id to use instead of the built-in "
                                           "scene (needs internet), e.g. 17989.")
@click.option("--iters", default=None, type=click.IntRange(1),
              help="Training steps (default: 30 on the real model, 60 with --tiny).")
@click.option("--quantization", default=None,
              help="Quantization of the fused GGUF (default: f16 on the real model, q4_k_m with --tiny).")
@click.option("--tiny", is_flag=True, help="A random tiny model and a template stand-in for the LLM instead of the "
                                           "embedded SmolLM2: seconds, no real model, the words are noise.")
def demo(workdir, book, iters, quantization, tiny):
    """Run the whole pipeline offline on a built-in scene with the embedded real model (SmolLM2-135M-Instruct):
    extraction and questions by it, LoRA on it, export, parity gate, base vs fine-tuned answers and test loss."""
    run_demo(workdir, book_id=book, iters=iters, quantization=quantization, tiny=tiny)


@click.command()
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="Project file (default: dantes.yaml in the current folder).")
@click.option("--from", "start", default=None, help="First stage to run (fetch, clean, extract, generate, card, "
                                                    "prepare, train, export, eval).")
@click.option("--to", "stop", default=None, help="Last stage to run.")
def run(config_path, start, stop):
    """Run the whole real pipeline from dantes.yaml, each stage resumable."""
    run_pipeline(load_yaml(config_path or "dantes.yaml"), start=start, stop=stop)
