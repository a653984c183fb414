"""Out-of-character questions: a share of the generated questions about things outside the book, answered in
character (grounded in the character card when the workspace has one, else in the persona), rows tagged `ooc`."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from dantes_mlx.config import CharacterConfig, GenerateConfig
from dantes_mlx.errors import ConfigError
from dantes_mlx.generate.filters import FilterSettings
from dantes_mlx.generate.pairs import Task, filtered_rows, make_task, pairs_schema, salvage, text_id
from dantes_mlx.llm.prompt import load_prompt
from dantes_mlx.store import Store

STAGE = "generate-ooc"
TOPICS_DIR = Path(__file__).parent.parent / "resources"


@dataclass
class OOCItem:
    """One out-of-character call: k topics, the id its rows share, the task."""
    source_id: str
    topics: list[str]
    task: Task


def load_topics(language: str) -> list[str]:
    """The built-in topics outside any book (`resources/ooc_topics_<language>.txt`, one per line)."""
    path = TOPICS_DIR / f"ooc_topics_{language}.txt"
    if not path.is_file():
        raise ConfigError(f"no built-in out-of-character topics for language '{language}'",
                          path="generate.ooc_share", fix="set generate.ooc_share: 0 for this character")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def ooc_calls(book_questions: int, share: float, k: int) -> int:
    """Calls of k questions each that make `share` of all questions out of character (rounded up)."""
    if share <= 0 or book_questions <= 0:
        return 0
    return math.ceil(book_questions * share / (1 - share) / k)


def topic_groups(topics: list[str], calls: int, k: int) -> list[list[str]]:
    """k topics per call: the list in order, then a fresh seeded shuffle each time it runs out (deterministic)."""
    stream: list[str] = []
    cycle = 0
    while len(stream) < calls * k:
        stream += topics if cycle == 0 else random.Random(f"ooc-{cycle}").sample(topics, len(topics))
        cycle += 1
    return [stream[i * k:(i + 1) * k] for i in range(calls)]


@dataclass
class OOCPlan:
    """The out-of-character calls added to a run: their tasks, and their rows once answered."""
    items: list[OOCItem]
    version: str
    k: int
    model_id: str
    chat: bool = False  # rows as one-exchange `messages` rows (beside conversations)

    @property
    def tasks(self) -> list[Task]:
        return [item.task for item in self.items]

    def rows(self, store: Store, settings: FilterSettings) -> tuple[list[dict], list[dict]]:
        return ooc_rows(self.items, store, settings, self.k, self.model_id, self.version, self.chat)


def plan_ooc(cfg: GenerateConfig, character: CharacterConfig, book_questions: int, model_id: str, sampling: dict,
             card: str | None = None, chat: bool = False) -> OOCPlan:
    """The out-of-character calls for a run whose book items ask `book_questions` questions (none, and no
    prompt read, when generate.ooc_share is 0)."""
    k = cfg.pairs_per_citation
    calls = ooc_calls(book_questions, cfg.ooc_share, k)
    if not calls:
        return OOCPlan([], "", k, model_id, chat)
    prompt = load_prompt("ooc", character.language, cfg.ooc_prompt_file)
    schema = pairs_schema(k, cfg.max_instruction_chars, cfg.max_response_chars)
    items = []
    for topics in topic_groups(load_topics(character.language), calls, k):
        messages = prompt.messages(name=character.name, persona=character.persona, k=k,
                                   card=card or character.persona, topics="\n".join(f"- {t}" for t in topics))
        items.append(OOCItem(text_id("ooc", "|".join(topics)), topics,
                             make_task(STAGE, prompt.version, model_id, messages, schema, sampling)))
    return OOCPlan(items, prompt.version, k, model_id, chat)


def card_text(workspace) -> str | None:
    """The character card's text when the workspace has one (`workspace.character_card`, a file), else None."""
    card = getattr(workspace, "character_card", None)
    path = card() if callable(card) else card
    if path is None or not Path(path).is_file():
        return None
    return Path(path).read_text(encoding="utf-8").strip() or None


def as_chat(row: dict) -> dict:
    """A pair row as a one-exchange chat row (files of conversations hold `messages` rows only)."""
    rest = {k: v for k, v in row.items() if k not in ("instruction", "response")}
    return {"messages": [{"role": "user", "content": row["instruction"]},
                         {"role": "assistant", "content": row["response"]}], **rest}


def ooc_rows(items: list[OOCItem], store: Store, settings: FilterSettings, k: int, model_id: str, version: str,
             chat: bool = False) -> tuple[list[dict], list[dict]]:
    """Rows tagged `ooc: true` (chat rows when `chat`) and rejects of the answered calls; the others wait for a
    next run."""
    rows, rejects, seen = [], [], set()
    for item in items:
        if item.task.key in seen or item.task.key not in store:
            continue
        seen.add(item.task.key)
        pairs, unparsed = salvage(store.get(item.task.key), item.source_id)
        base = {"source_id": item.source_id, "source": "ooc", "ooc": True, "topics": item.topics,
                "model": model_id, "prompt_version": version}
        kept, filtered = filtered_rows(pairs, settings, base, k=k, ooc=True)
        rows += [as_chat(r) for r in kept] if chat else kept
        rejects += [{**r, "ooc": True} for r in unparsed + filtered]
    return rows, rejects
