"""`dantes-mlx card`: the character card (identity, psychology, style, behaviour, themes) and a persona from it."""

from __future__ import annotations

import click

from dantes_mlx.card.stage import Settings, run
from dantes_mlx.cli_common import CONFIG_OPTION, project, run_stage


@click.command("card")
@click.argument("inputs", nargs=-1, type=click.Path(dir_okay=False))
@CONFIG_OPTION
@click.option("-o", "--output", default=None, help="Card folder (default: card.output_dir, else <data_dir>/card).")
@click.option("--block-size", type=int, default=None, help="Most citations per map call (default 40).")
@click.option("--fan-in", type=int, default=None, help="Most summaries merged by one reduce call (default 6).")
@click.option("--max-traits", type=int, default=None, help="Most traits under each heading (default 5).")
@click.option("--persona-chars", type=int, default=None,
              help="Longest persona in characters (default 700; 0: no persona call).")
@click.option("--model", default=None,
              help="Generator GGUF path or HF_REPO:FILE.gguf; with --url, the model name sent to the server.")
@click.option("--url", default=None, help="OpenAI-compatible server base URL (llm.url).")
@click.option("--concurrency", type=int, default=None, help="Parallel requests to an HTTP server (llm.concurrency).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def card(inputs, config_path, output, block_size, fan_in, max_traits, persona_chars, model, url, concurrency, quiet):
    """Summarise the character's citations block by block with the generator LLM, merge the summaries, keep the
    traits their citations support, and write card.json, card.md and persona.txt.

    INPUTS: citation files; none: extract.output, else data/citations/*.jsonl, of which only the rows of
    character.name. Resumable: replies are stored in the card folder (card.store.jsonl); after an interruption
    run the same command again. prepare, chat, eval and export use the card's persona when character.persona is
    still a default (the card in card.output_dir, else data/card).
    """
    config, workspace = project(config_path)
    settings = Settings.from_config(config, inputs=inputs, output=output, model=model, url=url,
                                    concurrency=concurrency, progress=not quiet, block_size=block_size,
                                    fan_in=fan_in, max_traits=max_traits, persona_chars=persona_chars)
    run_stage(run, settings, workspace)
