"""The rule method of extract: the French dialogue attributor's quotes of the character, as the LLM's rows."""

from __future__ import annotations

import bisect
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from dantes_mlx.errors import InputError
from dantes_mlx.extract.chunks import Book, Chunk, book_chapters, chunk_book
from dantes_mlx.extract.grounding import narration_end
from dantes_mlx.extract.output import ExtractSummary, check_paths, finish
from dantes_mlx.extract.rows import Source, context_before, make_row
from dantes_mlx.fr import dialogue
from dantes_mlx.fr.narrator import narrator_hint, quote_kind
from dantes_mlx.outputs import check_output, output_lock
from dantes_mlx.store import write_jsonl_atomic

if TYPE_CHECKING:
    from dantes_mlx.config import CharacterConfig, ExtractConfig

RULES_VERSION = "rules-v1"


def extract_rules(books: list[Book], character: "CharacterConfig", cfg: "ExtractConfig", out: str | Path,
                  progress: bool = True) -> ExtractSummary:
    """Rule extraction: the French dialogue attributor's quotes of the character, same rows as the LLM's."""
    out = check_paths(out, books)
    with output_lock(out):
        return _extract_rules(books, character, cfg, out, progress)


def _extract_rules(books: list[Book], character: "CharacterConfig", cfg: "ExtractConfig", out: Path,
                   progress: bool) -> ExtractSummary:
    started = time.monotonic()
    if character.language != "fr":
        print(f"warning: the dialogue rules are written for French; language is '{character.language}'",
              file=sys.stderr)
    summary = ExtractSummary("rules", str(out), str(out), character.name)
    rows = []
    for book in tqdm(books, desc="extract (rules)", unit="book", disable=not progress, file=sys.stderr):
        chunks = chunk_book(book, cfg.chunk_lines, cfg.overlap)
        summary.chunks += len(chunks)
        rows += rule_rows(book, character, chunks, dialogue.find_quotations(book.text))
    finish(summary, rows, [], out, started)
    return summary


def rule_rows(book: Book, character: "CharacterConfig", chunks: list[Chunk], quotes) -> list[dict]:
    """The rows of the quotations the rules give the character (each in the chunk where it starts)."""
    source = Source("rules", "", RULES_VERSION, character.name)
    mine = dialogue.character_quotes(book.text, character.name, list(character.aliases), character.narrator, quotes)
    warn_narrator(book, character, quotes, bool(mine))
    starts, rows = [c.start for c in chunks], []
    for quote in mine:
        start, end = quote.start, quote.end
        chunk = chunks[max(0, bisect.bisect_right(starts, start) - 1)]
        spoken = (list(quote.segments), narration_end(quote.segments, quote.incises, end))
        rows.append(make_row(book, chunk, start, end, source, quote_kind(book.text, quote), 100.0, "rules",
                             context_before(book.text, start), spoken=spoken))
    return rows


def warn_narrator(book: Book, character: "CharacterConfig", quotes=None, speaks: bool | None = None) -> None:
    """Suggest --narrator on stderr when the book is told in the first person and the rules never hear
    the character speak (see fr/narrator.narrator_hint)."""
    if character.narrator:
        return
    quotes = dialogue.find_quotations(book.text) if quotes is None else quotes
    if speaks is None:
        speaks = bool(dialogue.character_quotes(book.text, character.name, list(character.aliases), quotes=quotes))
    hint = narrator_hint(book.text, quotes, character.name, speaks)
    if hint:
        print(f"warning: {book.path or book.id}: {hint}", file=sys.stderr)


def all_speakers(path: str | Path, out: str | Path) -> int:
    """Every direct-speech quotation of a plain UTF-8 file with its speaker (or null); offsets as read."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path=path, fix="pass an existing UTF-8 text with --input")
    out = check_output(out, inputs=[path], example="quotes.jsonl")
    try:
        with open(path, encoding="utf-8", newline="") as fh:  # newline="": offsets count \r as read
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 (byte {exc.start})", path=path,
                         fix="convert it: iconv -f latin1 -t utf-8 FILE > FILE.utf8") from exc
    book = Book(path.stem, text, book_chapters(path, text), str(path))
    rows = ({**row, "chapter": book.chapter_at(row["start"])} for row in dialogue.all_speakers_rows(text))
    return write_jsonl_atomic(out, rows)
