"""The generate stage's one entry: pairs from citations (or facts, labelled texts, another tool's raw outputs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from dantes_mlx import llm
from dantes_mlx.config import CharacterConfig, GenerateConfig, LLMConfig, section
from dantes_mlx.generate.ooc import card_text, plan_ooc
from dantes_mlx.generate.pairs import GenerateSummary, check_paths, generate_pairs, import_raw, select_citations
from dantes_mlx.generate.sources import generate_from_facts, labels_to_rows, load_facts
from dantes_mlx.generate.turns import generate_conversations
from dantes_mlx.llm.base import LLMClient
from dantes_mlx.stage import Log
from dantes_mlx.workspace import Workspace


@dataclass
class Settings:
    """What one generate run reads: the character, the generate and llm sections, and its one source."""
    character: CharacterConfig
    generate: GenerateConfig
    llm: LLMConfig
    inputs: tuple = ()              # citation files the user chose (read whole); none: the workspace's
    facts_file: str | None = None
    labels_file: str | None = None
    raw_file: str | None = None
    output: str | None = None       # else generate.output (citations), else data/pairs/<source>.jsonl
    no_llm: bool = False            # facts answered by templates
    client: LLMClient | None = field(default=None, repr=False)  # instead of the one llm names (the demo's)
    progress: bool = True

    @classmethod
    def from_config(cls, config: dict, *, inputs: tuple = (), facts_file: str | None = None,
                    labels_file: str | None = None, raw_file: str | None = None, output: str | None = None,
                    model: str | None = None, url: str | None = None, concurrency: int | None = None,
                    no_llm: bool = False, progress: bool = True, **generate_flags) -> "Settings":
        """dantes.yaml's sections < the flags. `model` names the GGUF for llama.cpp, or the model a server
        should run when a URL is set."""
        model_key = "server_model" if section(LLMConfig, config, {"url": url}).url else "model"
        cfg = section(LLMConfig, config, {"url": url, "concurrency": concurrency, model_key: model})
        return cls(section(CharacterConfig, config), section(GenerateConfig, config, generate_flags), cfg,
                   tuple(inputs), facts_file, labels_file, raw_file, output, no_llm, progress=progress)

    @property
    def source(self) -> str:
        """facts, labels, raw or pairs (from citations)."""
        return next(s for s in (self.facts_file and "facts", self.labels_file and "labels",
                                self.raw_file and "raw", "pairs") if s)

    def out(self, workspace: Workspace) -> Path:
        """The pairs file: -o, else the workspace's for citations, else data/pairs/<source or raw file>.jsonl."""
        if self.output:
            return Path(self.output)
        if self.source == "pairs":
            return workspace.pairs
        return workspace.pairs_dir / f"{Path(self.raw_file).stem if self.raw_file else self.source}.jsonl"

    def make_client(self) -> LLMClient | None:
        if self.client is not None:
            return self.client
        return None if (self.facts_file and self.no_llm) else llm.make_client(self.llm)


def run(settings: Settings, workspace: Workspace, log: Log) -> GenerateSummary:
    """Write the pairs; LLM answers are stored next to the output, so an interrupted run resumes."""
    out, gen, character = settings.out(workspace), settings.generate, settings.character
    if settings.raw_file:
        return import_raw(settings.raw_file, out, gen, character)
    if settings.labels_file:
        return labels_to_rows(settings.labels_file, out, gen)
    # Read the input and check the output before loading a model, so that a bad file fails fast.
    sources = [settings.facts_file] if settings.facts_file else \
        list(settings.inputs) or workspace.citation_files()
    check_paths(out, sources, gen.prompt_file)
    facts = citations = None
    if settings.facts_file:
        facts = load_facts(settings.facts_file)
    else:
        citations, notes = select_citations(sources, character, chosen=bool(settings.inputs))
        for note in notes:
            log(f"warning: {note}")
    common = dict(concurrency=settings.llm.concurrency, progress=settings.progress, inputs=sources,
                  max_failures=settings.llm.max_consecutive_failures)
    if facts is not None:
        if gen.ooc_share or gen.turns > 1:
            log("warning: generate.turns and generate.ooc_share apply to citations; --facts writes pairs without them")
        return generate_from_facts(facts, settings.make_client(), out, gen, character, **common)
    chat = gen.turns > 1
    card = card_text(workspace) if gen.ooc_share else None
    if gen.ooc_share:
        log("out-of-character answers grounded in " + ("the character card" if card else "the persona (no character "
                                                        "card in the workspace)"))
    extra = partial(_ooc_plan, gen, character, card, chat)
    write = generate_conversations if chat else generate_pairs
    return write(citations, settings.make_client(), out, gen, character, extra=extra, **common)


def _ooc_plan(gen: GenerateConfig, character: CharacterConfig, card: str | None, chat: bool, book_questions: int,
              model_id: str, sampling: dict):
    return plan_ooc(gen, character, book_questions, model_id, sampling, card, chat)
