"""`dantes-mlx extract`: a character's citations from the clean books (local LLM or French dialogue rules)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click


def _books(project, input_file: str | None) -> list:
    """The books to read: --input, else data/clean/<book>.txt for each of dantes.yaml's project.books
    (every data/clean/*.txt when it lists none, as `run` reads them)."""
    from dantes_mlx.errors import InputError
    from dantes_mlx.extract import load_book

    if input_file:
        return [load_book(input_file)]
    clean = Path(project.data_dir) / "clean"
    present = sorted(clean.glob("*.txt"))
    if not project.books and present:
        return [load_book(path, path.stem) for path in present]
    missing = [b for b in project.books if not (clean / f"{b}.txt").is_file()]
    if missing or not project.books:
        others = [p.stem for p in present if p.stem not in map(str, project.books)]
        fix = ("run `dantes-mlx fetch` and `dantes-mlx clean` first, or pass --input FILE" if not others else
               f"{clean} holds {', '.join(others)}: list it in dantes.yaml's project.books "
               f"(books: [{others[0]}]) or pass --input {clean / (others[0] + '.txt')}")
        raise InputError(f"no clean text for book(s) {', '.join(map(str, missing)) or '(none listed)'}",
                         path=clean, fix=fix)
    return [load_book(clean / f"{b}.txt", str(b)) for b in project.books]


def _print_summary(s) -> None:
    rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(s.rejected.items())) or "none"
    click.echo(f"kept {s.kept} citations ({s.method}) -> {s.output}")
    click.echo(f"rejected: {rejected}; duplicates merged: {s.merged}")
    if s.method == "hybrid":
        click.echo(f"the LLM was asked about {s.questions} replies and paragraphs the rules leave open, in "
                   f"{s.chunks} passages ({s.cached} cached, {s.called} called, {s.failed} failed); its answers "
                   f"gave the character {s.added} of them")
    if s.method == "llm":
        budget = f", at most {s.chunk_tokens} tokens of text each" if s.chunk_tokens else ""
        click.echo(f"chunks: {s.chunks} ({s.skipped} skipped by the pre-filter, {s.cached} cached, "
                   f"{s.called} called, {s.failed} failed{budget})")
    if s.method in ("llm", "hybrid"):
        t, n = s.tokens, s.new_tokens
        click.echo(f"tokens this run: prompt {n['prompt_tokens']}, evaluated {n['evaluated_tokens']}, "
                   f"generated {n['completion_tokens']} (reasoning {n['reasoning_tokens']}); all chunks: "
                   f"evaluated {t['evaluated_tokens']}, generated {t['completion_tokens']}")
    if s.method == "llm":
        if s.chunks and s.skipped == s.chunks:
            click.echo("the pre-filter found the character in no chunk: check --character/--alias "
                       "(character.name/aliases), or pass --no-prefilter")
    click.echo(f"time: {s.seconds:.1f} s")
    failure = s.failure()
    if failure is not None:  # after the summary: what was kept, what failed, how to go on
        raise failure


@click.command("extract")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Settings file (default: dantes.yaml if present).")
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
@click.option("--quiet", is_flag=True, help="No progress bar.")
def extract(config_path, input_file, character, aliases, narrator, language, method, chunk_lines, overlap,
            chunk_tokens, prompt_file, prefilter, focus_window, min_grounding, model, url, all_speakers, output, quiet):
    """Extract what a character says, thinks or writes, with provenance and grounding.

    Resumable: finished chunks are stored next to the output; run the same command again after
    an interruption. Example: dantes-mlx extract --method rules --all-speakers --input FILE -o OUT.jsonl
    """
    from dantes_mlx import extract as stage
    from dantes_mlx.config import CharacterConfig, ExtractConfig, LLMConfig, ProjectConfig, load_yaml, section

    if all_speakers:
        if method in ("llm", "hybrid") or not input_file or not output:
            raise click.UsageError("--all-speakers needs --method rules (or auto), --input FILE and -o OUT.jsonl")
        n = stage.all_speakers(input_file, output)
        click.echo(f"{n} quotations with their speakers -> {output}")
        return
    cfg = load_yaml(config_path)
    project = section(ProjectConfig, cfg)
    # A new name without --alias must not inherit the configured character's aliases.
    alias_list = list(aliases) if aliases else ([] if character else None)
    narrator = narrator if narrator is not None else (False if character else None)  # nor its narrator flag
    person = section(CharacterConfig, cfg, {"name": character, "aliases": alias_list, "language": language,
                                            "narrator": narrator})
    llm = section(LLMConfig, cfg, {"model": model, "url": url})
    ext = section(ExtractConfig, cfg, {"method": method, "chunk_lines": chunk_lines, "overlap": overlap,
                                       "chunk_tokens": chunk_tokens,
                                       "prompt_file": prompt_file, "prefilter": prefilter, "focus_window": focus_window,
                                       "min_grounding": min_grounding})
    out = Path(output or ext.output or Path(project.data_dir) / "citations" / "citations.jsonl")
    chosen = ext.method
    if chosen == "auto":
        chosen = "hybrid" if (llm.model or llm.url) else "rules"
        if chosen == "rules":
            click.echo("no generator model configured (llm.model / llm.url): using the rule method", err=True)
    books = _books(project, input_file)
    stage.check_paths(out, books, ext.prompt_file)  # before a model is loaded
    if chosen == "rules":
        _print_summary(stage.extract_rules(books, person, ext, out, progress=not quiet))
        return
    from dantes_mlx.llm.base import make_client

    client = make_client(llm)
    sampling = stage.llm_sampling(ext, llm)
    try:
        if chosen == "hybrid":
            from dantes_mlx.extract_hybrid import extract_hybrid

            summary = extract_hybrid(books, person, ext, out, client, sampling=sampling, concurrency=llm.concurrency,
                                     progress=not quiet, max_failures=llm.max_consecutive_failures)
        else:
            summary = stage.extract_llm(books, person, ext, out, client, sampling=sampling,
                                        concurrency=llm.concurrency, progress=not quiet,
                                        max_failures=llm.max_consecutive_failures)
    except stage.ExtractInterrupted as exc:
        click.echo(f"\n{exc}", err=True)
        click.echo(f"resume with: {shlex.join(['dantes-mlx', *sys.argv[1:]])}", err=True)
        sys.exit(130)
    _print_summary(summary)
