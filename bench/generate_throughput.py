"""Extraction cost on fr-litbank: LLM calls, prompt tokens evaluated, tokens generated, ours vs the original's.

Both approaches run in one process on the same tiny random GGUF (llama-cpp-python, in process), over
the same texts cut into the same 100-paragraph chunks, with the same instruction words:

- original: every chunk sent, the chunk in the middle of the instructions (task line, chunk, then
  names, rules and output format), no JSON schema; chunks do not overlap.
- ours: `dantes_mlx.extract.extract_llm` itself: instructions first and the chunk last (llama.cpp
  re-evaluates only what follows the shared prefix), JSON schema, 10-paragraph overlap, and the
  rule pre-filter that skips chunks where the chosen speaker is neither named nor quoted.

The speaker of each text is its most frequent *named* gold speaker (.ann Source relations); the
bench checks that the pre-filter drops no chunk holding one of that speaker's gold quotations.
Generated tokens are printed, not compared: a random model's answers say nothing about a real one's.

Run: python bench/generate_throughput.py   (about a minute or two on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "fr-litbank-dev"
NOT_NAMES = {"il", "elle", "ils", "elles", "je", "tu", "on", "nous", "vous", "le", "la", "les", "l'", "l’",
             "un", "une", "des", "mon", "ma", "mes", "son", "sa", "ses", "ce", "cette", "celui", "celle"}


def read_gold(ann: Path) -> tuple[dict, list[tuple[str, str]]]:
    """Text-bound annotations {id: (kind, spans, text)} and Source relations (entity id, quote id)."""
    spans, sources = {}, []
    for lineno, line in enumerate(ann.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("\t")
        if parts[0].startswith("T") and len(parts) >= 3:
            kind, _, offsets = parts[1].partition(" ")
            spans[parts[0]] = (kind, [tuple(map(int, s.split())) for s in offsets.split(";")], parts[2])
        elif parts[0].startswith("R") and parts[1].startswith("Source "):
            _, arg1, arg2 = parts[1].split()
            sources.append((arg1.split(":")[1], arg2.split(":")[1]))
    return spans, sources


def is_name(mention: str) -> bool:
    words = mention.replace("’", "'").split()
    return bool(words) and words[0][0].isupper() and words[0].lower() not in NOT_NAMES \
        and not words[0].lower().startswith(("l'", "d'"))


def chosen_speaker(spans: dict, sources: list) -> tuple[str, list[tuple[int, int]]]:
    """The most frequent named speaker and the (start, end) of each of their gold quotations."""
    counts = Counter(spans[e][2] for e, _ in sources if is_name(spans[e][2]))
    name = counts.most_common(1)[0][0]
    quotes = [spans[q][1] for e, q in sources if spans[e][2] == name]
    return name, [(s[0][0], s[-1][1]) for s in quotes]


def split_instructions(instructions: str) -> tuple[str, str]:
    """(task line, the rest: names, rules, output format) of our instructions, without the 'Extrait :' label."""
    task, rest = instructions.split("\n\n", 1)
    return task, rest.rstrip().removesuffix("Extrait :").rstrip()


def original_messages(instructions: str, chunk: str) -> list[dict]:
    """The original layout: task line, the chunk, then the rest of the same instructions (no schema)."""
    task, rest = split_instructions(instructions)
    return [{"role": "user", "content": f"{task}\n\nExtrait :\n{chunk}\n\n{rest}"}]


def build_model(workdir: Path, corpus: str) -> Path:
    """The tiny random Mistral as an f16 GGUF, as small as llama.cpp allows: long prompts cost attention.

    Its tokenizer learns the texts, so a token is about 4 characters, as with a real model's vocabulary.
    """
    from dantes_mlx.export.gguf import write_gguf
    from dantes_mlx.tinymodel import build_tiny_model, builtin_corpus

    folder = build_tiny_model(workdir / "tiny", builtin_corpus() + "\n" + corpus, vocab_size=16384,
                              hidden_size=32, num_layers=1, num_heads=1, num_kv_heads=1, intermediate_size=64)
    return write_gguf(folder, workdir / "tiny-f16.gguf", outtype="f16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="fr-litbank folder (NAME.txt + NAME.ann)")
    parser.add_argument("--chunk-lines", type=int, default=100)
    parser.add_argument("--overlap", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=24, help="tokens generated per call (kept small)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data}: fr-litbank dev folder not found (clone the shared data next to the repo)")

    from dantes_mlx.config import CharacterConfig, ExtractConfig
    from dantes_mlx.extract import Book, chunk_book, extract_llm, load_prompt, prefilter_keeps
    from dantes_mlx.llm.llamacpp import LlamaCppClient

    texts = sorted(args.data.glob("*.txt"))
    books, speakers, prefilter_rows = [], {}, []
    for path in texts:
        book = Book(path.stem, path.read_text(encoding="utf-8"))
        name, quotes = chosen_speaker(*read_gold(path.with_suffix(".ann")))
        chunks = chunk_book(book, args.chunk_lines, args.overlap)
        kept = [prefilter_keeps(c, name, []) for c in chunks]
        # A quotation is safe when a kept chunk holds it whole (overlap regions belong to two chunks).
        sent = [(s, e) for s, e in quotes if any(k and c.start <= s and e <= c.end for c, k in zip(chunks, kept))]
        books.append(book)
        speakers[book.id] = name
        prefilter_rows.append((book.id, name, len(chunks), sum(kept), len(quotes), len(sent), len(quotes) - len(sent)))

    prompt = load_prompt()
    sampling = {"temperature": 0.0, "max_tokens": args.max_tokens, "seed": 0}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.monotonic()
        gguf = build_model(tmp, "\n".join(b.text for b in books))
        print(f"tiny GGUF built in {time.monotonic() - t0:.1f} s: {gguf.name}", file=sys.stderr)
        original_chunks = [(b, c) for b in books for c in chunk_book(b, args.chunk_lines, 0)]
        every = original_chunks + [(b, c) for b in books for c in chunk_book(b, args.chunk_lines, args.overlap)]
        probe = LlamaCppClient(str(gguf), n_ctx=512, n_threads=args.threads)

        def count(text: str) -> int:
            return len(probe._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

        longest = max(count(probe.render(original_messages(prompt.instructions(speakers[b.id], []), c.text)))
                      for b, c in every)
        example = prompt.instructions(speakers[books[0].id], [])
        instruction_tokens = (count(example), count(split_instructions(example)[1]))
        probe.close()
        n_ctx = longest + args.max_tokens + 64

        stats = {}
        client = LlamaCppClient(str(gguf), n_ctx=n_ctx, n_threads=args.threads)
        t0, calls, total = time.monotonic(), 0, Counter()
        for book, chunk in original_chunks:
            instructions = prompt.instructions(speakers[book.id], [])
            result = client.chat(original_messages(instructions, chunk.text), **sampling)
            calls += 1
            total.update(prompt=result.prompt_tokens, evaluated=result.evaluated_tokens,
                         generated=result.completion_tokens)
        stats["original"] = (len(original_chunks), calls, total, time.monotonic() - t0)
        client.close()

        client = LlamaCppClient(str(gguf), n_ctx=n_ctx, n_threads=args.threads)
        t0, calls, total, chunks = time.monotonic(), 0, Counter(), 0
        cfg = ExtractConfig(chunk_lines=args.chunk_lines, overlap=args.overlap, prefilter=True, temperature=0.0)
        for book in books:
            who = CharacterConfig(name=speakers[book.id], aliases=[], language="fr")
            s = extract_llm([book], who, cfg, tmp / "ours" / f"{book.id}.jsonl", client, sampling=sampling,
                            progress=False)
            chunks += s.chunks
            calls += s.called + s.failed
            total.update(prompt=s.new_tokens["prompt_tokens"], evaluated=s.new_tokens["evaluated_tokens"],
                         generated=s.new_tokens["completion_tokens"])
        stats["ours"] = (chunks, calls, total, time.monotonic() - t0)
        client.close()

    print("\nPre-filter on the chosen speaker (gold quotations from the .ann Source relations)")
    print(f"{'text':40} {'speaker':16} {'chunks':>6} {'kept':>5} {'gold q.':>7} {'in a kept chunk':>15} {'lost':>5}")
    for row in prefilter_rows:
        print(f"{row[0]:40} {row[1]:16} {row[2]:>6} {row[3]:>5} {row[4]:>7} {row[5]:>15} {row[6]:>5}")
    lost = sum(r[6] for r in prefilter_rows)
    print(f"gold quotations of the chosen speakers that no kept chunk holds: {lost}"
          + (" (OK)" if lost == 0 else " (FAIL)"))

    print(f"\nLLM cost, same tiny GGUF, {len(books)} texts, {args.chunk_lines}-paragraph chunks, "
          f"max_tokens={args.max_tokens}")
    print(f"{'approach':9} {'chunks':>6} {'calls':>6} {'prompt tok':>11} {'evaluated':>10} {'generated':>10} {'time s':>7}")
    for label, (chunks, calls, total, seconds) in stats.items():
        print(f"{label:9} {chunks:>6} {calls:>6} {total['prompt']:>11} {total['evaluated']:>10} "
              f"{total['generated']:>10} {seconds:>7.1f}")
    print(f"instructions: {instruction_tokens[0]} tokens; ours evaluates them once (shared prefix), the original "
          f"re-evaluates the {instruction_tokens[1]} that follow the chunk on every call")
    ratio = stats["original"][2]["evaluated"] / max(1, stats["ours"][2]["evaluated"])
    print("(generated tokens come from a random model and are not compared)")
    print(f"ratio: {ratio:.2f} = prompt tokens llama.cpp evaluated, original approach / ours (goal >= 2)")


if __name__ == "__main__":
    main()
