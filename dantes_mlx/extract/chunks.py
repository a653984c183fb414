"""Books and their LLM chunks: a clean text with its chapters, cut into whole paragraphs that fit the context."""

from __future__ import annotations

import bisect
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from dantes_mlx.book.clean import text_chapters
from dantes_mlx.errors import ConfigError, InputError

if TYPE_CHECKING:
    from dantes_mlx.extract.prompt import CitationPrompt

CHARS_PER_TOKEN = 3.0   # estimate for a server that cannot count tokens: French in a 32k vocabulary is ~3.5
TEMPLATE_MARGIN = 64    # chat-template tokens around the two messages, and the count of joined paragraphs


@dataclass(frozen=True)
class Book:
    """A clean text and its chapters as (start offset, title), sorted by offset."""
    id: str
    text: str
    chapters: tuple = ()
    path: str = ""

    def chapter_at(self, offset: int) -> str | None:
        starts = [c[0] for c in self.chapters]
        i = bisect.bisect_right(starts, offset) - 1
        return self.chapters[i][1] if i >= 0 else None


@dataclass(frozen=True)
class Chunk:
    """Consecutive paragraphs of a book: id, 1-based line range, character offsets, chapter, text.

    `focus`, when set, is what the LLM reads instead of `text`: the windows around the character
    (see focus.py); citations are still grounded in the whole chunk.
    """
    id: str
    book: str
    index: int
    first_line: int
    last_line: int
    start: int
    end: int
    chapter: str | None
    text: str
    focus: str = ""

    @property
    def prompt_text(self) -> str:
        """The text sent to the LLM."""
        return self.focus or self.text


def load_book(path: str | Path, book_id: str | None = None) -> Book:
    """A UTF-8 text and, when a sidecar `<stem>.json` lists chapters with offsets, its chapters."""
    path = Path(path)
    if not path.is_file():
        raise InputError("text file not found", path=path, fix="run `dantes-mlx clean` or pass --input FILE")
    try:
        with open(path, encoding="utf-8", newline="") as fh:  # offsets count a \r as read, like --all-speakers
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 (byte {exc.start})", path=path,
                         fix="convert it: iconv -f latin1 -t utf-8 FILE > FILE.utf8") from exc
    return Book(book_id or path.stem, text, book_chapters(path, text), str(path))


def book_chapters(path: Path, text: str) -> tuple:
    """(start, title) of each chapter: from the cleaner's sidecar `<stem>.json` when there is one and its
    headings still lie at their offsets, else found in the text by clean's own rules."""
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        rows = _sidecar_chapters(sidecar)
        if all(not heading or text.startswith(heading, start) for start, _, heading in rows):
            return tuple(sorted((start, title) for start, title, _ in rows))
        print(f"warning: {sidecar}: its chapters do not match {path.name} (edited after `clean`?); "
              "chapters found in the text instead", file=sys.stderr)
    return tuple((c["start"], c["title"]) for c in text_chapters(text))


def _sidecar_chapters(sidecar: Path) -> list[tuple[int, str, str]]:
    """(start, title, heading) rows of a cleaner sidecar; one without chapters gives none."""
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg})", path=sidecar, line=exc.lineno,
                         fix="re-run `dantes-mlx clean` to rewrite it") from exc
    rows = meta.get("chapters", []) if isinstance(meta, dict) else []
    out = []
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("start", row.get("offset")), int):
            out.append((row.get("start", row.get("offset")), str(row.get("title", "")), str(row.get("heading", ""))))
    return out


def paragraph_spans(text: str) -> list[tuple[int, int, int]]:
    """(1-based line number, start, end) of every non-blank line."""
    spans, pos = [], 0
    for number, line in enumerate(text.split("\n"), 1):
        content = line.rstrip("\r")
        if content.strip():
            spans.append((number, pos, pos + len(content)))
        pos += len(line) + 1
    return spans


def estimate_tokens(text: str) -> int:
    """Tokens of `text` without a tokenizer: an upper estimate for French prose."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def token_counter(client) -> Callable[[str], int]:
    """The client's exact token count when it has one (llama.cpp), else the estimate."""
    return getattr(client, "count_tokens", None) or estimate_tokens


def chunk_budget(client, prompt: "CitationPrompt", name: str, aliases: list[str], max_tokens: int,
                 chunk_tokens: int = 0, narrator: bool = False) -> int:
    """Most tokens of book text per chunk: `chunk_tokens` when set, else what the client's context
    (its `n_ctx`) holds after the instructions (with the narrator note when asked) and `max_tokens` of
    reply; 0 (no limit) when unknown."""
    if chunk_tokens < 0:
        raise ConfigError(f"chunk_tokens={chunk_tokens}: need 0 (fit llm.n_ctx) or a positive budget",
                          path="dantes.yaml [extract]", fix="e.g. chunk_tokens: 0")
    n_ctx = int(getattr(client, "n_ctx", 0) or 0)
    count = token_counter(client)
    instructions = sum(count(m["content"]) for m in prompt.messages(name, aliases, "", narrator)) + TEMPLATE_MARGIN
    room = n_ctx - instructions - max_tokens if n_ctx else 0
    if chunk_tokens:
        if n_ctx and chunk_tokens > room:
            raise ConfigError(f"chunk_tokens={chunk_tokens} does not fit: the context holds {n_ctx} tokens, the "
                              f"instructions take about {instructions} and the reply up to {max_tokens}",
                              path="dantes.yaml [extract]",
                              fix=f"set chunk_tokens to at most {max(room, 0)}, or 0 to size chunks to the "
                                  "context, or raise llm.n_ctx")
        return chunk_tokens
    if n_ctx and room < 256:
        raise ConfigError(f"llm.n_ctx={n_ctx} leaves {room} tokens for the book text after about {instructions} "
                          f"tokens of instructions and {max_tokens} of reply", path="dantes.yaml [llm]",
                          fix="raise llm.n_ctx (e.g. 8192) or lower llm.max_tokens")
    return max(room, 0)


def chunk_book(book: Book, chunk_lines: int = 100, overlap: int = 10, max_tokens: int = 0,
               count: Callable[[str], int] = estimate_tokens) -> list[Chunk]:
    """Chunks of whole paragraphs: at most `chunk_lines` of them and, when `max_tokens` > 0, no more
    tokens (by `count`) than that; a longer paragraph is a chunk on its own.

    Consecutive chunks share `overlap` paragraphs; a chunk the budget made shorter shares a
    proportional part (at least one), so the re-read text stays about overlap/chunk_lines.
    """
    if chunk_lines < 1 or not 0 <= overlap < chunk_lines:
        raise ConfigError(f"chunk_lines={chunk_lines}, overlap={overlap}: need chunk_lines >= 1 and "
                          "0 <= overlap < chunk_lines", path="dantes.yaml [extract]",
                          fix="e.g. chunk_lines: 100, overlap: 10")
    paras = paragraph_spans(book.text)
    sizes = [count(book.text[a:b]) + 1 for _, a, b in paras] if max_tokens > 0 else []
    chunks, first = [], 0
    while first < len(paras):
        last, used = first, sizes[first] if sizes else 0
        while last + 1 < len(paras) and last + 1 - first < chunk_lines \
                and (not sizes or used + sizes[last + 1] <= max_tokens):
            last += 1
            used += sizes[last] if sizes else 0
        start, end = paras[first][1], paras[last][2]
        chunks.append(Chunk(f"{book.id}#{len(chunks):04d}", book.id, len(chunks), paras[first][0],
                            paras[last][0], start, end, book.chapter_at(start), book.text[start:end]))
        if last == len(paras) - 1:
            break
        taken = last - first + 1
        shared = min(overlap, math.ceil(overlap * taken / chunk_lines)) if overlap else 0
        first = max(first + 1, last + 1 - min(shared, taken - 1))
    return chunks
