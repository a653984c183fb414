"""`dantes-mlx extract`: a character's citations from the clean books (local LLM or French dialogue rules)."""

from __future__ import annotations

import click

from dantes_mlx.cli_common import CONFIG_OPTION, FiniteRange, project, run_stage
from dantes_mlx.extract.stage import Settings, run


@click.command("extract")
@CONFIG_OPTION
@click.option("--input", "input_file", type=click.Path(dir_okay=False), default=None,
              help="Any plain UTF-8 text instead of the clean books of dantes.yaml.")
@click.option("--character", default=None, help="Character name (default: character.name).")
@click.option("--alias", "aliases", multiple=True, help="Other name of the character (repeatable).")
@click.option("--narrator/--no-narrator", default=None,
              help="The character is the first-person narrator: replies and thoughts of the narration's \"je\" "
                   "(\"répondis-je\", \"je me disais :\") are theirs (character.narrator).")
@click.option("--language", default=None, help="Language of the text (selects the built-in prompt).")
@click.option("--method", type=click.Choice(["hybrid", "llm", "rules", "auto"]), default=None,
              help="hybrid (rules, then the LLM on what they leave open), llm (the LLM reads every chunk), rules, "
                   "or auto: hybrid when a generator model is configured, else rules.")
@click.option("--chunk-lines", type=int, default=None, help="Paragraphs per LLM chunk (default 100).")
@click.option("--overlap", type=int, default=None, help="Paragraphs shared by consecutive chunks (default 10).")
@click.option("--chunk-tokens", type=int, default=None,
              help="Most tokens of text per chunk (default 0: what llm.n_ctx holds after instructions and reply).")
@click.option("--prompt-file", default=None, help="File overriding the versioned extraction prompt.")
@click.option("--prefilter/--no-prefilter", default=None, help="Skip chunks where the rules never see the character.")
@click.option("--focus-window", type=int, default=None,
              help="With the pre-filter, send only paragraphs within N of the character (default 0: whole chunks).")
@click.option("--min-grounding", type=float, default=None, help="Minimum grounding score 0-100 (default 85).")
@click.option("--model", default=None, help="Generator GGUF path or HF_REPO:FILE.gguf (llm.model).")
@click.option("--url", default=None, help="OpenAI-compatible server base URL (llm.url).")
@click.option("--all-speakers", is_flag=True,
              help="Rules only: write every direct-speech quotation of --input with its speaker or null.")
@click.option("-o", "--output", default=None, help="Output JSONL (default: <data_dir>/citations/citations.jsonl).")
@click.option("--limit", type=click.IntRange(0), default=None,
              help="At most N LLM calls (chunks, or hybrid passages), the first ones: a trial run (extract.limit).")
@click.option("--max-tokens", type=click.IntRange(1), default=None, help="Tokens the LLM may write per call "
                                                                         "(llm.max_tokens).")
@click.option("--temperature", type=FiniteRange(0, 5), default=None,
              help="Sampling temperature of the extraction calls (extract.temperature, default 0).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def extract(config_path, input_file, character, aliases, narrator, language, method, chunk_lines, overlap,
            chunk_tokens, prompt_file, prefilter, focus_window, min_grounding, model, url, all_speakers, output,
            limit, max_tokens, temperature, quiet):
    """Extract what a character says, thinks or writes, with provenance and grounding.

    Resumable: finished chunks are stored next to the output; run the same command again after
    an interruption. Example: dantes-mlx extract --method rules --all-speakers --input FILE -o OUT.jsonl
    """
    if all_speakers and (method in ("llm", "hybrid") or not input_file or not output):
        raise click.UsageError("--all-speakers needs --method rules (or auto), --input FILE and -o OUT.jsonl")
    config, workspace = project(config_path)
    settings = Settings.from_config(
        config, name=character, aliases=aliases, narrator=narrator, language=language, model=model, url=url,
        input_file=input_file, output=output, all_speakers=all_speakers, progress=not quiet, method=method,
        chunk_lines=chunk_lines, overlap=overlap, chunk_tokens=chunk_tokens, prompt_file=prompt_file,
        prefilter=prefilter, focus_window=focus_window, min_grounding=min_grounding, limit=limit,
        max_tokens=max_tokens, temperature=temperature)
    run_stage(run, settings, workspace)
