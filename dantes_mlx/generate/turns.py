"""Multi-turn scenes: conversations of 2..N exchanges grounded in neighbouring citations of one chapter, written as
chat `messages` rows, resumable and filtered exchange by exchange, every reject kept with its reason."""

from __future__ import annotations

import time
from itertools import groupby
from pathlib import Path
from typing import Callable

from rapidfuzz import fuzz

from dantes_mlx.config import CharacterConfig, GenerateConfig
from dantes_mlx.errors import ConfigError
from dantes_mlx.fr.text import fold
from dantes_mlx.generate.filters import DUPLICATE_QUESTION, FilterSettings, narration_pattern, pair_reason
from dantes_mlx.generate.pairs import (GenerateSummary, Task, check_paths, filter_settings, finish_with_extra,
                                       make_task, output_paths, run_tasks, salvage)
from dantes_mlx.generate.parser import ParsedPair
from dantes_mlx.llm.base import call_sampling
from dantes_mlx.llm.prompt import Prompt, load_prompt
from dantes_mlx.outputs import output_lock
from dantes_mlx.store import Store

STAGE = "generate-turns"
CUT_OFF, AFTER_REJECTED, BEYOND_TURNS, TOO_FEW = "cut_off", "after_rejected_turn", "beyond_turns", "too_few_turns"
MAX_GAP_CHARS = 20_000  # citations further apart than this in the book are not one scene


def conversation_schema(turns: int, max_question_chars: int = 0, max_answer_chars: int = 0) -> dict:
    """JSON schema of one answer: 2 to `turns` {question, answer} objects under "exchanges" (0: no maxLength)."""
    def text(limit: int) -> dict:
        return {"type": "string", "minLength": 1, **({"maxLength": limit} if limit else {})}

    exchange = {"type": "object", "properties": {"question": text(max_question_chars), "answer": text(max_answer_chars)},
                "required": ["question", "answer"], "additionalProperties": False}
    return {"title": "conversation", "type": "object",
            "properties": {"exchanges": {"type": "array", "items": exchange, "minItems": 2, "maxItems": turns}},
            "required": ["exchanges"], "additionalProperties": False}


def _place(row: dict) -> tuple[str, str]:
    provenance = row.get("provenance") or {}
    return str(provenance.get("book", "")), str(provenance.get("chapter", ""))


def passages(citations: list[dict], size: int) -> list[list[dict]]:
    """Neighbouring citations, at most `size` each: runs of one chapter in book order (file order without
    positions), cut where two citations lie more than MAX_GAP_CHARS apart."""
    out: list[list[dict]] = []
    for _, run in groupby(citations, key=_place):
        current: list[dict] = []
        for row in run:
            start, last = row["provenance"].get("start"), current[-1]["provenance"].get("end") if current else None
            far = isinstance(start, int) and isinstance(last, int) and start - last > MAX_GAP_CHARS
            if current and (len(current) >= size or far):
                out.append(current)
                current = []
            current.append(row)
        out.append(current)
    return out


def passage_task(passage: list[dict], prompt: Prompt, character: CharacterConfig, cfg: GenerateConfig,
                 model_id: str, sampling: dict) -> Task:
    """The store key and request of one conversation (fixed instructions first, the passage last)."""
    contexte = " … ".join(dict.fromkeys(r["contexte"] for r in passage if r["contexte"])) or "(aucun)"
    citations = "\n".join(f"- {r['citation']}" for r in passage)
    messages = prompt.messages(name=character.name, persona=character.persona, turns=cfg.turns,
                               contexte=contexte, citations=citations)
    schema = conversation_schema(cfg.turns, cfg.max_instruction_chars, cfg.max_response_chars)
    return make_task(STAGE, prompt.version, model_id, messages, schema, sampling)


def exchange_reason(pair: ParsedPair, settings: FilterSettings, citations: list[str], questions: list[str],
                    narration) -> str | None:
    """Why one exchange is rejected: cut off, a pair filter (copying any of the passage's citations), or a
    question repeating an earlier one of the conversation; None when kept."""
    if not pair.complete:
        return CUT_OFF
    for citation in citations or [""]:
        reason = pair_reason(pair.instruction, pair.response, settings, citation=citation, narration=narration)
        if reason:
            return reason
    question = fold(pair.instruction, accents=False)
    if any(fuzz.ratio(question, q) >= settings.duplicate_question_similarity for q in questions):
        return DUPLICATE_QUESTION
    return None


def conversation(pairs: list[ParsedPair], settings: FilterSettings, citations: list[str],
                 turns: int) -> tuple[list[ParsedPair], list[tuple[ParsedPair, str]]]:
    """The exchanges kept (the first good ones in order, at most `turns`; the conversation stops at the first bad
    one, later ones would answer what was cut) and (exchange, reason) rejects; fewer than 2 kept: none is."""
    narration = narration_pattern(settings.names) if settings.names else None
    kept: list[ParsedPair] = []
    rejected: list[tuple[ParsedPair, str]] = []
    questions: list[str] = []
    for pair in pairs:
        reason = (AFTER_REJECTED if rejected else BEYOND_TURNS if len(kept) >= turns
                  else exchange_reason(pair, settings, citations, questions, narration))
        if reason:
            rejected.append((pair, reason))
            continue
        kept.append(pair)
        questions.append(fold(pair.instruction, accents=False))
    if len(kept) < 2:
        return [], [(p, TOO_FEW) for p in kept] + rejected
    return kept, rejected


def conversation_row(passage: list[dict], exchanges: list[ParsedPair], model_id: str, version: str) -> dict:
    """A chat row: the exchanges as user/assistant turns, the passage's citation ids (for leak-free splits)."""
    messages = []
    for pair in exchanges:
        messages += [{"role": "user", "content": pair.instruction}, {"role": "assistant", "content": pair.response}]
    return {"messages": messages, "source_id": passage[0]["source_id"],
            "source_ids": [r["source_id"] for r in passage], "source": "conversation", "turns": len(exchanges),
            "citations": [r["citation"] for r in passage], "model": model_id, "prompt_version": version,
            "provenance": passage[0]["provenance"], "complete": all(p.complete for p in exchanges)}


def generate_conversations(citations: list[dict], client, out: str | Path, cfg: GenerateConfig,
                           character: CharacterConfig, *, concurrency: int = 1, sampling: dict | None = None,
                           progress: bool = True, inputs=(), max_failures: int = 5,
                           extra: Callable | None = None) -> GenerateSummary:
    """One conversation of 2..turns exchanges per passage of neighbouring citations; LLM answers are cached so
    an interrupted run resumes (see generate_pairs for `inputs`, failures and `extra`)."""
    if cfg.turns < 2:
        raise ConfigError("conversations need generate.turns of 2 or more", path="dantes.yaml [generate]",
                          fix="set generate.turns (or --turns) to 2 or more; 1 writes question/answer pairs")
    out = check_paths(out, [*inputs, *([cfg.ooc_prompt_file] if cfg.ooc_prompt_file else [])], cfg.prompt_file)
    with output_lock(out):
        return _conversations(citations, client, out, cfg, character, concurrency, sampling, progress,
                              max_failures, extra)


def _conversations(citations, client, out: Path, cfg: GenerateConfig, character: CharacterConfig, concurrency,
                   sampling, progress, max_failures, extra) -> GenerateSummary:
    started = time.monotonic()
    prompt = load_prompt("conversation", character.language, cfg.prompt_file)
    store = Store(output_paths(out)[2])
    chosen = call_sampling(client, sampling)
    groups = passages(citations, cfg.turns)
    tasks = [passage_task(p, prompt, character, cfg, client.model_id, chosen) for p in groups]
    added = extra(len(groups) * cfg.turns, client.model_id, chosen) if extra else None
    stats = run_tasks(tasks + (added.tasks if added else []), client, store, concurrency=concurrency,
                      unit="call", sampling=sampling, progress=progress, max_failures=max_failures)
    settings = filter_settings(cfg, character)
    rows, rejects, seen = [], [], set()
    for passage, task in zip(groups, tasks):
        if task.key in seen or task.key not in store:
            continue  # a repeated passage is generated once; a failed one is retried next run
        seen.add(task.key)
        source_id = passage[0]["source_id"]
        pairs, unparsed = salvage(store.get(task.key), source_id)
        kept, rejected = conversation(pairs, settings, [r["citation"] for r in passage], cfg.turns)
        if kept:
            rows.append(conversation_row(passage, kept, client.model_id, prompt.version))
        rejects += unparsed + exchange_rejects(pairs, rejected, source_id)
    return finish_with_extra(out, rows, rejects, len(seen), started, stats, added, store, settings)


def exchange_rejects(pairs: list[ParsedPair], rejected: list[tuple[ParsedPair, str]], source_id: str) -> list[dict]:
    """One reject per exchange left out, with its place in the conversation (1-based) and its reason."""
    turn = {id(p): n for n, p in enumerate(pairs, 1)}
    return [{"source_id": source_id, "reason": reason, "line": p.line, "turn": turn[id(p)],
             "instruction": p.instruction, "response": p.response} for p, reason in rejected]
