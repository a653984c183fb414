"""Test helper: run an LLM extraction with a slow deterministic fake LLM (killed with -9 by test_extract)."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from dantes_mlx.llm.base import ChatResult


class SlowLLM:
    """Answers each chunk after `delay` seconds: its dialogue lines (punctuation changed) plus one invention."""

    model_id = "slow-fake"

    def __init__(self, delay: float):
        self.delay = delay

    def chat(self, messages, json_schema=None, **sampling) -> ChatResult:
        time.sleep(self.delay)
        chunk = messages[-1]["content"]
        replies = [line for line in chunk.split("\n") if line.startswith("—")]
        items = [{"contexte": "réplique", "citation": "--" + r.lstrip("— ").replace(" !", "!"), "kind": "parole"}
                 for r in replies]
        number = re.search(r"\d+", chunk)
        items.append({"contexte": "invention", "citation": f"Je n'ai jamais dit cela, numéro {number[0]}.",
                      "kind": "pensée"})
        text = json.dumps({"citations": items}, ensure_ascii=False)
        return ChatResult(text=text, prompt_tokens=len(chunk), evaluated_tokens=len(chunk),
                          completion_tokens=len(text))


def main(argv: list[str]) -> None:
    from dantes_mlx.config import CharacterConfig, ExtractConfig
    from dantes_mlx.extract.chunks import load_book
    from dantes_mlx.extract.llm_method import extract_llm

    source, out, delay = argv[0], argv[1], float(argv[2])
    character = CharacterConfig(name="Edmond Dantès", aliases=["Dantès"], language="fr")
    cfg = ExtractConfig(chunk_lines=5, overlap=1, prefilter=False)
    extract_llm([load_book(Path(source))], character, cfg, out, SlowLLM(delay), progress=False)


if __name__ == "__main__":
    main(sys.argv[1:])
