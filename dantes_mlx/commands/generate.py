"""`dantes-mlx generate`: instruction/response pairs from citations, facts, labelled texts or raw LLM outputs."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

# Files extract and generate keep next to their outputs: never citations themselves.
SIDE_FILES = (".store.jsonl", ".errors.jsonl", ".rejects.jsonl", ".partial.jsonl")


def default_citations(data_dir: str, extract_output: str = "") -> list[Path]:
    """extract.output when set, else every <data_dir>/citations/*.jsonl written by extract, without its
    side files (generate then reads only the configured character's rows)."""
    from dantes_mlx.errors import InputError

    if extract_output:
        return [Path(extract_output)]
    folder = Path(data_dir) / "citations"
    files = sorted(p for p in folder.glob("*.jsonl") if not p.name.endswith(SIDE_FILES))
    if not files:
        raise InputError("no citations file", path=folder,
                         fix="run `dantes-mlx extract` first, or give citation files as arguments")
    return files


@click.command("generate")
@click.argument("inputs", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Settings file (default: dantes.yaml if present).")
@click.option("--facts", "facts_file", type=click.Path(dir_okay=False), default=None,
              help="JSON/JSONL/CSV of facts (term -> definition) to turn into conversations.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), default=None,
              help="JSON/JSONL/CSV of texts with labels to turn into prompt/completion rows (no LLM).")
@click.option("--from-raw", "raw_file", type=click.Path(dir_okay=False), default=None,
              help="Import a file of raw LLM outputs (glued JSON objects, prose...) through the tolerant parser.")
@click.option("-o", "--output", default=None, help="Output JSONL (default: <data_dir>/pairs/pairs.jsonl).")
@click.option("-k", "--pairs-per-citation", type=int, default=None, help="Pairs per citation or fact (default 3).")
@click.option("--prompt-file", default=None, help="File overriding the versioned generation prompt.")
@click.option("--model", default=None,
              help="Generator GGUF path or HF_REPO:FILE.gguf; with --url, the model name sent to the server.")
@click.option("--url", default=None, help="OpenAI-compatible server base URL (llm.url).")
@click.option("--concurrency", type=int, default=None, help="Parallel requests to an HTTP server (llm.concurrency).")
@click.option("--min-answer-words", type=int, default=None, help="Shorter answers are rejected (default 25).")
@click.option("--no-llm", is_flag=True, help="With --facts: template questions answered with the fact itself.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate(inputs, config_path, facts_file, labels_file, raw_file, output, pairs_per_citation, prompt_file,
             model, url, concurrency, min_answer_words, no_llm, quiet):
    """Write instruction/response pairs in the character's voice, each with its source_id.

    INPUTS: citation files; none: extract.output, else data/citations/*.jsonl, and of those only the rows of
    character.name (the files of other characters are skipped, with a warning).

    Resumable: LLM answers are stored next to the output (OUT.store.jsonl); after an interruption run
    the same command again. Rejected pairs and their reasons go to OUT.rejects.jsonl.
    """
    from dantes_mlx import generate as stage
    from dantes_mlx.config import (CharacterConfig, ExtractConfig, GenerateConfig, LLMConfig, ProjectConfig, load_yaml,
                                   section)

    if sum(bool(x) for x in (inputs, facts_file, labels_file, raw_file)) > 1:
        raise click.UsageError("give citation files, --facts, --labels or --from-raw: one source per run")
    cfg = load_yaml(config_path)
    project, character = section(ProjectConfig, cfg), section(CharacterConfig, cfg)
    gen = section(GenerateConfig, cfg, {"pairs_per_citation": pairs_per_citation, "prompt_file": prompt_file,
                                        "min_answer_words": min_answer_words})
    source = next(p for p in (facts_file and "facts", labels_file and "labels", raw_file and "raw", "pairs") if p)
    out = Path(output or (gen.output if source == "pairs" else "") or
               Path(project.data_dir) / "pairs" / f"{Path(raw_file).stem if raw_file else source}.jsonl")
    if raw_file:
        return _report(stage.import_raw(raw_file, out, gen, character))
    if labels_file:
        from dantes_mlx.generate_sources import labels_to_rows

        return _report(labels_to_rows(labels_file, out, gen))
    # Read the input and check the output before loading a model, so that a bad file fails fast.
    facts = citations = None
    sources = [facts_file] if facts_file else \
        list(inputs) or default_citations(project.data_dir, section(ExtractConfig, cfg).output)
    stage.check_paths(out, sources, gen.prompt_file)
    if facts_file:
        from dantes_mlx.generate_sources import generate_from_facts, load_facts

        facts = load_facts(facts_file)
    else:
        citations, notes = stage.select_citations(sources, character, chosen=bool(inputs))
        for note in notes:
            click.echo(f"warning: {note}", err=True)
    # --model names the GGUF for llama.cpp, or the model a server should run when a URL is set.
    model_key = "server_model" if section(LLMConfig, cfg, {"url": url}).url else "model"
    llm = section(LLMConfig, cfg, {"url": url, "concurrency": concurrency, model_key: model})
    from dantes_mlx.llm.base import make_client

    client = None if (facts_file and no_llm) else make_client(llm)
    try:
        common = dict(concurrency=llm.concurrency, progress=not quiet, inputs=sources,
                      max_failures=llm.max_consecutive_failures)
        if facts is not None:
            summary = generate_from_facts(facts, client, out, gen, character, **common)
        else:
            summary = stage.generate_pairs(citations, client, out, gen, character, **common)
    except stage.GenerateInterrupted as exc:
        click.echo(f"\n{exc}", err=True)
        click.echo(f"resume with: {shlex.join(['dantes-mlx', *sys.argv[1:]])}", err=True)
        sys.exit(130)
    _report(summary)


def _report(summary) -> None:
    for line in summary.lines():
        click.echo(line)
    failure = summary.failure()
    if failure is not None:  # after the summary: what was kept, what failed, how to go on
        raise failure
