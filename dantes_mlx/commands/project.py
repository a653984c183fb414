"""`dantes-mlx init`: write a commented dantes.yaml generated from the settings' own help text."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import click

from dantes_mlx.config import DEFAULT_CONFIG_FILE, SECTIONS, CharacterConfig, build, field_help, is_ebook_id
from dantes_mlx.errors import ConfigError
from dantes_mlx.outputs import check_output
from dantes_mlx.store import write_text_atomic

# Settings written as live YAML (None: the whole section); the rest are shown commented out at their default,
# so a later release's better defaults still reach projects that never changed them.
LIVE = {"project": None, "character": None, "llm": {"model", "url", "server_model"}, "train": {"base_model"}}
PERSONAS = {
    "fr": "Tu es {name}. Tu réponds à la première personne, avec la voix, le vocabulaire et les convictions "
          "que le livre te donne.",
    "en": "You are {name}. Answer in the first person, with the voice, vocabulary and convictions the book "
          "gives you.",
}


def yaml_lines(key: str, value) -> list[str]:
    """`key: value` as YAML lines (lists in flow style, long strings on one line)."""
    import yaml

    # Flow style only for a collection value: a scalar in flow style would print as "{key: value}".
    flow = None if isinstance(value, (list, dict)) else False
    text = yaml.safe_dump({key: value}, allow_unicode=True, default_flow_style=flow, sort_keys=False,
                          width=10**9)
    return text.rstrip("\n").split("\n")


def render_project_yaml(values: dict[str, dict]) -> str:
    """A commented dantes.yaml: every section and setting with its help; `values` override the defaults."""
    from dantes_mlx import __version__

    out = [f"# dantes-mlx project file, written by `dantes-mlx init` (dantes-mlx {__version__}).",
           "# Settings merge in this order: built-in defaults < this file < command-line flags.",
           "# Commented-out settings show their default: uncomment a line to change it."]
    for name, cls in SECTIONS.items():
        chosen = values.get(name, {})
        build(cls, chosen)  # rejects unknown keys before anything is written
        out += ["", f"# {cls.__doc__.strip()}", f"{name}:"]
        for key, default, help_text in field_help(cls):
            live = key in chosen or LIVE.get(name, ()) is None or key in LIVE.get(name, ())
            out += ["  # " + line for line in textwrap.wrap(help_text, 96)]
            out += [("  " if live else "  # ") + line for line in yaml_lines(key, chosen.get(key, default))]
    return "\n".join(out) + "\n"


def project_values(character=None, aliases=(), books=(), language=None, persona=None,
                   generator_model=None, base_model=None, data_dir=None) -> dict[str, dict]:
    """The settings `init` writes, by section, from its options (None / empty: keep the default)."""
    for book in books:
        if not is_ebook_id(book):
            raise ConfigError(f"'{book}' is not a Project Gutenberg ebook id",
                              fix="use the number in the ebook's address, e.g. --book 17989")
    if language is not None and not re.fullmatch(r"[a-z]{2,3}", language):
        raise ConfigError(f"'{language}' is not an ISO 639-1 language code", fix="use e.g. --language fr")
    values: dict[str, dict] = {"project": {}, "character": {}, "llm": {}, "train": {}}
    if character:
        lang = language or CharacterConfig().language
        values["character"].update(name=character, aliases=list(aliases),
                                   persona=persona or PERSONAS.get(lang, PERSONAS["en"]).format(name=character))
        values["project"]["books"] = list(books)
    elif aliases:
        values["character"]["aliases"] = list(aliases)
    if books:
        values["project"]["books"] = list(books)
    optional = {("character", "language"): language, ("character", "persona"): persona,
                ("llm", "model"): generator_model, ("train", "base_model"): base_model,
                ("project", "data_dir"): data_dir}
    for (sec, key), value in optional.items():
        if value is not None:
            values[sec][key] = value
    return {sec: vals for sec, vals in values.items() if vals}


def write_project_file(path: Path, values: dict[str, dict], force: bool = False) -> None:
    """Write the commented project file; refuses to replace an existing one unless `force`."""
    check_output(path, example=DEFAULT_CONFIG_FILE)
    if path.exists() and not force:
        raise ConfigError("already exists", path=path, fix="pass --force to overwrite it, or -o OTHER.yaml")
    write_text_atomic(path, render_project_yaml(values))


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
