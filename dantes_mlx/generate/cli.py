"""`dantes-mlx generate`: instruction/response pairs from citations, facts, labelled texts or raw LLM outputs."""

from __future__ import annotations

import click

from dantes_mlx.cli_common import CONFIG_OPTION, FiniteRange, project, run_stage
from dantes_mlx.generate.stage import Settings, run


@click.command("generate")
@click.argument("inputs", nargs=-1, type=click.Path(dir_okay=False))
@CONFIG_OPTION
@click.option("--facts", "facts_file", type=click.Path(dir_okay=False), default=None,
              help="JSON/JSONL/CSV of facts (term -> definition) to turn into conversations.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), default=None,
              help="JSON/JSONL/CSV of texts with labels to turn into prompt/completion rows (no LLM).")
@click.option("--from-raw", "raw_file", type=click.Path(dir_okay=False), default=None,
              help="Import a file of raw LLM outputs (glued JSON objects, prose...) through the tolerant parser.")
@click.option("-o", "--output", default=None, help="Output JSONL (default: <data_dir>/pairs/pairs.jsonl).")
@click.option("-k", "--pairs-per-citation", type=int, default=None, help="Pairs per citation or fact (default 3).")
@click.option("--turns", type=int, default=None,
              help="1 (default): question/answer pairs; N >= 2: conversations of 2 to N exchanges per passage of "
                   "neighbouring citations (chat rows, every answer trained).")
@click.option("--ooc-share", type=float, default=None,
              help="Share of the questions about things outside the book, answered in character (default 0).")
@click.option("--prompt-file", default=None, help="File overriding the versioned generation prompt.")
@click.option("--model", default=None,
              help="Generator GGUF path or HF_REPO:FILE.gguf; with --url, the model name sent to the server.")
@click.option("--url", default=None, help="OpenAI-compatible server base URL (llm.url).")
@click.option("--concurrency", type=int, default=None, help="Parallel requests to an HTTP server (llm.concurrency).")
@click.option("--min-answer-words", type=int, default=None, help="Shorter answers are rejected (default 25).")
@click.option("--limit", type=click.IntRange(0), default=None,
              help="Only the first N citations: a trial run (generate.limit; 0: all).")
@click.option("--answers", type=click.Choice(["llm", "citation"]), default=None,
              help="llm: the LLM writes questions and developed answers; citation: only the questions, each answer "
                   "being the character's words from the book (generate.answers).")
@click.option("--max-tokens", type=click.IntRange(1), default=None, help="Tokens the LLM may write per call "
                                                                         "(llm.max_tokens).")
@click.option("--temperature", type=FiniteRange(0, 5), default=None, help="Sampling temperature "
                                                                                 "(llm.temperature).")
@click.option("--no-llm", is_flag=True, help="With --facts: template questions answered with the fact itself.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate(inputs, config_path, facts_file, labels_file, raw_file, output, pairs_per_citation, turns, ooc_share,
             prompt_file, model, url, concurrency, min_answer_words, limit, answers, max_tokens, temperature, no_llm,
             quiet):
    """Write instruction/response pairs in the character's voice, each with its source_id.

    INPUTS: citation files; none: extract.output, else data/citations/*.jsonl, and of those only the rows of
    character.name (the files of other characters are skipped, with a warning).

    Resumable: LLM answers are stored next to the output (OUT.store.jsonl); after an interruption run
    the same command again. Rejected pairs and their reasons go to OUT.rejects.jsonl.
    """
    if sum(bool(x) for x in (inputs, facts_file, labels_file, raw_file)) > 1:
        raise click.UsageError("give citation files, --facts, --labels or --from-raw: one source per run")
    config, workspace = project(config_path)
    settings = Settings.from_config(
        config, inputs=inputs, facts_file=facts_file, labels_file=labels_file, raw_file=raw_file, output=output,
        model=model, url=url, concurrency=concurrency, no_llm=no_llm, progress=not quiet,
        pairs_per_citation=pairs_per_citation, turns=turns, ooc_share=ooc_share, prompt_file=prompt_file,
        min_answer_words=min_answer_words, limit=limit, answers=answers, max_tokens=max_tokens,
        temperature=temperature)
    run_stage(run, settings, workspace)
