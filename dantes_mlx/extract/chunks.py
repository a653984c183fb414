"""How a book is cut into LLM chunks: whole paragraphs, at most N of them and no more tokens than fit the context."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from dantes_mlx.errors import ConfigError

if TYPE_CHECKING:
    from dantes_mlx.extract.llm_method import Book, Chunk, Prompt

CHARS_PER_TOKEN = 3.0   # estimate for a server that cannot count tokens: French in a 32k vocabulary is ~3.5
TEMPLATE_MARGIN = 64    # chat-template tokens around the two messages, and the count of joined paragraphs


def estimate_tokens(text: str) -> int:
    """Tokens of `text` without a tokenizer: an upper estimate for French prose."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def token_counter(client) -> Callable[[str], int]:
    """The client's exact token count when it has one (llama.cpp), else the estimate."""
    return getattr(client, "count_tokens", None) or estimate_tokens


def chunk_budget(client, prompt: "Prompt", name: str, aliases: list[str], max_tokens: int,
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


def chunk_book(book: "Book", chunk_lines: int = 100, overlap: int = 10, max_tokens: int = 0,
               count: Callable[[str], int] = estimate_tokens) -> list["Chunk"]:
    """Chunks of whole paragraphs: at most `chunk_lines` of them and, when `max_tokens` > 0, no more
    tokens (by `count`) than that; a longer paragraph is a chunk on its own.

    Consecutive chunks share `overlap` paragraphs; a chunk the budget made shorter shares a
    proportional part (at least one), so the re-read text stays about overlap/chunk_lines.
    """
    from dantes_mlx.extract.llm_method import Chunk, paragraph_spans

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
