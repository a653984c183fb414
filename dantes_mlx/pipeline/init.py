"""A new project's dantes.yaml: every section and setting, commented from the settings' own help text."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import yaml

from dantes_mlx import __version__
from dantes_mlx.config import (DEFAULT_CONFIG_FILE, PERSONAS, SECTIONS, CharacterConfig, build, field_help,
                               is_ebook_id)
from dantes_mlx.errors import ConfigError
from dantes_mlx.outputs import check_output
from dantes_mlx.store import write_text_atomic

# Settings written as live YAML (None: the whole section); the rest are shown commented out at their default,
# so a later release's better defaults still reach projects that never changed them.
LIVE = {"project": None, "character": None, "llm": {"model", "url", "server_model"}, "train": {"base_model"}}


def yaml_lines(key: str, value) -> list[str]:
    """`key: value` as YAML lines (lists in flow style, long strings on one line)."""
    # Flow style only for a collection value: a scalar in flow style would print as "{key: value}".
    flow = None if isinstance(value, (list, dict)) else False
    text = yaml.safe_dump({key: value}, allow_unicode=True, default_flow_style=flow, sort_keys=False,
                          width=10**9)
    return text.rstrip("\n").split("\n")


def render_project_yaml(values: dict[str, dict]) -> str:
    """A commented dantes.yaml: every section and setting with its help; `values` override the defaults."""
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
