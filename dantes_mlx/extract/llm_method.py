"""The LLM method of extract: one stored reply per chunk (resumable), then citations rebuilt from the store."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from dantes_mlx.errors import ConfigError
from dantes_mlx.extract import checks
from dantes_mlx.extract.chunks import Book, Chunk, chunk_book, chunk_budget, estimate_tokens, token_counter
from dantes_mlx.extract.focus import focus_text, prefilter_keeps
from dantes_mlx.extract.output import ExtractInterrupted, ExtractSummary, check_paths, finish, side_paths
from dantes_mlx.extract.prompt import CITATION_SCHEMA, CitationPrompt, citation_prompt
from dantes_mlx.extract.rows import Source, ground_reply
from dantes_mlx.extract.rules_method import warn_narrator
from dantes_mlx.llm.base import call_sampling
from dantes_mlx.llm.batch import FailureLimit, iter_results, reply_record
from dantes_mlx.outputs import output_lock
from dantes_mlx.store import Store, item_key

if TYPE_CHECKING:
    from dantes_mlx.config import CharacterConfig, ExtractConfig, LLMConfig
    from dantes_mlx.llm.base import LLMClient


def chunks_to_send(book: Book, character: "CharacterConfig", cfg: "ExtractConfig", max_tokens: int = 0,
                   count=None) -> list[tuple[Chunk, bool]]:
    """(chunk, whether the LLM reads it) for a book: chunks of at most `max_tokens` (by `count`) when > 0,
    the pre-filter, then focus windows inside kept chunks."""
    name, aliases = character.name, list(character.aliases)
    out = []
    for chunk in chunk_book(book, cfg.chunk_lines, cfg.overlap, max_tokens, count or estimate_tokens):
        keep = not cfg.prefilter or prefilter_keeps(chunk.text, name, aliases, character.narrator)
        if keep and cfg.prefilter and cfg.focus_window > 0:
            chunk = replace(chunk, focus=focus_text(chunk.text, name, aliases, cfg.focus_window, character.narrator))
        out.append((chunk, keep))
    return out


def chunk_key(prompt: CitationPrompt, model_id: str, chunk: Chunk, character: "CharacterConfig", sampling: dict,
              schema: dict = CITATION_SCHEMA) -> str:
    """Store key of one chunk: prompt version, model, chunk text, names, sampling (and a non-default schema)."""
    item = {"text": chunk.prompt_text, "name": character.name, "aliases": list(character.aliases),
            "sampling": {k: sampling[k] for k in sorted(sampling)}}
    if character.narrator:  # another system message; the key of a non-narrator chunk is unchanged
        item["narrator"] = True
    if schema != CITATION_SCHEMA:
        item["schema"] = schema
    return item_key("extract", prompt.version, model_id, item)


def llm_sampling(cfg: "ExtractConfig", llm: "LLMConfig") -> dict:
    """The sampling of an extraction call; part of each chunk's store key, so `extract` and `run` share replies."""
    return {"temperature": cfg.temperature, "max_tokens": llm.max_tokens, "seed": llm.seed}


def extract_llm(books: list[Book], character: "CharacterConfig", cfg: "ExtractConfig", out: str | Path,
                client: "LLMClient", *, sampling: dict | None = None, concurrency: int = 1,
                progress: bool = True, schema: dict = CITATION_SCHEMA, max_failures: int = 5) -> ExtractSummary:
    """LLM extraction: one stored reply per chunk, then citations rebuilt from the store in book order.

    `schema` may narrow CITATION_SCHEMA (e.g. maxLength for a small model); it is part of the store key.
    HTTP clients (those with `iter_chat`) get `concurrency` requests in flight; llama.cpp runs one at a time.
    After `max_failures` failed calls in a row the run stops early; with any failed chunk the previous output is
    kept (see ExtractSummary.failure).
    """
    out = check_paths(out, books, cfg.prompt_file)
    with output_lock(out):
        return _extract_llm(books, character, cfg, out, client, sampling, concurrency, progress, schema, max_failures)


def first_calls(work: list, limit: int) -> tuple[list, int]:
    """The work up to the `limit`-th chunk sent to the LLM (0: all), and how many chunks to send were left out."""
    sent = [i for i, (*_, key) in enumerate(work) if key is not None]
    if not limit or len(sent) <= limit:
        return work, 0
    return work[:sent[limit - 1] + 1], len(sent) - limit


def _extract_llm(books, character, cfg, out: Path, client, sampling, concurrency, progress, schema,
                 max_failures) -> ExtractSummary:
    started = time.monotonic()
    sampling = dict(sampling or {"temperature": cfg.temperature})
    prompt = citation_prompt(cfg.prompt_file, character.language)
    store_path, errors_path, _ = side_paths(out)
    store = Store(store_path, rejects_path=errors_path)
    summary = ExtractSummary("llm", str(out), str(out), character.name, store=str(store_path))
    work = []  # (book, chunk, store key or None when the pre-filter skips the chunk)
    if cfg.focus_window < 0:
        raise ConfigError(f"focus_window={cfg.focus_window}: need 0 (off) or more paragraphs",
                          path="dantes.yaml [extract]", fix="e.g. focus_window: 0")
    checks.check_chat_template(client)
    effective = call_sampling(client, sampling)
    budget = chunk_budget(client, prompt, character.name, list(character.aliases),
                          int(effective.get("max_tokens") or 0), cfg.chunk_tokens, character.narrator)
    summary.chunk_tokens = budget
    for book in books:
        warn_narrator(book, character)
        for chunk, keep in chunks_to_send(book, character, cfg, budget, token_counter(client)):
            work.append((book, chunk, chunk_key(prompt, client.model_id, chunk, character, effective, schema)
                         if keep else None))
    work, summary.limited = first_calls(work, cfg.limit)
    summary.chunks = len(work)
    summary.skipped = sum(1 for *_, key in work if key is None)
    pending = [(chunk, key) for _, chunk, key in work if key is not None and key not in store]
    summary.cached = summary.chunks - summary.skipped - len(pending)
    requests = [{"messages": prompt.messages(character.name, list(character.aliases), chunk.prompt_text,
                                             character.narrator),
                 "json_schema": schema, **sampling} for chunk, _ in pending]
    gates = {book.id: checks.book_gate(book, character, cfg) for book in books}
    watch = (checks.extraction_watch(client, {chunk.id: book for book, chunk, _ in work}, gates, character)
             if getattr(cfg, "check_replies", True) else None)
    call_and_store(client, requests, pending, store, summary, concurrency, progress, FailureLimit(max_failures),
                   watch)
    source = Source("llm", client.model_id, prompt.version, character.name)
    rows, rejects = [], []
    for book, chunk, key in work:
        value = store.get(key) if key else None
        if value is not None:
            summary.tokens.update({k: v for k, v in value.items() if k.endswith("_tokens")})
            got, bad = ground_reply(book, chunk, value["text"], source, cfg.min_grounding,
                                    value.get("finish_reason", ""), gates[book.id].names)
            got, refused = gates[book.id](got)
            rows += got
            rejects += bad + refused
    finish(summary, rows, rejects, out, started)
    return summary


def call_and_store(client, requests: list[dict], pending: list, store, summary: ExtractSummary, concurrency: int,
                   progress: bool, limit: FailureLimit, on_reply=None) -> None:
    """Send the requests, storing each reply (or its error) as it arrives; Ctrl-C keeps what is stored, and
    `limit` failures in a row end the calls early (the chunks not sent count as failed). `on_reply(chunk,
    stored value)` sees each new reply, then (None, None) at the end; it may raise (checks.py)."""
    calls = iter_results(client, requests, concurrency)
    bar = _progress(len(requests), summary.cached, progress)
    try:
        for index, result in limit.watch(calls):
            chunk, key = pending[index]
            if isinstance(result, Exception):
                summary.failed += 1
                store.reject(key, "llm_error", {"chunk": chunk.id, "error": str(result)[:2000]})
            else:
                summary.called += 1
                value = {"chunk": chunk.id, **reply_record(result)}
                store.put(key, value)
                summary.new_tokens.update({k: v for k, v in value.items() if k.endswith("_tokens")})
                if on_reply is not None:
                    on_reply(chunk, value)
            bar.update(1)
        if on_reply is not None and requests:
            on_reply(None, None)
    except KeyboardInterrupt:
        raise ExtractInterrupted(summary.cached + summary.called, summary.chunks - summary.skipped,
                                 store.path) from None
    finally:
        bar.close()
    if limit.failed:
        summary.failed = len(requests) - summary.called  # after an early stop the chunks never sent failed too
        summary.failure_note = limit.note("chunk", len(requests), summary.failed)


def _progress(total: int, cached: int, enabled: bool):
    return tqdm(total=total, desc=f"extract ({cached} cached)", unit="chunk", disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)
