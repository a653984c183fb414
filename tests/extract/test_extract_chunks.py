"""Chunks sized to the model's context: whole paragraphs, a token budget, proportional overlap (in-memory; one tiny GGUF run)."""

from __future__ import annotations

import copy
import random

import pytest

from dantes_mlx.config import CharacterConfig, ExtractConfig
from dantes_mlx.errors import ConfigError
from dantes_mlx.extract.chunks import Book, chunk_book
from dantes_mlx.extract.llm_method import extract_llm
from dantes_mlx.extract.prompt import CITATION_SCHEMA, citation_prompt as load_prompt
from dantes_mlx.extract.chunks import chunk_budget, estimate_tokens

WHO = CharacterConfig(name="Edmond Dantès", aliases=["Dantès"], language="fr")


def words(text: str) -> int:
    """A stand-in tokenizer: one token per word."""
    return len(text.split())


def random_book(seed: int, n: int = 120) -> Book:
    rng = random.Random(seed)
    paras = [" ".join(f"mot{i}x{j}" for j in range(rng.choice([2, 5, 9, 30, 80]))) for i in range(n)]
    return Book("b", "\n\n".join(paras) + "\n")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("budget", [40, 150, 600])
def test_chunks_keep_to_the_budget_and_cover_every_paragraph_in_order(seed, budget):
    book = random_book(seed)
    chunks = chunk_book(book, chunk_lines=20, overlap=4, max_tokens=budget, count=words)
    paras = [p for p in book.text.split("\n") if p.strip()]
    seen = []
    for c in chunks:
        inside = [p for p in c.text.split("\n") if p.strip()]
        assert len(inside) <= 20
        # over budget only as a single paragraph that alone is longer than the budget
        assert sum(words(p) + 1 for p in inside) <= budget or len(inside) == 1
        assert c.text == book.text[c.start:c.end] and c.text.startswith(inside[0])
        seen.append((c.first_line, c.last_line))
    firsts = [a for a, _ in seen]
    assert firsts == sorted(set(firsts))                       # always moving forward
    assert chunks[0].text.startswith(paras[0]) and chunks[-1].text.endswith(paras[-1])
    for (a1, b1), (a2, b2) in zip(seen, seen[1:]):
        assert a2 <= b1 + 2                                    # no paragraph skipped (blank lines between)


def test_overlap_shrinks_with_a_chunk_the_budget_cut():
    book = Book("b", "\n\n".join(f"p{i} " + "mot " * 9 for i in range(100)) + "\n")   # 11 tokens a paragraph
    full = chunk_book(book, chunk_lines=50, overlap=10, max_tokens=0, count=words)
    assert [c.first_line for c in full][:2] == [1, 81]          # 10 paragraphs (20 lines with blanks) shared
    cut = chunk_book(book, chunk_lines=50, overlap=10, max_tokens=110, count=words)   # 10 paragraphs fit
    n_paras = [len([p for p in c.text.split("\n") if p.strip()]) for c in cut]
    assert n_paras[0] == 10
    shared = (cut[0].last_line - cut[1].first_line) // 2 + 1
    assert shared == 2                                           # 10 * 10/50, not 10: not the whole chunk again
    assert chunk_book(book, 50, 10)[0].text == full[0].text      # no budget: the paragraph count alone


class Sized:
    """A client that knows its context and counts words as tokens."""
    model_id = "sized"

    def __init__(self, n_ctx):
        self.n_ctx = n_ctx

    def count_tokens(self, text):
        return words(text)


def test_the_budget_is_what_the_context_holds_after_instructions_and_reply():
    prompt = load_prompt()
    instructions = sum(words(m["content"]) for m in prompt.messages(WHO.name, WHO.aliases, ""))
    budget = chunk_budget(Sized(4096), prompt, WHO.name, WHO.aliases, max_tokens=1000)
    assert 4096 - 1000 - instructions - 100 < budget < 4096 - 1000 - instructions
    assert chunk_budget(Sized(4096), prompt, WHO.name, WHO.aliases, 1000, chunk_tokens=500) == 500
    assert chunk_budget(object(), prompt, WHO.name, WHO.aliases, 1000) == 0           # unknown context: no limit
    with pytest.raises(ConfigError, match="chunk_tokens=5000 does not fit") as err:
        chunk_budget(Sized(4096), prompt, WHO.name, WHO.aliases, 1000, chunk_tokens=5000)
    assert "at most" in err.value.fix
    with pytest.raises(ConfigError, match="leaves .* tokens for the book text"):
        chunk_budget(Sized(1200), prompt, WHO.name, WHO.aliases, max_tokens=1000)
    assert estimate_tokens("é" * 30) == 10


def test_a_long_chunk_is_cut_to_fit_the_tiny_gguf_context(tiny_gguf, tmp_path):
    """100 paragraphs do not fit a 1024-token context: without the budget the one chunk fails."""
    from dantes_mlx.llm.llamacpp import LlamaCppClient

    text = "\n\n".join(f"— Voici la réplique numéro {i}, dit Dantès, et la mer était calme ce matin-là." for i in range(100))
    client = LlamaCppClient(str(tiny_gguf), n_ctx=1024, n_threads=2)
    assert client.count_tokens(text) > 1024
    schema = copy.deepcopy(CITATION_SCHEMA)
    schema["properties"]["citations"]["maxItems"] = 0          # the reply is {"citations": []}: fast
    sampling = {"temperature": 0.0, "max_tokens": 48, "seed": 0}
    # maxItems 0 makes every reply empty: junk the reply check would stop on (extract_checks.ReplyWatch)
    summary = extract_llm([Book("b", text + "\n")], WHO, ExtractConfig(check_replies=False), tmp_path / "c.jsonl",
                          client, sampling=sampling, schema=schema, progress=False)
    assert summary.failed == 0 and summary.called == summary.chunks > 1
    assert 0 < summary.chunk_tokens < 1024 - 48
    assert summary.new_tokens["prompt_tokens"] <= summary.chunks * 1024
