"""The fetch and clean stages' entries: ebooks into data/raw/ (downloaded once, or copied), then cleaned."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dantes_mlx.book.clean import CleanResult, clean_books
from dantes_mlx.book.fetch import DEFAULT_BASE_URL, Fetched, fetch_books
from dantes_mlx.config import CleanConfig, ProjectConfig, section
from dantes_mlx.outputs import output_lock
from dantes_mlx.stage import Log
from dantes_mlx.workspace import Workspace


@dataclass
class FetchSettings:
    """What fetch gets: ebook ids (none, and no file: project.books), local files to copy, the site, the folder."""
    ids: tuple = ()
    files: tuple = ()
    raw_dir: str | None = None      # else data/raw
    base_url: str = DEFAULT_BASE_URL
    timeout: float = 60.0
    force: bool = False

    @classmethod
    def from_config(cls, config: dict, *, ids: tuple = (), files: tuple = (), raw_dir: str | None = None,
                    base_url: str | None = None, timeout: float = 60.0, force: bool = False) -> "FetchSettings":
        project = section(ProjectConfig, config, {"gutenberg_url": base_url})
        if not ids and not files:
            ids = tuple(map(str, project.books))
        return cls(tuple(ids), tuple(files), raw_dir, project.gutenberg_url, timeout, force)


@dataclass
class FetchSummary:
    """The books in raw/: downloaded, cached, copied or in place."""
    books: list[Fetched] = field(default_factory=list)

    def summary(self) -> str:
        return "\n".join(f"{item.status:>10}  {item.path} ({item.path.stat().st_size:,} bytes)"
                         + (f"  <- {item.source}" if item.source else "") for item in self.books)

    def failure(self) -> None:
        return None


def run_fetch(settings: FetchSettings, workspace: Workspace, log: Log) -> FetchSummary:
    """Download ebooks by id into raw/ (kept as a cache) and copy local files there; one fetch per folder at a
    time (a second one is refused, naming the process)."""
    raw = Path(settings.raw_dir) if settings.raw_dir else workspace.raw
    raw.parent.mkdir(parents=True, exist_ok=True)  # the lock (.raw.lock) sits beside the folder
    with output_lock(raw):
        return FetchSummary(fetch_books(settings.ids, raw, files=settings.files, base_url=settings.base_url,
                                        timeout=settings.timeout, force=settings.force))


@dataclass
class CleanSettings:
    """What clean reads: the clean section, and files (none: every raw/*.txt) with an output file or folder."""
    clean: CleanConfig
    inputs: tuple = ()
    output: str | None = None       # a file for one input, else a folder (default data/clean)
    raw_dir: str | None = None      # else data/raw

    @classmethod
    def from_config(cls, config: dict, *, inputs: tuple = (), output: str | None = None, raw_dir: str | None = None,
                    **clean_flags) -> "CleanSettings":
        return cls(section(CleanConfig, config, clean_flags), tuple(inputs), output, raw_dir)


@dataclass
class CleanSummary:
    """Each book cleaned: where it went and its counts."""
    done: list[tuple[Path, Path, CleanResult]] = field(default_factory=list)

    @property
    def outputs(self) -> list[Path]:
        return [dst for _, dst, _ in self.done]

    def summary(self) -> str:
        return "\n".join(f"{src} -> {dst}\n  paragraphs {s['paragraphs']:,} (dialogue {s['dialogue_paragraphs']:,}), "
                         f"chapters {s['chapters']:,}, words {s['words']:,}, chars {s['chars']:,}"
                         for src, dst, s in ((src, dst, result.stats) for src, dst, result in self.done))

    def failure(self) -> None:
        return None


def run_clean(settings: CleanSettings, workspace: Workspace, log: Log) -> CleanSummary:
    """Clean each book into clean/ (one paragraph per line) with a `<name>.json` sidecar; warnings to the log."""
    raw = Path(settings.raw_dir) if settings.raw_dir else workspace.raw
    target = Path(settings.output) if settings.output else workspace.clean  # an output file, or the folder
    target.parent.mkdir(parents=True, exist_ok=True)  # the lock (.NAME.lock) sits beside it
    with output_lock(target):
        done = clean_books(settings.inputs, settings.output, raw, workspace.clean, settings.clean)
    for src, _, result in done:
        for warning in result.warnings:
            log(f"warning: {src}: {warning}")
    return CleanSummary(done)
