"""The extract stage's one entry: settings from dantes.yaml and flags, then the LLM or rule method on the books."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dantes_mlx import llm
from dantes_mlx.config import CharacterConfig, ExtractConfig, LLMConfig, ProjectConfig, section
from dantes_mlx.errors import InputError
from dantes_mlx.extract.chunks import Book, load_book
from dantes_mlx.extract.hybrid_method import extract_hybrid
from dantes_mlx.extract.llm_method import extract_llm, llm_sampling
from dantes_mlx.extract.output import ExtractSummary, check_paths
from dantes_mlx.extract.rules_method import all_speakers, extract_rules
from dantes_mlx.stage import Lines, Log
from dantes_mlx.workspace import Workspace


@dataclass
class Settings:
    """What one extract run reads: the character, the extract and llm sections, and the command's own choices."""
    character: CharacterConfig
    extract: ExtractConfig
    llm: LLMConfig
    books: list | None = None      # ids of data/clean/<id>.txt to read; None or []: every clean book
    input_file: str | None = None  # any UTF-8 text instead of the clean books
    output: str | None = None      # else extract.output, else data/citations/citations.jsonl (the workspace's)
    all_speakers: bool = False     # rules only: every quotation of input_file with its speaker, to output
    progress: bool = True

    @classmethod
    def from_config(cls, config: dict, *, every_clean_book: bool = False, name: str | None = None,
                    aliases: tuple = (), narrator: bool | None = None, language: str | None = None,
                    model: str | None = None, url: str | None = None, input_file: str | None = None,
                    output: str | None = None, all_speakers: bool = False, progress: bool = True,
                    max_tokens: int | None = None, **extract_flags) -> "Settings":
        """dantes.yaml's sections < the flags; `every_clean_book` (run: it cleaned them all) instead of
        project.books. A new name without aliases does not inherit the configured character's aliases, nor its
        narrator flag."""
        person = section(CharacterConfig, config, {
            "name": name, "aliases": list(aliases) if aliases else ([] if name else None), "language": language,
            "narrator": narrator if narrator is not None else (False if name else None)})
        books = None if every_clean_book else list(section(ProjectConfig, config).books)
        return cls(person, section(ExtractConfig, config, extract_flags),
                   section(LLMConfig, config, {"model": model, "url": url, "max_tokens": max_tokens}), books,
                   input_file, output,
                   all_speakers, progress)

    def method(self) -> str:
        """hybrid, llm or rules: `auto` is hybrid when a generator model is configured, else rules."""
        if self.extract.method != "auto":
            return self.extract.method
        return "hybrid" if (self.llm.model or self.llm.url) else "rules"


def read_books(books: list | None, clean: Path, input_file: str | None = None) -> list[Book]:
    """The books to read: `input_file`, else clean/<id>.txt for each id (every clean/*.txt when none is listed)."""
    if input_file:
        return [load_book(input_file)]
    present = sorted(clean.glob("*.txt"))
    if not books and present:
        return [load_book(path, path.stem) for path in present]
    missing = [b for b in books or () if not (clean / f"{b}.txt").is_file()]
    if missing or not books:
        others = [p.stem for p in present if p.stem not in map(str, books or ())]
        fix = ("run `dantes-mlx fetch` and `dantes-mlx clean` first (`dantes-mlx run --to clean`), or pass "
               "--input FILE" if not others else
               f"{clean} holds {', '.join(others)}: list it in dantes.yaml's project.books "
               f"(books: [{others[0]}]) or pass --input {clean / (others[0] + '.txt')}")
        raise InputError(f"no clean text for book(s) {', '.join(map(str, missing)) or '(none listed)'}",
                         path=clean, fix=fix)
    return [load_book(clean / f"{b}.txt", str(b)) for b in books]


def run(settings: Settings, workspace: Workspace, log: Log) -> ExtractSummary | Lines:
    """Extract the character's citations into the citations file; resumable (LLM replies are stored)."""
    out = Path(settings.output or workspace.citations)
    if settings.all_speakers:
        return Lines([f"{all_speakers(settings.input_file, out)} quotations with their speakers -> {out}"])
    method = settings.method()
    if settings.extract.method == "auto" and method == "rules":
        log("no generator model configured (llm.model / llm.url): using the rule method")
    books = read_books(settings.books, workspace.clean, settings.input_file)
    check_paths(out, books, settings.extract.prompt_file)  # before a model is loaded
    if method == "rules":
        return extract_rules(books, settings.character, settings.extract, out, progress=settings.progress)
    cfg = settings.llm
    extract = extract_hybrid if method == "hybrid" else extract_llm
    return extract(books, settings.character, settings.extract, out, llm.make_client(cfg),
                   sampling=llm_sampling(settings.extract, cfg), concurrency=cfg.concurrency,
                   progress=settings.progress, max_failures=cfg.max_consecutive_failures)
