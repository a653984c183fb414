"""Instruction/response pairs in the character's voice from citations, resumable, filtered, with provenance."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from tqdm import tqdm

from dantes_mlx.config import CharacterConfig, GenerateConfig
from dantes_mlx.errors import ConfigError, InputError, Interrupted, StageFailed
from dantes_mlx.fr.text import fold
from dantes_mlx.generate.filters import FilterSettings, filter_group
from dantes_mlx.generate.parser import ParsedPair, parse_file, parse_pairs
from dantes_mlx.llm.base import call_sampling
from dantes_mlx.llm.batch import FailureLimit, iter_results, reply_record
from dantes_mlx.llm.prompt import Prompt, load_prompt
from dantes_mlx.outputs import check_output, failed_run, output_lock, partial_path, publish_jsonl
from dantes_mlx.store import Store, item_key, read_jsonl, write_jsonl_atomic

STAGE = "generate"
_CITATION_FIELDS = ("citation", "text", "contexte", "context")


# -- prompts ----------------------------------------------------------------------------------------
def pairs_schema(k: int, max_instruction_chars: int = 0, max_response_chars: int = 0) -> dict:
    """JSON schema of one answer: exactly k {instruction, response} objects under "pairs" (0: no maxLength)."""
    def text(limit: int) -> dict:
        return {"type": "string", "minLength": 1, **({"maxLength": limit} if limit else {})}

    pair = {"type": "object", "properties": {"instruction": text(max_instruction_chars),
                                             "response": text(max_response_chars)},
            "required": ["instruction", "response"], "additionalProperties": False}
    return {"title": "pairs", "type": "object",
            "properties": {"pairs": {"type": "array", "items": pair, "minItems": k, "maxItems": k}},
            "required": ["pairs"], "additionalProperties": False}


# -- inputs -----------------------------------------------------------------------------------------
def text_id(prefix: str, text: str) -> str:
    """A stable id for a record that has none: a hash of its normalized text."""
    return f"{prefix}-{hashlib.sha1(fold(text, accents=False).encode('utf-8')).hexdigest()[:12]}"


def load_citations(paths: Iterable[str | Path]) -> list[dict]:
    """Citations from extract's JSONL (or the original project's {contexte, citation} rows), in order."""
    paths = list(paths)
    rows = [row for path in paths for row in _read_citations(path)]
    if not rows:
        raise InputError("no citations found", path=", ".join(map(str, paths)) or "(no file)",
                         fix="run `dantes-mlx extract` first, or give citation files")
    return rows


def _read_citations(path: str | Path) -> list[dict]:
    rows = []
    for lineno, record in read_jsonl(path):
        text = record.get("citation", record.get("text")) if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise InputError("record has no 'citation' text", path=path, line=lineno,
                             fix='each line needs {"citation": "...", "contexte": "..."}')
        source_id = next((str(record[k]) for k in ("id", "citation_id", "source_id")
                          if record.get(k) not in (None, "")), None) or text_id("cit", text)
        rows.append({"source_id": source_id, "citation": text.strip(),
                     "contexte": str(record.get("contexte") or record.get("context") or "").strip(),
                     "provenance": {k: v for k, v in record.items() if k not in _CITATION_FIELDS}})
    return rows


def select_citations(paths: Iterable[str | Path], character: CharacterConfig,
                     chosen: bool) -> tuple[list[dict], list[str]]:
    """The citations to turn into pairs under `character`'s persona, and warnings.

    Rows record whose words they are (`character`, written by extract). Files the user `chosen` are read
    whole, with a warning when they mix characters or hold someone else's; default files (extract's
    outputs) give only the rows of character.name or an alias, and it is an error when none does.
    Files whose rows name no one (the original project's {contexte, citation}) are read when no file
    names anyone."""
    paths = [Path(p) for p in paths]
    read = {p: _read_citations(p) for p in paths}
    owners = {p: Counter(_owner(r) for r in rows) for p, rows in read.items()}
    named = {who for counts in owners.values() for who in counts if who}
    mine = {who for who in named if _is_the_character(who, character)}
    if chosen or not named:
        rows = load_citations(paths)
        others = sorted(named - mine)
        if others:
            held = "; ".join(f"{p}: " + ", ".join(f"{n} {who}" for who, n in owners[p].most_common() if who)
                             for p in paths if any(owners[p]))
            return rows, [f"these citations are not all {character.name}'s ({held}); every pair will speak as "
                          f"the persona of character.name ({character.name}): give one character's file"]
        return rows, []
    if not mine:
        held = "; ".join(f"{p.name}: {', '.join(sorted(who for who in owners[p] if who))}" for p in paths if owners[p])
        raise InputError(f"no citations of {character.name} (character.name)", path=paths[0].parent,
                         fix=f"the files hold other characters ({held}): give the file to read as an argument, "
                             f"set character.name in dantes.yaml, or run `dantes-mlx extract`")
    rows, notes = [], []
    for p in paths:
        kept = [r for r in read[p] if _owner(r) in mine]
        rows += kept
        if len(kept) < len(read[p]):
            left = ", ".join(f"{n} of {who or 'no one named'}" for who, n in owners[p].most_common() if who not in mine)
            notes.append(f"skipped {p}: {left} (character.name is {character.name})")
    return rows, notes


def _owner(row: dict) -> str | None:
    who = row["provenance"].get("character")
    return who.strip() if isinstance(who, str) and who.strip() else None


def _is_the_character(who: str, character: CharacterConfig) -> bool:
    names = (character.name, *character.aliases)
    return fold(who, accents=False) in {fold(n, accents=False) for n in names}


def filter_settings(cfg: GenerateConfig, character: CharacterConfig, **changes) -> FilterSettings:
    """The filters' thresholds from the stage config and the character's names."""
    values = dict(min_answer_words=cfg.min_answer_words, max_answer_words=cfg.max_answer_words,
                  max_citation_similarity=cfg.max_citation_similarity,
                  duplicate_question_similarity=cfg.duplicate_question_similarity,
                  language=character.language, names=tuple([character.name, *character.aliases]))
    return FilterSettings(**{**values, **changes})


# -- running the LLM, resumably ---------------------------------------------------------------------
@dataclass
class Task:
    """One LLM call: the store key of its item and the chat request."""
    key: str
    request: dict


class GenerateInterrupted(Interrupted):
    """Ctrl-C during the LLM calls: finished items are stored; the same command resumes after them."""

    def __init__(self, done: int, total: int, unit: str, store: Path):
        super().__init__(f"interrupted: {done}/{total} {unit}s done (stored in {store}); "
                         f"run the same command again to resume, finished {unit}s are not asked again")
        self.done, self.total, self.store = done, total, store


@dataclass
class RunStats:
    """What the LLM part of a run did and cost."""
    items: int = 0
    cached: int = 0
    calls: int = 0
    failed: int = 0
    truncated: int = 0
    prompt_tokens: int = 0
    evaluated_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    errors: list = field(default_factory=list)
    failure_note: str = ""  # which calls failed, whether the run stopped early, the first error

    def add(self, value: dict) -> None:
        self.calls += 1
        self.truncated += value.get("finish_reason") == "length"
        for name in ("prompt_tokens", "evaluated_tokens", "completion_tokens", "reasoning_tokens"):
            setattr(self, name, getattr(self, name) + int(value.get(name) or 0))


def run_tasks(tasks: list[Task], client, store: Store, *, concurrency: int = 1, unit: str = "item",
              sampling: dict | None = None, progress: bool = True, max_failures: int = 5) -> RunStats:
    """Call the LLM for every task not yet in the store, storing each answer as soon as it arrives; after
    `max_failures` failed calls in a row the rest are not sent (they count as failed)."""
    unique = list({t.key: t for t in tasks}.values())
    pending = [t for t in unique if t.key not in store]
    stats = RunStats(items=len(unique), cached=len(unique) - len(pending))
    requests = [{**t.request, **(sampling or {})} for t in pending]
    bar = tqdm(total=len(unique), initial=stats.cached, unit=unit, desc=STAGE, dynamic_ncols=True,
               disable=not progress)
    limit = FailureLimit(max_failures)
    try:
        for index, result in limit.watch(iter_results(client, requests, concurrency)):
            bar.update(1)
            if isinstance(result, ConfigError):
                raise result
            if isinstance(result, Exception):
                stats.errors.append(f"{type(result).__name__}: {result}")
                continue
            value = reply_record(result)
            store.put(pending[index].key, value)
            stats.add(value)
    except KeyboardInterrupt:
        raise GenerateInterrupted(sum(t.key in store for t in unique), len(unique), unit, store.path) from None
    finally:
        bar.close()
    if limit.failed:
        stats.failed = len(pending) - stats.calls  # after an early stop the items never sent failed too
        stats.failure_note = limit.note(unit, len(pending), stats.failed)
    return stats


# -- outputs ----------------------------------------------------------------------------------------
@dataclass
class GenerateSummary:
    """What a generate run wrote, rejected and cost."""
    out: Path
    rejects_path: Path
    items: int
    kept: int
    rejected: Counter
    seconds: float
    stats: RunStats | None = None
    short: Counter | None = None  # citations that kept fewer than K pairs: "model" wrote fewer, "filters" cut
    target: Path | None = None    # the output asked for; `out` is OUT.partial.jsonl when a previous one was kept
    ooc: int = 0                  # rows about things outside the book (generate.ooc_share)

    def summary(self) -> str:
        return "\n".join(self.lines())

    def lines(self) -> list[str]:
        """Rows written, rejects, short citations, what the LLM calls cost: one line each."""
        out = [f"wrote {self.kept} rows from {self.items} items to {self.out} in {self.seconds:.1f}s"]
        if self.ooc:
            out.append(f"{self.ooc} of the rows are out-of-character questions (generate.ooc_share), tagged ooc")
        if self.rejected:
            reasons = ", ".join(f"{reason} {n}" for reason, n in self.rejected.most_common())
            out.append(f"rejected {sum(self.rejected.values())} ({reasons}); details in {self.rejects_path}")
        if self.short:
            out.append(f"{sum(self.short.values())} citation(s) kept fewer than K pairs: the model wrote fewer in "
                       f"{self.short['model']}, the filters left fewer in {self.short['filters']}")
        s = self.stats
        if s is not None:
            out.append(f"LLM: {s.calls} calls ({s.cached} items cached, {s.failed} failed, "
                       f"{s.truncated} cut by max_tokens); tokens: prompt {s.prompt_tokens}, "
                       f"evaluated {s.evaluated_tokens}, generated {s.completion_tokens} "
                       f"(of which reasoning {s.reasoning_tokens})")
            if s.failed:
                out.append(f"{s.failure_note}; run again to retry them")
        return out

    def failure(self) -> StageFailed | None:
        """The error a run with failed LLM calls ends with (None when every call answered)."""
        if self.stats is None or not self.stats.failed:
            return None
        target = self.target or self.out
        return failed_run("generate", self.stats.failure_note, target, self.out, f"{self.kept} rows",
                          output_paths(target)[2], self.stats.cached + self.stats.calls, "answers")


def output_paths(out: str | Path) -> tuple[Path, Path, Path]:
    """(pairs file, rejects file, LLM answers store) for an output path."""
    out = Path(out)
    return out, out.with_name(out.stem + ".rejects.jsonl"), out.with_name(out.stem + ".store.jsonl")


def check_paths(out: str | Path, inputs=(), prompt_file: str = "", flag: str = "-o") -> Path:
    """The pairs file checked before any work: a file, and neither it nor its side files one of the inputs."""
    partial = partial_path(out)
    writes = [*output_paths(out)[1:], partial, output_paths(partial)[1]]
    return check_output(out, inputs=[*inputs, *([prompt_file] if prompt_file else [])], writes=writes,
                        flag=flag, example="pairs.jsonl")


def finish(out: Path, rows: list, rejects: list, items: int, started: float,
           stats: RunStats | None = None) -> GenerateSummary:
    """Write rows and rejects atomically and summarize: over the previous ones when every LLM call answered (or
    there were none), else beside them (see publish_jsonl)."""
    out = Path(out)
    written, _ = publish_jsonl(out, rows, complete=stats is None or not stats.failed)
    rejects_path = output_paths(written)[1]
    write_jsonl_atomic(rejects_path, rejects)
    return GenerateSummary(written, rejects_path, items, len(rows), Counter(r["reason"] for r in rejects),
                           time.monotonic() - started, stats, target=out)


def salvage(value: dict, source_id: str) -> tuple[list[ParsedPair], list[dict]]:
    """Pairs of one stored LLM answer, and a reject for everything the parser could not use."""
    parsed = parse_pairs(value.get("text") or "")
    rejects = [{"source_id": source_id, "reason": "unparseable", "detail": r.reason, "line": r.line,
                "text": r.text} for r in parsed.rejects]
    if not parsed.pairs and not parsed.rejects:
        rejects.append({"source_id": source_id, "reason": "unparseable", "detail": "empty answer", "line": 1,
                        "text": ""})
    return parsed.pairs, rejects


def filtered_rows(pairs: list[ParsedPair], settings: FilterSettings, base: dict, *, k: int = 0,
                  citation: str = "", fact: str = "", keep_line: bool = False,
                  ooc: bool = False) -> tuple[list[dict], list[dict]]:
    """Rows for the kept pairs (base fields + pair) and rejects with their reasons."""
    kept, rejected = filter_group(pairs, settings, k=k, citation=citation, fact=fact, ooc=ooc)
    rows = [{"instruction": p.instruction, "response": p.response, **base, "complete": p.complete,
             **({"line": p.line} if keep_line else {})} for p in kept]
    rejects = [{"source_id": base["source_id"], "reason": reason, "line": p.line,
                "instruction": p.instruction, "response": p.response} for p, reason in rejected]
    return rows, rejects


# -- citations -> pairs -----------------------------------------------------------------------------
def make_task(stage: str, prompt_version: str, model_id: str, messages: list[dict], schema: dict,
              sampling: dict) -> Task:
    """A call keyed by everything that shapes its answer: the messages (persona, name, k and data
    included), the schema and the sampling; not by how it is sent (concurrency, progress)."""
    item = {"messages": messages, "schema": schema, "sampling": sampling}
    return Task(item_key(stage, prompt_version, model_id, item), {"messages": messages, "json_schema": schema})


def citation_task(row: dict, prompt: Prompt, character: CharacterConfig, cfg: GenerateConfig,
                  model_id: str, sampling: dict | None = None) -> Task:
    """The store key and the one-call request (fixed instructions first, the citation last)."""
    k = cfg.pairs_per_citation
    messages = prompt.messages(name=character.name, persona=character.persona, k=k,
                               contexte=row["contexte"] or "(aucun)", citation=row["citation"])
    schema = pairs_schema(k, cfg.max_instruction_chars, cfg.max_response_chars)
    return make_task(STAGE, prompt.version, model_id, messages, schema, sampling or {})


def generate_pairs(citations: list[dict], client, out: str | Path, cfg: GenerateConfig,
                   character: CharacterConfig, *, concurrency: int = 1, sampling: dict | None = None,
                   progress: bool = True, inputs=(), max_failures: int = 5,
                   extra: Callable | None = None) -> GenerateSummary:
    """K filtered pairs per citation; LLM answers are cached so an interrupted run resumes.

    `inputs`: the files the citations came from (never written). With failed calls the previous output is kept
    (see GenerateSummary.failure). `extra(book_questions, model_id, sampling)` plans more calls (out-of-character
    questions, see ooc.plan_ooc): an object with `tasks` and `rows(store, filter_settings)`."""
    if cfg.pairs_per_citation < 1:
        raise ConfigError("pairs_per_citation must be at least 1", path="dantes.yaml [generate]",
                          fix="set generate.pairs_per_citation (or -k) to 1 or more")
    out = check_paths(out, [*inputs, *([cfg.ooc_prompt_file] if cfg.ooc_prompt_file else [])], cfg.prompt_file)
    with output_lock(out):
        return _generate_pairs(citations, client, out, cfg, character, concurrency, sampling, progress, max_failures,
                               extra)


def _generate_pairs(citations, client, out: Path, cfg: GenerateConfig, character: CharacterConfig, concurrency,
                    sampling, progress, max_failures, extra) -> GenerateSummary:
    started = time.monotonic()
    prompt = load_prompt("generate", character.language, cfg.prompt_file)
    out, _, cache = output_paths(out)
    store = Store(cache)
    tasks = [citation_task(row, prompt, character, cfg, client.model_id, call_sampling(client, sampling))
             for row in citations]
    added = extra(len(citations) * cfg.pairs_per_citation, client.model_id, call_sampling(client, sampling)) \
        if extra else None
    stats = run_tasks(tasks + (added.tasks if added else []), client, store, concurrency=concurrency,
                      unit="call" if added and added.tasks else "citation", sampling=sampling, progress=progress, max_failures=max_failures)
    settings = filter_settings(cfg, character)
    rows, rejects, seen, short = [], [], set(), Counter()
    for row, task in zip(citations, tasks):
        if task.key in seen or task.key not in store:
            continue  # a repeated citation is generated once; a failed one is retried next run
        seen.add(task.key)
        pairs, unparsed = salvage(store.get(task.key), row["source_id"])
        base = {"source_id": row["source_id"], "source": "citation", "citation": row["citation"],
                "contexte": row["contexte"], "model": client.model_id, "prompt_version": prompt.version,
                "provenance": row["provenance"]}
        kept, filtered = filtered_rows(pairs, settings, base, k=cfg.pairs_per_citation,
                                       citation=row["citation"])
        if len(kept) < cfg.pairs_per_citation:
            short["model" if len(pairs) < cfg.pairs_per_citation else "filters"] += 1
        rows += kept
        rejects += unparsed + filtered
    return finish_with_extra(out, rows, rejects, len(seen), started, stats, added, store,
                             filter_settings(cfg, character), short)


def finish_with_extra(out: Path, rows: list, rejects: list, items: int, started: float, stats: RunStats,
                      added, store: Store, settings: FilterSettings, short: Counter | None = None) -> GenerateSummary:
    """finish() with the rows of the extra calls (out-of-character questions) after the book's."""
    more, more_rejects = added.rows(store, settings) if added else ([], [])
    answered = len({t.key for t in added.tasks if t.key in store}) if added else 0
    summary = finish(out, rows + more, rejects + more_rejects, items + answered, started, stats)
    summary.short, summary.ooc = short, len(more)
    return summary


# -- raw outputs of another tool -> pairs -----------------------------------------------------------
def group_raw_pairs(pairs: list[ParsedPair], k: int) -> list[list[ParsedPair]]:
    """Pairs of one citation: the original tool wrote its k objects on one line or on k lines in a row."""
    groups: list[list[ParsedPair]] = []
    for pair in pairs:
        if not groups or (len(groups[-1]) >= k and pair.line != groups[-1][-1].line):
            groups.append([])
        groups[-1].append(pair)
    return groups


def import_raw(path: str | Path, out: str | Path, cfg: GenerateConfig,
               character: CharacterConfig) -> GenerateSummary:
    """Pairs salvaged from a file of raw LLM outputs, one per line, filtered; the rest reported by line."""
    started, path = time.monotonic(), Path(path)
    if not path.is_file():
        raise InputError("raw outputs file not found", path=path, fix="check the --from-raw path")
    out = check_paths(out, [path])
    parsed = parse_file(path)
    rejects = [{"source_id": None, "reason": "unparseable", "detail": r.reason, "line": r.line,
                "text": r.text} for r in parsed.rejects]
    rows, settings = [], filter_settings(cfg, character)
    groups = group_raw_pairs(parsed.pairs, cfg.pairs_per_citation)
    for group in groups:
        base = {"source_id": f"raw-{path.stem}-L{group[0].line}", "source": "raw", "file": str(path)}
        kept, filtered = filtered_rows(group, settings, base, keep_line=True)
        rows += kept
        rejects += filtered
    return finish(Path(out), rows, rejects, len(groups), started)
