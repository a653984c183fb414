"""The citations file: checked before any work, written only when complete (else beside the previous one), and
the summary of what a run kept, rejected and cost."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dantes_mlx.errors import Interrupted, StageFailed
from dantes_mlx.extract.chunks import Book
from dantes_mlx.extract.grounding import dedupe
from dantes_mlx.extract.rows import output_row, settle_rejects
from dantes_mlx.outputs import check_output, failed_run, partial_path, publish_jsonl
from dantes_mlx.store import write_jsonl_atomic


@dataclass
class ExtractSummary:
    """What a run did: chunks, cache hits, citations kept and rejected, time and tokens.

    `output` is where the citations went: the output asked for (`target`), or OUT.partial.jsonl beside it when
    chunks failed and a previous output was there to keep."""
    method: str
    output: str
    target: str = ""
    character: str = ""
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
    limited: int = 0    # LLM calls left out by extract.limit (--limit)

    def summary(self) -> str:
        """What was kept and where it went, the chunks, what was rejected, the tokens (LLM) and the time."""
        rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(self.rejected.items())) or "none"
        chunks = f"citations of {self.character} kept ({self.method}) from {self.chunks} chunks"
        if self.method == "llm":
            budget = f", at most {self.chunk_tokens} tokens of text each" if self.chunk_tokens else ""
            chunks += (f" ({self.skipped} skipped by the pre-filter, {self.cached} cached, {self.called} called, "
                       f"{self.failed} failed{budget})")
        elif self.method == "hybrid":
            chunks = (f"citations of {self.character} kept ({self.method}): the LLM was asked about {self.questions} "
                      f"replies and paragraphs the rules leave open, in {self.chunks} passages ({self.cached} cached, "
                      f"{self.called} called, {self.failed} failed); its answers gave the character {self.added} of "
                      "them")
        out = [f"kept {self.kept} citations -> {self.output}", chunks,
               f"rejected: {rejected}; duplicates merged: {self.merged}"]
        if self.limited:
            left = "read by the rules alone" if self.method == "hybrid" else "not read"
            out.append(f"--limit: {self.limited} more LLM calls were left out ({left}); raise or drop extract.limit "
                       "for the whole book")
        if self.method in ("llm", "hybrid"):
            t, n = self.tokens, self.new_tokens
            speed = f", {n['completion_tokens'] / self.seconds:.1f} generated tokens/s" if self.seconds else ""
            out.append(f"tokens this run: prompt {n['prompt_tokens']}, evaluated {n['evaluated_tokens']}, "
                       f"generated {n['completion_tokens']} (reasoning {n['reasoning_tokens']}{speed}); all chunks: "
                       f"evaluated {t['evaluated_tokens']}, generated {t['completion_tokens']}")
        if self.method == "llm" and self.chunks and self.skipped == self.chunks:
            out.append("the pre-filter found the character in no chunk: check --character/--alias "
                       "(character.name/aliases), or pass --no-prefilter")
        return "\n".join(out + [f"time: {self.seconds:.1f} s"])

    def failure(self) -> StageFailed | None:
        """The error a run with failed chunks ends with (None when every chunk answered)."""
        if not self.failed:
            return None
        return failed_run("extract", self.failure_note, Path(self.target or self.output), Path(self.output),
                          f"{self.kept} citations", Path(self.store), self.cached + self.called, "chunk replies")


class ExtractInterrupted(Interrupted):
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


def finish(summary: ExtractSummary, rows: list[dict], rejects: list[dict], out: Path, started: float) -> None:
    """Write the citations and their rejects: over the previous ones when every chunk answered (or there were none),
    else beside them (see publish_jsonl)."""
    kept, summary.merged = dedupe(rows)
    written, summary.kept = publish_jsonl(out, (output_row(r) for r in kept), complete=not summary.failed)
    summary.output = str(written)
    rejects = settle_rejects(rejects, kept)
    write_jsonl_atomic(side_paths(written)[2], rejects)
    summary.rejected.update(r["reason"] for r in rejects)
    summary.seconds = time.monotonic() - started
