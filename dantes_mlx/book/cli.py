"""`dantes-mlx fetch` and `dantes-mlx clean`: get Project Gutenberg books into data/raw/ and clean them."""

from __future__ import annotations

from pathlib import Path

import click

from dantes_mlx.book.stage import CleanSettings, FetchSettings, run_clean, run_fetch
from dantes_mlx.cli_common import project, run_stage

CONFIG_HELP = "Project file (default: dantes.yaml when present)."


@click.command()
@click.argument("ids", nargs=-1)
@click.option("--file", "files", multiple=True, type=click.Path(path_type=Path),
              help="Copy this local text file into raw/ instead of downloading (repeatable).")
@click.option("--raw-dir", type=click.Path(path_type=Path), help="Where books go (default: <data_dir>/raw).")
@click.option("--base-url", help="Project Gutenberg site or a mirror with the same layout.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds before a download gives up.")
@click.option("--force", is_flag=True, help="Download again even when the book is already in raw/.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help=CONFIG_HELP)
def fetch(ids, files, raw_dir, base_url, timeout, force, config_path):
    """Download Project Gutenberg ebooks (or copy a local file) into data/raw/.

    With no ID and no --file, fetches the books listed under `project.books` in dantes.yaml.
    """
    config, workspace = project(config_path)
    settings = FetchSettings.from_config(config, ids=ids, files=files, raw_dir=raw_dir, base_url=base_url,
                                         timeout=timeout, force=force)
    run_stage(run_fetch, settings, workspace)


@click.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output file for one input, or folder (default: <data_dir>/clean/).")
@click.option("--raw-dir", type=click.Path(path_type=Path),
              help="Books cleaned when no INPUT is given (default: <data_dir>/raw).")
@click.option("--strip-italics/--keep-italics", default=None,
              help="Remove the _underscores_ that mark italics (default: keep them).")
@click.option("--encoding", help="Input encoding, e.g. latin-1 (default: UTF-8, with a hint when it is not).")
@click.option("--max-line-chars", type=int, help="Longest input line accepted (default: 1,000,000).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help=CONFIG_HELP)
def clean(inputs, output, raw_dir, strip_italics, encoding, max_line_chars, config_path):
    """Strip licence text, unwrap lines, record chapters; print stats.

    `dantes-mlx clean` cleans every .txt of data/raw/ into data/clean/; `dantes-mlx clean INPUT... -o OUTPUT`
    cleans any files. Each output gets a `<name>.json` sidecar with chapters, source, encoding and stats.
    """
    config, workspace = project(config_path)
    settings = CleanSettings.from_config(config, inputs=inputs, output=output, raw_dir=raw_dir,
                                         keep_italics=None if strip_italics is None else not strip_italics,
                                         encoding=encoding, max_line_chars=max_line_chars)
    run_stage(run_clean, settings, workspace)
