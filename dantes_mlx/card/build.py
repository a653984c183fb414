"""`build_card`: map the citation blocks, reduce level by level, ground every step, write the persona; resumable."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dantes_mlx.card.blocks import citation_line, data_budget, even_groups, fit_line, map_task
from dantes_mlx.card.evidence import Citation, evidence_ids, ground_card, trait_count
from dantes_mlx.card.merge import card_json, plan_groups, reduce_task
from dantes_mlx.card.persona import persona_task, read_persona
from dantes_mlx.card.render import render_markdown
from dantes_mlx.card.schema import HEADINGS, MAX_EVIDENCE, TRAIT_LISTS, empty_card, parse_card, set_traits, traits_at
from dantes_mlx.config import CardConfig, CharacterConfig
from dantes_mlx.errors import InputError, StageFailed
from dantes_mlx.extract.chunks import token_counter
from dantes_mlx.generate.pairs import RunStats, Task, run_tasks
from dantes_mlx.llm.base import call_sampling
from dantes_mlx.llm.prompt import PROMPTS_DIR, Prompt, load_prompt
from dantes_mlx.outputs import check_output, output_lock
from dantes_mlx.store import Store, write_jsonl_atomic, write_text_atomic
from dantes_mlx.workspace import CARD_FILE

STEPS = ("map", "reduce", "persona")
TOKEN_KEYS = ("prompt_tokens", "evaluated_tokens", "completion_tokens", "reasoning_tokens")


def output_files(out_dir: str | Path) -> dict[str, Path]:
    """The files a card run writes in its folder."""
    out = Path(out_dir)
    return {"card": out / CARD_FILE, "markdown": out / "card.md", "persona": out / "persona.txt",
            "store": out / "card.store.jsonl", "rejects": out / "card.rejects.jsonl"}


def check_paths(out_dir: str | Path, inputs=(), cfg: CardConfig | None = None) -> Path:
    """The card folder checked before any work: a folder, and none of its files one of the inputs."""
    cfg = cfg or CardConfig()
    prompts = [p for p in (cfg.map_prompt_file, cfg.reduce_prompt_file, cfg.persona_prompt_file) if p]
    return check_output(out_dir, kind="dir", inputs=[*inputs, *prompts], writes=output_files(out_dir).values())


def load_card_prompt(kind: str, language: str, prompt_file: str, data_field: str,
                     log: Callable[[str], None]) -> Prompt:
    """The built-in `card_<kind>` prompt of the character's language, else the English one (which asks for the card
    in that language), or the user's file."""
    if not prompt_file and not (PROMPTS_DIR / f"card_{kind}_{language}_v1.txt").is_file():
        log(f"warning: no built-in card_{kind} prompt for language '{language}': using the English one, which asks "
            f"for the card in '{language}'")
        language = "en"
    return load_prompt(f"card_{kind}", language, prompt_file, (data_field,))


@dataclass
class CardSummary:
    """What a card run did, cost and wrote; `failure_note` is set when LLM calls failed (nothing then written)."""
    out_dir: Path
    citations: int = 0
    blocks: int = 0
    block_tokens: int = 0                 # most tokens of citations per block (0: block_size alone)
    levels: int = 0                       # reduce levels
    runs: dict = field(default_factory=lambda: {s: RunStats() for s in STEPS})   # this run's calls
    cost: dict = field(default_factory=lambda: {s: Counter() for s in STEPS})    # every call the card needs
    grounding: dict = field(default_factory=lambda: {s: Counter() for s in ("map", "reduce")})
    bad_replies: Counter = field(default_factory=Counter)
    traits: int = 0
    evidence: int = 0
    persona: bool = False                 # a persona was written
    persona_note: str = ""                # why there is none, or that it was cut
    seconds: float = 0.0
    failure_note: str = ""
    written: bool = False

    def summary(self) -> str:
        return "\n".join(self.lines())

    def lines(self) -> list[str]:
        """The summary the command prints: blocks, calls and their cost by step, grounding, what was written."""
        budget = f", at most {self.block_tokens} tokens each" if self.block_tokens else ""
        out = [f"card: {self.citations} citations in {self.blocks} blocks{budget}; {self.levels} reduce level(s)"]
        for step in STEPS:
            run, cost = self.runs[step], self.cost[step]
            out.append(f"  {step}: {cost['calls']} call(s) ({run.cached} cached, {run.calls} made now, {run.failed} "
                       f"failed); all calls: prompt {cost['prompt_tokens']} tokens, evaluated "
                       f"{cost['evaluated_tokens']}, generated {cost['completion_tokens']}")
        for step, counts in self.grounding.items():
            if counts:
                out.append(f"  {step} grounding: {_counts(counts)}")
        if self.bad_replies:
            out.append(f"  unusable replies: {_counts(self.bad_replies)} (details in card.rejects.jsonl)")
        if self.written:
            out.append(f"wrote {self.traits} grounded traits ({self.evidence} citations cited) to "
                       f"{output_files(self.out_dir)['card']}, card.md" + (", persona.txt" if self.persona else ""))
        if self.persona_note:
            out.append(f"  persona: {self.persona_note}")
        out.append(f"time: {self.seconds:.1f} s")
        return out

    def failure(self) -> StageFailed | None:
        """The error a run with failed calls ends with (None when every call answered)."""
        if not self.failure_note:
            return None
        store = output_files(self.out_dir)["store"]
        stored = sum(c["calls"] for c in self.cost.values())
        return StageFailed(f"card: {self.failure_note}\n  nothing was written: the previous card in {self.out_dir} "
                           "is kept", path=self.out_dir,
                           fix=f"fix the cause above (is the LLM server up? llm.url / llm.model), then run the same "
                               f"command again: the {stored} replies stored in {store} are not asked again")


def _counts(counts: Counter) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(counts.items()))


@dataclass
class _Run:
    """What every step of one run shares."""
    client: object
    store: Store
    cfg: CardConfig
    citations: dict[str, Citation]
    values: dict
    sampling: dict        # sent with every request
    key_sampling: dict    # what the stored replies are keyed by (the client's defaults < sampling)
    options: dict         # concurrency, progress, max_failures
    summary: CardSummary
    log: Callable[[str], None]
    rejects: list = field(default_factory=list)


def build_card(citations: list[dict], client, out_dir: str | Path, settings: CardConfig,
               character: CharacterConfig, log: Callable[[str], None], *, sampling: dict | None = None,
               concurrency: int = 1, progress: bool = True, inputs=(), max_failures: int = 5) -> CardSummary:
    """The character card of `citations` (rows of generate.load_citations) in `out_dir`: card.json, card.md,
    persona.txt. Every reply is stored (card.store.jsonl), so a rerun makes only the calls still missing; with
    failed calls nothing is written and the previous card is kept (see CardSummary.failure)."""
    if not citations:
        raise InputError("no citations to build the card from", path=out_dir,
                         fix="run `dantes-mlx extract` first, or give citation files")
    out = check_paths(out_dir, inputs, settings)
    with output_lock(output_files(out)["card"]):
        started = time.monotonic()
        files = output_files(out)
        sampling = dict(sampling or {"temperature": settings.temperature})
        run = _Run(client, Store(files["store"]), settings, _short_ids(citations),
                   {"name": character.name, "aliases": ", ".join(character.aliases) or "-",
                    "max_traits": settings.max_traits, "language": character.language,
                    "max_chars": settings.persona_chars},
                   sampling, call_sampling(client, sampling),
                   {"concurrency": concurrency, "progress": progress, "max_failures": max_failures},
                   CardSummary(out, citations=len(citations)), log)
        _steps(run, character)
        run.summary.seconds = time.monotonic() - started
        return run.summary


def _short_ids(citations: list[dict]) -> dict[str, Citation]:
    """The citations under the ids the LLM sees: c1, c2, ... in input order."""
    return {f"c{i}": Citation(f"c{i}", str(row["source_id"]), row["citation"], row.get("contexte", ""))
            for i, row in enumerate(citations, 1)}


def _steps(run: _Run, character: CharacterConfig) -> None:
    cfg, language = run.cfg, character.language
    prompts = {kind: load_card_prompt(kind, language, file, data, run.log) for kind, file, data in (
        ("map", cfg.map_prompt_file, "citations"), ("reduce", cfg.reduce_prompt_file, "summaries"),
        ("persona", cfg.persona_prompt_file, "card"))}
    cards = _map(run, prompts["map"])
    card = _reduce(run, prompts["reduce"], cards) if cards is not None else None
    persona = _persona(run, prompts["persona"], card) if card is not None else None
    if run.summary.failure_note:
        return
    _publish(run, card, persona, character, prompts)


def _call(run: _Run, step: str, tasks: list[Task], unit: str) -> bool:
    """Make the calls not yet stored; False (and the failure noted) when some failed."""
    stats = run_tasks(tasks, run.client, run.store, unit=unit, sampling=run.sampling, **run.options)
    total = run.summary.runs[step]
    for name in ("items", "cached", "calls", "failed", "truncated", *TOKEN_KEYS):
        setattr(total, name, getattr(total, name) + getattr(stats, name))
    for task in {t.key: t for t in tasks}.values():
        value = run.store.get(task.key)
        if value is not None:
            run.summary.cost[step]["calls"] += 1
            run.summary.cost[step].update({k: int(value.get(k) or 0) for k in TOKEN_KEYS})
    if stats.failed:
        run.summary.failure_note = f"{step}: {stats.failure_note}"
    return not stats.failed


def _grounded(run: _Run, task: Task, allowed: set[str], where: dict) -> dict | None:
    """The grounded card of a stored reply, or None when it holds none (the reasons go to the rejects)."""
    value = run.store.get(task.key)
    card, problems = parse_card(value["text"])
    if value.get("finish_reason") == "length":  # cut by max_tokens: what was complete is kept (see close_cut_json)
        problems = [p if p["reason"] not in ("invalid_json", "cut_json") else {"reason": "truncated"}
                    for p in problems]
    for problem in problems:
        run.rejects.append({**where, **problem, **({"raw": value["text"][:2000]} if card is None else {})})
        run.summary.bad_replies[problem["reason"]] += 1
    if card is None:
        return None
    grounded, rejects, counts = ground_card(card, run.citations, allowed, run.cfg.min_grounding, where)
    run.rejects += rejects
    run.summary.grounding[where["step"]].update(counts)
    return grounded


def _map(run: _Run, prompt: Prompt) -> list[dict] | None:
    """One grounded summary per block of citations (blocks whose reply is unusable give none); None on failure."""
    cfg, keys, count = run.cfg, list(run.citations), token_counter(run.client)
    budget = data_budget(run.client, prompt, run.values, int(run.key_sampling.get("max_tokens") or 0), count,
                         "citations")
    lines = [fit_line(citation_line(c), budget, count) for c in run.citations.values()]
    blocks = even_groups([count(line) + 1 for line in lines] if budget else [1] * len(lines), cfg.block_size, budget)
    run.summary.blocks, run.summary.block_tokens = len(blocks), budget
    tasks = [map_task(prompt, [run.citations[keys[i]] for i in block], [lines[i] for i in block], run.values,
                      run.client.model_id, run.key_sampling, cfg.max_traits, cfg.max_trait_chars) for block in blocks]
    run.log(f"map: {len(run.citations)} citations in {len(blocks)} blocks")
    if not _call(run, "map", tasks, "block"):
        return None
    cards = [_grounded(run, task, {keys[i] for i in block}, {"step": "map", "block": number})
             for number, (block, task) in enumerate(zip(blocks, tasks), 1)]
    return [card for card in cards if card is not None]


def _reduce(run: _Run, prompt: Prompt, cards: list[dict]) -> dict | None:
    """The block summaries merged, at most card.fan_in a call, level after level; None on failure."""
    if not cards:
        return empty_card()
    count = token_counter(run.client)
    budget = data_budget(run.client, prompt, run.values, int(run.key_sampling.get("max_tokens") or 0), count,
                         "summaries")
    while len(cards) > 1:
        run.summary.levels += 1
        level = run.summary.levels
        groups = plan_groups([count(card_json(c)) + 8 for c in cards], run.cfg.fan_in, budget)
        merging = [g for g in groups if len(g) > 1]
        tasks = [reduce_task(prompt, [cards[i] for i in g], run.values, run.client.model_id, run.key_sampling,
                             run.cfg.max_traits, run.cfg.max_trait_chars) for g in merging]
        run.log(f"reduce level {level}: {len(cards)} summaries into {len(groups)}")
        if not _call(run, "reduce", tasks, "merge"):
            return None
        merged = iter(zip(merging, tasks))
        cards = [cards[g[0]] if len(g) == 1 else _merged(run, *next(merged), cards, level) for g in groups]
    return cards[0]


def _merged(run: _Run, group: list[int], task: Task, cards: list[dict], level: int) -> dict:
    """The grounded reply of one reduce call; an unusable reply is replaced by the group's traits in order, at most
    card.max_traits a list (so a model that cannot merge never loses what the blocks found)."""
    parts = [cards[i] for i in group]
    where = {"step": "reduce", "level": level, "summaries": [i + 1 for i in group]}
    card = _grounded(run, task, set().union(*(evidence_ids(c) for c in parts)), where)
    if card is not None:
        return card
    joined = empty_card()
    joined["summary"] = next((c["summary"] for c in parts if c["summary"]), "")
    for path in TRAIT_LISTS:
        set_traits(joined, path, [t for c in parts for t in traits_at(c, path)][:run.cfg.max_traits])
    return joined


def _persona(run: _Run, prompt: Prompt, card: dict) -> str | None:
    """The persona written from the card (None when persona_chars is 0, the card has no trait or the reply is
    unusable: `persona_note` says which)."""
    if not run.cfg.persona_chars or not trait_count(card):
        run.summary.persona_note = "none: card.persona_chars is 0" if not run.cfg.persona_chars else \
            "none: the card has no grounded trait to draw it from"
        return None
    task = persona_task(prompt, card, run.values, run.client.model_id, run.key_sampling)
    if not _call(run, "persona", [task], "persona"):
        return None
    persona, problem = read_persona(run.store.get(task.key)["text"], run.cfg.persona_chars)
    if problem:
        run.summary.persona_note = f"cut to {run.cfg.persona_chars} characters" if problem == "cut" else \
            f"none: the reply was unusable ({problem})"
        if problem != "cut":
            run.summary.bad_replies[problem] += 1
            run.rejects.append({"step": "persona", "reason": problem, "raw": run.store.get(task.key)["text"][:2000]})
    return persona or None


def _publish(run: _Run, card: dict, persona: str | None, character: CharacterConfig,
             prompts: dict[str, Prompt]) -> None:
    """Write the rejects, card.md, persona.txt and, last, card.json (each atomically)."""
    files, cfg, summary = output_files(run.summary.out_dir), run.cfg, run.summary
    summary.traits, summary.evidence, summary.persona = trait_count(card), len(evidence_ids(card)), bool(persona)
    sections = empty_card()
    for path in TRAIT_LISTS:
        set_traits(sections, path, [{"trait": t["trait"], "evidence": [_source(run.citations[e["id"]], e["quote"])
                                                                       for e in t["evidence"]]}
                                    for t in traits_at(card, path)])
    doc = {"character": character.name, "language": character.language, "summary": card["summary"],
           **{h: sections[h] for h in HEADINGS}, "persona": persona,
           "provenance": {"citations": summary.citations, "blocks": summary.blocks, "reduce_levels": summary.levels,
                          "model": getattr(run.client, "model_id", ""),
                          "prompt_versions": {k: p.version for k, p in prompts.items()},
                          "settings": {"block_size": cfg.block_size, "fan_in": cfg.fan_in,
                                       "max_traits": cfg.max_traits, "max_evidence": MAX_EVIDENCE,
                                       "min_grounding": cfg.min_grounding, "temperature": cfg.temperature}}}
    write_jsonl_atomic(files["rejects"], run.rejects)
    write_text_atomic(files["markdown"], render_markdown(doc))
    if persona:
        write_text_atomic(files["persona"], persona + "\n")
    else:
        files["persona"].unlink(missing_ok=True)  # a persona of an earlier card would outlive it
    write_text_atomic(files["card"], json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
    summary.written = True


def _source(citation: Citation, quote: str) -> dict:
    """A piece of evidence as card.json writes it: the citation's own id, the quote, the citation's words."""
    return {"id": citation.source_id, "quote": quote, "citation": citation.text}
