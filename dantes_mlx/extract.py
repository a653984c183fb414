"""Citations of one character: chunk the clean text, ask the LLM (or the rules), ground, dedupe, keep provenance."""

from __future__ import annotations

import bisect
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dantes_mlx import dialogue
from dantes_mlx import extract_checks as checks
from dantes_mlx.dialogue_narrator import narrator_hint, quote_kind
from dantes_mlx.errors import ConfigError, InputError, StageFailed
from dantes_mlx.extract_checks import parse_reply  # noqa: F401  (re-exported: part of this stage's API)
from dantes_mlx.extract_chunks import chunk_book  # noqa: F401  (re-exported: part of this stage's API)
from dantes_mlx.llm.batch import FailureLimit
from dantes_mlx.outputs import check_output, failed_run, output_lock, partial_path, publish_jsonl
from dantes_mlx.grounding import (NormalizedText, dedupe, incises_in_span, join_spoken, locate, narration_end,
                                  quotes_in_span, spoken_segments)
from dantes_mlx.gutenberg import text_chapters
from dantes_mlx.prompt_files import read_prompt

if TYPE_CHECKING:
    from dantes_mlx.config import CharacterConfig, ExtractConfig, LLMConfig
    from dantes_mlx.llm.base import LLMClient

KINDS = ("parole", "pensée", "écrit")
RULES_VERSION = "rules-v1"
CITATION_SCHEMA = {
    "type": "object",
    "properties": {"citations": {"type": "array", "items": {
        "type": "object",
        "properties": {"contexte": {"type": "string"}, "citation": {"type": "string"},
                       "kind": {"type": "string", "enum": list(KINDS)}},
        "required": ["contexte", "citation", "kind"]}}},
    "required": ["citations"],
}
# Told to the LLM when the character is the first-person narrator (character.narrator).
NARRATOR_NOTE = ("{{name}} est le narrateur : le récit parle de lui à la première personne. Ses paroles et ses "
                 "pensées sont celles que la narration donne à « je » (« dis-je », « répondis-je », « je lui dis : », "
                 "« je me disais : »). Un « je » dans les paroles d'un autre personnage désigne ce personnage, "
                 "pas le narrateur.")
# Row keys in the order they are written, so reruns give byte-identical files.
ROW_KEYS = ("id", "book", "chapter", "start", "end", "segments", "chunk", "method", "model", "prompt_version", "kind",
            "grounding", "grounding_method", "character", "contexte", "citation", "model_citation", "also_in",
            "disputed_by_rules")


# -- books and chunks ------------------------------------------------------------------------------
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
    (see extract_focus); citations are still grounded in the whole chunk.
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


# -- prompt and replies ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    """A versioned extraction prompt: fixed instructions first, the chunk ({{text}}) last."""
    version: str
    template: str

    def instructions(self, name: str, aliases: list[str], narrator: bool = False) -> str:
        """The fixed part: everything before {{text}}, with the character's names filled in; for a
        first-person narrator, NARRATOR_NOTE at {{narrator}} (or after the instructions)."""
        head = self.template.split("{{text}}", 1)[0]
        if narrator and "{{narrator}}" not in self.template:
            head = head.rstrip() + "\n\n{{narrator}}"
        return self._fill(head, name, aliases, narrator).rstrip()

    def messages(self, name: str, aliases: list[str], text: str, narrator: bool = False) -> list[dict]:
        """[system: fixed instructions, user: the chunk]: llama.cpp then re-evaluates only the chunk."""
        tail = self._fill(self.template.split("{{text}}", 1)[1], name, aliases, narrator)
        data = (text + tail).rstrip() if tail.strip() else text
        return [{"role": "system", "content": self.instructions(name, aliases, narrator)},
                {"role": "user", "content": data}]

    @staticmethod
    def _fill(part: str, name: str, aliases: list[str], narrator: bool = False) -> str:
        names = ", ".join(f"« {a} »" for a in aliases) if aliases else "(aucun autre nom)"
        note = NARRATOR_NOTE.replace("{{name}}", name) if narrator else ""
        return part.replace("{{narrator}}", note).replace("{{name}}", name).replace("{{aliases}}", names)


def load_prompt(prompt_file: str | Path = "", language: str = "fr") -> Prompt:
    """The built-in prompt for `language`, or a file whose content hash becomes part of the version."""
    template, version, path = read_prompt("extract", language, prompt_file)
    if "{{text}}" not in template:
        raise InputError("the prompt has no {{text}} placeholder for the chunk", path=path,
                         fix="put {{text}} at the end of the prompt; {{name}} and {{aliases}} are optional")
    if template.split("{{text}}", 1)[1].strip():
        print(f"warning: {path}: text after {{{{text}}}} defeats llama.cpp's prefix reuse; "
              "put the chunk last", file=sys.stderr)
    return Prompt(version, template)


def normalize_kind(kind) -> str:
    """parole, pensée or écrit; anything unknown counts as speech."""
    folded = str(kind or "").strip().lower().replace("é", "e")
    return {"pensee": "pensée", "ecrit": "écrit"}.get(folded, "parole")


# -- grounding one chunk ---------------------------------------------------------------------------
@dataclass
class Source:
    """Who produced the replies: method, model and prompt version (the provenance of every row)."""
    method: str
    model: str
    prompt_version: str
    character: str


def ground_reply(book: Book, chunk: Chunk, reply: str, source: Source, min_grounding: float,
                 finish_reason: str = "", names: set | None = None) -> tuple[list[dict], list[dict]]:
    """Rows grounded in the chunk's span and rejects (with reason and score) for one stored reply.

    A reply cut by max_tokens is rejected as `truncated` (its complete citations are still kept). A citation
    repeated in the reply counts once; a placeholder, or with `names` a bare name, is rejected (extract_checks).
    The row's `citation` is the character's words only: the narrator's incises inside the grounded
    span are cut out, whether the model copied them (as the prompt asks) or left them out.
    """
    items, error = parse_reply(reply)
    if error and finish_reason == "length":
        error = "truncated"
    rejects = [] if error is None else [{"reason": error, "raw": reply[:2000]}]
    items, repeated = checks.unique_items(items)
    rejects += repeated
    rows, taken, norm, speech, quotes = [], set(), None, None, []
    for item in items:
        cited = item.get("citation")
        if not isinstance(cited, str) or not cited.strip():
            rejects.append({"reason": "empty_citation", "item": item})
            continue
        problem = checks.item_problem(cited, names or set())
        if problem:
            rejects.append({"reason": problem, "citation": cited})
            continue
        if norm is None:
            quotes = quotes_in_span(book.text, chunk.start, chunk.end)
            norm = NormalizedText(book.text, chunk.start, chunk.end)
            incises = incises_in_span(book.text, chunk.start, chunk.end, quotes)
            speech = NormalizedText(book.text, chunk.start, chunk.end, incises) if incises else None
        g = locate(cited, book.text, chunk.start, chunk.end, taken, norm, speech)
        if g.score < min_grounding:
            rejects.append({"reason": "low_grounding", "score": g.score, "citation": cited,
                            "best_match": book.text[g.start:g.end][:1000], "start": g.start, "end": g.end})
            continue
        taken.add(g.start)
        rows.append(make_row(book, chunk, g.start, g.end, source, normalize_kind(item.get("kind")),
                             g.score, g.how, str(item.get("contexte") or ""), model_text=cited,
                             spoken=spoken_segments(book.text, g.start, g.end, quotes)))
    for r in rejects:
        r.update(book=book.id, chunk=chunk.id)
    return rows, rejects


def make_row(book: Book, chunk: Chunk, start: int, end: int, source: Source, kind: str, score: float,
             how: str, contexte: str, model_text: str | None = None, spoken: tuple | None = None) -> dict:
    """One citation with its provenance; `id` is stable.

    `start`/`end` are the whole span in the source; `segments` the [start, end] offsets of the
    character's words inside it and `citation` those words joined (see grounding.join_spoken).
    """
    segments, tail = spoken or ([(start, end)], end)
    citation = join_spoken(book.text, segments, tail)
    row = {"id": f"{book.id}:{start}-{end}", "book": book.id, "chapter": book.chapter_at(start), "start": start,
           "end": end, "segments": [list(s) for s in segments], "chunk": chunk.id, "chunk_index": chunk.index,
           "method": source.method, "model": source.model, "prompt_version": source.prompt_version, "kind": kind,
           "grounding": score, "grounding_method": how, "character": source.character, "contexte": contexte,
           "citation": citation}
    if model_text is not None and model_text.strip() != citation:
        row["model_citation"] = model_text.strip()
    return row


def output_row(row: dict) -> dict:
    """A row in the written key order, internal fields dropped, empty `also_in` omitted."""
    return {k: row[k] for k in ROW_KEYS if k in row and not (k == "also_in" and not row[k])}


# -- the stage -------------------------------------------------------------------------------------
@dataclass
class ExtractSummary:
    """What a run did: chunks, cache hits, citations kept and rejected, time and tokens.

    `output` is where the citations went: the output asked for (`target`), or OUT.partial.jsonl beside it when
    chunks failed and a previous output was there to keep."""
    method: str
    output: str
    target: str = ""
    chunks: int = 0
    skipped: int = 0
    chunk_tokens: int = 0   # the token budget of a chunk (0: chunk_lines alone)
    cached: int = 0
    called: int = 0
    failed: int = 0
    kept: int = 0
    merged: int = 0
    rejected: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    tokens: Counter = field(default_factory=Counter)      # every chunk of the output, cached included
    new_tokens: Counter = field(default_factory=Counter)  # the calls made by this run
    failure_note: str = ""  # which calls failed and the first error (empty: none failed)
    store: str = ""
    questions: int = 0  # hybrid: the replies and paragraphs the LLM was asked about (chunks: the passages)
    added: int = 0      # hybrid: the citations its answers added to the rules' (before dedupe)

    def failure(self) -> StageFailed | None:
        """The error a run with failed chunks ends with (None when every chunk answered)."""
        if not self.failed:
            return None
        return failed_run("extract", self.failure_note, Path(self.target or self.output), Path(self.output),
                          f"{self.kept} citations", Path(self.store), self.cached + self.called, "chunk replies")


class ExtractInterrupted(Exception):
    """Ctrl-C during the LLM calls: finished chunks are stored; a rerun resumes after them."""

    def __init__(self, done: int, total: int, store: Path):
        super().__init__(f"interrupted: {done}/{total} chunks done (stored in {store})")
        self.done, self.total, self.store = done, total, store


def side_paths(out: Path) -> tuple[Path, Path, Path]:
    """(store, store errors, rejects) files kept next to the citations file."""
    return (out.with_name(out.stem + ".store.jsonl"), out.with_name(out.stem + ".errors.jsonl"),
            out.with_name(out.stem + ".rejects.jsonl"))


def check_paths(out: str | Path, books: list[Book], prompt_file: str = "") -> Path:
    """The citations file checked before any work: a file, and neither it nor its side files one of the inputs."""
    partial = partial_path(out)
    inputs = [p for b in books if b.path for p in (Path(b.path), Path(b.path).with_suffix(".json"))]
    return check_output(out, inputs=inputs + ([prompt_file] if prompt_file else []),
                        writes=[*side_paths(Path(out)), partial, side_paths(partial)[2]], example="citations.jsonl")


def chunks_to_send(book: Book, character: "CharacterConfig", cfg: "ExtractConfig", max_tokens: int = 0,
                   count=None) -> list[tuple[Chunk, bool]]:
    """(chunk, whether the LLM reads it) for a book: chunks of at most `max_tokens` (by `count`) when > 0,
    the pre-filter, then focus windows inside kept chunks."""
    from dataclasses import replace

    from dantes_mlx.extract_chunks import estimate_tokens
    from dantes_mlx.extract_focus import focus_text, prefilter_keeps

    name, aliases = character.name, list(character.aliases)
    out = []
    for chunk in chunk_book(book, cfg.chunk_lines, cfg.overlap, max_tokens, count or estimate_tokens):
        keep = not cfg.prefilter or prefilter_keeps(chunk.text, name, aliases, character.narrator)
        if keep and cfg.prefilter and cfg.focus_window > 0:
            chunk = replace(chunk, focus=focus_text(chunk.text, name, aliases, cfg.focus_window, character.narrator))
        out.append((chunk, keep))
    return out


def chunk_key(prompt: Prompt, model_id: str, chunk: Chunk, character: "CharacterConfig", sampling: dict,
              schema: dict = CITATION_SCHEMA) -> str:
    """Store key of one chunk: prompt version, model, chunk text, names, sampling (and a non-default schema)."""
    from dantes_mlx.store import item_key

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


def _extract_llm(books, character, cfg, out: Path, client, sampling, concurrency, progress, schema,
                 max_failures) -> ExtractSummary:
    from dantes_mlx.extract_chunks import chunk_budget, token_counter
    from dantes_mlx.llm.base import call_sampling
    from dantes_mlx.store import Store

    started = time.monotonic()
    sampling = dict(sampling or {"temperature": cfg.temperature})
    prompt = load_prompt(cfg.prompt_file, character.language)
    store_path, errors_path, _ = side_paths(out)
    store = Store(store_path, rejects_path=errors_path)
    summary = ExtractSummary("llm", str(out), str(out), store=str(store_path))
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
    _call(client, requests, pending, store, summary, concurrency, progress, FailureLimit(max_failures), watch)
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
    _finish(summary, rows, rejects, out, started)
    return summary


def _call(client, requests: list[dict], pending: list, store, summary: ExtractSummary, concurrency: int,
          progress: bool, limit: FailureLimit, on_reply=None) -> None:
    """Send the requests, storing each reply (or its error) as it arrives; Ctrl-C keeps what is stored, and
    `limit` failures in a row end the calls early (the chunks not sent count as failed). `on_reply(chunk,
    stored value)` sees each new reply, then (None, None) at the end; it may raise (extract_checks)."""
    from dantes_mlx.llm import batch

    calls = (client.iter_chat(requests, concurrency, return_exceptions=True) if hasattr(client, "iter_chat")
             else batch.iter_chat(client, requests, 1, return_exceptions=True))
    bar = _progress(len(requests), summary.cached, progress)
    try:
        for index, result in limit.watch(calls):
            chunk, key = pending[index]
            if isinstance(result, Exception):
                summary.failed += 1
                store.reject(key, "llm_error", {"chunk": chunk.id, "error": str(result)[:2000]})
            else:
                summary.called += 1
                value = _stored_reply(chunk, result)
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


def _stored_reply(chunk: Chunk, result) -> dict:
    return {"chunk": chunk.id, "text": result.text, "prompt_tokens": result.prompt_tokens,
            "evaluated_tokens": result.evaluated_tokens, "completion_tokens": result.completion_tokens,
            "reasoning_tokens": result.reasoning_tokens, "finish_reason": getattr(result, "finish_reason", "")}


def _progress(total: int, cached: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"extract ({cached} cached)", unit="chunk", disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)


def settle_rejects(rejects: list[dict], rows: list[dict]) -> list[dict]:
    """Ungrounded citations as the run's verdict, not each chunk's: one seen in two overlapping chunks is one
    reject (listing both chunks), and one that another chunk grounded is no reject at all (its words lie
    outside the chunk that quoted them, not outside the book)."""
    from dantes_mlx.grounding import normalize

    grounded = {(r["book"], normalize(text)) for r in rows
                for text in (r["citation"], r.get("model_citation")) if text}
    first: dict[tuple, dict] = {}
    settled = []
    for reject in rejects:
        if reject["reason"] == "low_grounding":
            key = (reject["book"], normalize(reject["citation"]))
            if key in grounded:
                continue
            if key in first:
                first[key].setdefault("also_in", []).append(reject["chunk"])
                continue
            first[key] = reject
        settled.append(reject)
    return settled


def _finish(summary: ExtractSummary, rows: list[dict], rejects: list[dict], out: Path, started: float) -> None:
    """Write the citations and their rejects: over the previous ones when every chunk answered (or there were none),
    else beside them (see publish_jsonl)."""
    from dantes_mlx.store import write_jsonl_atomic

    kept, summary.merged = dedupe(rows)
    written, summary.kept = publish_jsonl(out, (output_row(r) for r in kept), complete=not summary.failed)
    summary.output = str(written)
    rejects = settle_rejects(rejects, kept)
    write_jsonl_atomic(side_paths(written)[2], rejects)
    summary.rejected.update(r["reason"] for r in rejects)
    summary.seconds = time.monotonic() - started


def extract_rules(books: list[Book], character: "CharacterConfig", cfg: "ExtractConfig", out: str | Path,
                  progress: bool = True) -> ExtractSummary:
    """Rule extraction: the French dialogue attributor's quotes of the character, same rows as the LLM's."""
    out = check_paths(out, books)
    with output_lock(out):
        return _extract_rules(books, character, cfg, out, progress)


def _extract_rules(books: list[Book], character: "CharacterConfig", cfg: "ExtractConfig", out: Path,
                   progress: bool) -> ExtractSummary:
    from tqdm import tqdm

    started = time.monotonic()
    if character.language != "fr":
        print(f"warning: the dialogue rules are written for French; language is '{character.language}'",
              file=sys.stderr)
    summary = ExtractSummary("rules", str(out), str(out))
    rows = []
    for book in tqdm(books, desc="extract (rules)", unit="book", disable=not progress, file=sys.stderr):
        chunks = chunk_book(book, cfg.chunk_lines, cfg.overlap)
        summary.chunks += len(chunks)
        rows += rule_rows(book, character, chunks, dialogue.find_quotations(book.text))
    _finish(summary, rows, [], out, started)
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
    the character speak (see dialogue_narrator.narrator_hint)."""
    if character.narrator:
        return
    quotes = dialogue.find_quotations(book.text) if quotes is None else quotes
    if speaks is None:
        speaks = bool(dialogue.character_quotes(book.text, character.name, list(character.aliases), quotes=quotes))
    hint = narrator_hint(book.text, quotes, character.name, speaks)
    if hint:
        print(f"warning: {book.path or book.id}: {hint}", file=sys.stderr)


def context_before(text: str, start: int, limit: int = 200) -> str:
    """The narration just before a quote (its previous paragraph, cut to `limit` characters)."""
    head = text[max(0, start - 2000):start].rstrip()
    paragraph = head.rsplit("\n", 1)[-1].strip() if head else ""
    return paragraph if len(paragraph) <= limit else "…" + paragraph[-limit:].lstrip()


def all_speakers(path: str | Path, out: str | Path) -> int:
    """Every direct-speech quotation of a plain UTF-8 file with its speaker (or null); offsets as read."""
    from dantes_mlx.store import write_jsonl_atomic

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
