"""`dantes-mlx demo` and `dantes-mlx run`: the whole pipeline in one command."""

from __future__ import annotations

import click

from dantes_mlx.config import load_yaml
from dantes_mlx.pipeline.init import init  # noqa: F401  (the `init` command)


@click.command()
@click.option("--workdir", default="demo-run", show_default=True, type=click.Path(file_okay=False),
              help="Folder that receives every file of the demo (and demo.json naming them).")
@click.option("--book", default=None, help="A Project Gutenberg ebook id to use instead of the built-in "
                                           "scene (needs internet), e.g. 17989.")
@click.option("--iters", default=60, show_default=True, type=click.IntRange(1), help="Training steps.")
@click.option("--quantization", default="q4_k_m", show_default=True, help="Quantization of the fused GGUF.")
def demo(workdir, book, iters, quantization):
    """Run the whole pipeline offline on a built-in scene and a tiny model."""
    from dantes_mlx.pipeline.run import demo as run_demo

    run_demo(workdir, book=book, iters=iters, quantization=quantization)


@click.command()
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="Project file (default: dantes.yaml in the current folder).")
@click.option("--from", "start", default=None, help="First stage to run (fetch, clean, extract, generate, "
                                                    "prepare, train, export, eval).")
@click.option("--to", "stop", default=None, help="Last stage to run.")
def run(config_path, start, stop):
    """Run the whole real pipeline from dantes.yaml, each stage resumable."""
    from dantes_mlx.pipeline.run import run as run_pipeline

    run_pipeline(load_yaml(config_path or "dantes.yaml"), start=start, stop=stop)
