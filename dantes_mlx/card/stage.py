"""The card stage's one entry: the character's citations read as generate reads them, then the card built from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dantes_mlx import llm
from dantes_mlx.card.build import CardSummary, build_card, check_paths
from dantes_mlx.config import CardConfig, CharacterConfig, LLMConfig, section
from dantes_mlx.generate.pairs import select_citations
from dantes_mlx.llm.base import LLMClient
from dantes_mlx.stage import Lines, Log
from dantes_mlx.workspace import Workspace


@dataclass
class Settings:
    """What one card run reads: the character, the card and llm sections, and the citation files chosen."""
    character: CharacterConfig
    card: CardConfig
    llm: LLMConfig
    inputs: tuple = ()              # citation files the user chose (read whole); none: the workspace's
    output: str | None = None       # else the workspace's card folder (card.output_dir, else data/card)
    client: LLMClient | None = field(default=None, repr=False)  # instead of the one llm names (tests, the demo)
    progress: bool = True

    @classmethod
    def from_config(cls, config: dict, *, inputs: tuple = (), output: str | None = None, model: str | None = None,
                    url: str | None = None, concurrency: int | None = None, progress: bool = True,
                    **card_flags) -> "Settings":
        """dantes.yaml's sections < the flags. `model` names the GGUF for llama.cpp, or the model a server should
        run when a URL is set."""
        model_key = "server_model" if section(LLMConfig, config, {"url": url}).url else "model"
        cfg = section(LLMConfig, config, {"url": url, "concurrency": concurrency, model_key: model})
        return cls(section(CharacterConfig, config), section(CardConfig, config, card_flags), cfg, tuple(inputs),
                   output, progress=progress)

    def out(self, workspace: Workspace) -> Path:
        return Path(self.output) if self.output else workspace.card

    def has_llm(self) -> bool:
        return self.client is not None or bool(self.llm.model or self.llm.url)


def run(settings: Settings, workspace: Workspace, log: Log) -> CardSummary:
    """card.json, card.md and persona.txt in the card folder; every reply is stored there, so a rerun resumes."""
    out = settings.out(workspace)
    sources = list(settings.inputs) or workspace.citation_files()
    check_paths(out, sources, settings.card)  # before a model is loaded
    citations, notes = select_citations(sources, settings.character, chosen=bool(settings.inputs))
    for note in notes:
        log(f"warning: {note}")
    client = settings.client or llm.make_client(settings.llm)
    return build_card(citations, client, out, settings.card, settings.character, log,
                      concurrency=settings.llm.concurrency, progress=settings.progress, inputs=sources,
                      max_failures=settings.llm.max_consecutive_failures)


def run_if_llm(settings: Settings, workspace: Workspace, log: Log) -> CardSummary | Lines:
    """`run`'s card stage: the card when an LLM is configured, else a note that it was skipped (the stages after
    it then keep character.persona)."""
    if not settings.has_llm():
        return Lines(["card: skipped, no LLM configured (llm.model or llm.url); prepare, chat, eval and export "
                      "keep character.persona"])
    return run(settings, workspace, log)
