"""LLM cost of both LLM stages on fr-litbank, ours vs the original project's: calls, prompt tokens evaluated, generated.

Everything runs in one process on the same tiny random GGUF (llama-cpp-python, in process), over the
same texts and, for each text, the same chosen speaker: its most frequent *named* gold speaker
(.ann Source relations), with the other names a reader would give it in dantes.yaml (ALIASES, checked
against the texts). Both approaches use the same instruction words; only the layout differs.

Extraction (citations of the chosen speaker):
- original: every 100-paragraph chunk sent, the chunk in the middle of the instructions (task line,
  chunk, then names, rules and output format), no JSON schema, chunks without overlap, a context
  large enough for the longest chunk (about 17k tokens here; its gpt-oss-20b had it).
- ours: `dantes_mlx.extract.llm_method.extract_llm` with its defaults: instructions first and the chunk last
  (llama.cpp re-evaluates only what follows the shared prefix), JSON schema, 10-paragraph overlap,
  chunks also cut to fit llm.n_ctx's default 8192 tokens (the overlap shrinks with them), and the rule
  pre-filter that skips chunks where the speaker is neither named nor quoted.
Generation (3 instruction/response pairs per citation), from the same citations: the chosen
speaker's gold quotations (incises cut out, as extract writes them), with the narration before them
as context:
- original: one prompt per citation, the citation in the middle of the instructions, no schema, the
  3 pairs asked as JSON objects written one after the other (as in reference/raw_generation_outputs).
- ours: `dantes_mlx.generate.pairs.generate_pairs`: fixed instructions first, the citation last, JSON schema.

Prompt tokens "evaluated" are those llama.cpp actually decoded after reusing the previous prompt's
prefix, as LlamaCppClient measures them. Generated tokens come from a random model: printed, not
compared.

Where the goal (>= 2) stands, and why: generation alone saves about 3.9x, but extraction is about 80%
of the original's cost here and saves only about 1.1x. Extraction must read the book once; what it can
skip is text where the character is absent, and these excerpts centre on the chosen speaker: the
pre-filter keeps 19 of 23 chunks, and even chunks of 2,000 tokens would leave about 80% of the text
to read. So on these texts a 2x total needs leaving out half the text around the protagonist. The
bench prints that ceiling, measured: the tokens of the text in kept chunks, each paragraph once, against
the original's whole cost. Any method that reads every kept paragraph cannot do better, even with free
instructions and free generation: about 1.6 here. (Generation runs on the 78 quotations fr-litbank
names the speaker of; their lines behind a bare "il"/"elle", which fr-litbank leaves unresolved, would
add generation, where ours saves most: about 90 more would lift the ceiling to 2, and the measured
ratio to about 1.5.)

Finer pre-filter (ExtractConfig.focus_window): inside kept chunks, send only the paragraphs within
N of one where the rules see the speaker (named, quoted, or in an exchange with them). The recall
table checks, per N and text, that no gold quotation of the chosen speaker is left out. Caveat
found by reading the texts: fr-litbank has no coreference, so "gold quotations of the speaker" are
only those whose Source mention is the name or an alias, which sit next to it by construction. The
last column counts gold quotations attributed to a bare pronoun that the windows leave out. Reading
those left out by a scene-aware variant that keeps about 55% of the text (exchanges broken by at most
one paragraph of narration) found 6 of the chosen speakers' own lines among them, 7 counting a doubtful
one (Bouvard's "Mon oncle est mort ! j'hérite !", Louisa's "Tu veux donc m'étrangler ?", three lines
of Élisabeth's own diary), about 6% of their lines. That is the price of the 2x here, so the option stays off by default; `--focus-window N` adds
its LLM run to the extraction table (N=2: about 1.9x in total).

Run: python bench/generate_throughput.py   (under a minute on 2 idle CPU cores, about three when busy)
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "fr-litbank-dev"
NOT_NAMES = {"il", "elle", "ils", "elles", "je", "tu", "on", "nous", "vous", "le", "la", "les", "l'", "l’",
             "un", "une", "des", "mon", "ma", "mes", "son", "sa", "ses", "ce", "cette", "celui", "celle"}
PRONOUNS = {"il", "elle", "ils", "elles", "je", "j'", "tu", "on", "nous", "vous"}
STUDY = (0, 1, 2, 3, 5)
# The other names a reader gives each chosen speaker in dantes.yaml (as Dantès gets "le comte", "Sinbad"...),
# checked against the texts: Pauline's Laurence is "la voyageuse" and "l'étrangère" before she is named,
# "l'actrice" after; Sarrasine is "l'artiste"; Claude Lantier "le peintre"; Élisabeth Seton "Mme Seton".
ALIASES = {"Laurence": ["la voyageuse", "l'étrangère", "l'actrice"], "Sarrasine": ["l'artiste"],
           "Claude": ["le peintre"], "Élisabeth": ["Madame Seton", "Mme Seton"]}


# -- gold ---------------------------------------------------------------------------------------------
def read_gold(ann: Path) -> tuple[dict, list[tuple[str, str]]]:
    """Text-bound annotations {id: (kind, spans, text)} and Source relations (entity id, quote id)."""
    spans, sources = {}, []
    for line in ann.read_text(encoding="utf-8").splitlines():
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


def chosen_speaker(spans: dict, sources: list) -> tuple[str, list[str], list[list[tuple[int, int]]]]:
    """The most frequent named speaker, their aliases, and the spans (incises cut out) of each gold quotation
    whose Source mention is the name or an alias."""
    from dantes_mlx.fr.speakers import normalise_speaker

    counts = Counter(spans[e][2] for e, _ in sources if is_name(spans[e][2]))
    name = counts.most_common(1)[0][0]
    aliases = ALIASES.get(name, [])
    forms = {normalise_speaker(n) for n in (name, *aliases)}
    return name, aliases, [spans[q][1] for e, q in sources if normalise_speaker(spans[e][2]) in forms]


def pronoun_quotes(spans: dict, sources: list) -> list[tuple[int, int]]:
    """(start, end) of the gold quotations whose Source mention is a bare pronoun (anyone's)."""
    return [(spans[q][1][0][0], spans[q][1][-1][1]) for e, q in sources
            if spans[e][2].lower().replace("’", "'") in PRONOUNS]


class Text:
    """One fr-litbank text, its chosen speaker, their gold quotations and the pronoun-attributed ones."""

    def __init__(self, path: Path):
        from dantes_mlx.extract.chunks import Book

        self.book = Book(path.stem, path.read_text(encoding="utf-8"))
        spans, sources = read_gold(path.with_suffix(".ann"))
        self.name, self.aliases, self.quotes = chosen_speaker(spans, sources)
        self.bounds = [(q[0][0], q[-1][1]) for q in self.quotes]
        self.pronoun = pronoun_quotes(spans, sources)


# -- what the extraction LLM reads ----------------------------------------------------------------------
def our_chunks(text: Text, cfg, client, max_tokens: int) -> list:
    """(chunk, kept by the pre-filter) exactly as extract_llm cuts and filters them for this client."""
    from dantes_mlx.config import CharacterConfig
    from dantes_mlx.extract.llm_method import chunks_to_send
    from dantes_mlx.extract.prompt import citation_prompt as load_prompt
    from dantes_mlx.extract.chunks import chunk_budget, token_counter

    budget = chunk_budget(client, load_prompt(), text.name, text.aliases, max_tokens, cfg.chunk_tokens)
    who = CharacterConfig(name=text.name, aliases=text.aliases, language="fr")
    return chunks_to_send(text.book, who, cfg, budget, token_counter(client))


def recall_study(texts: list[Text], cfg, client, max_tokens: int) -> dict:
    """{N: {text id: (kept chunks, chunks, gold kept, gold lost, chars sent, pronoun quotes kept, lost)}}.

    N = None is the chunk pre-filter alone; N >= 0 adds focus windows of N paragraphs.
    """
    from dantes_mlx.extract.focus import focus_paragraphs, paragraph_offsets, window_runs

    study: dict = {}
    for text in texts:
        kept = our_chunks(text, cfg, client, max_tokens)
        chunks = [c for c, _ in kept]
        seen = {c.id: (paragraph_offsets(c.text), focus_paragraphs(c.text, text.name, text.aliases))
                for c, k in kept if k}
        for n in (None, *STUDY):
            sent = []  # absolute (start, end) spans the LLM reads
            for c, k in kept:
                if k:
                    paras, hits = seen[c.id]
                    runs = [(0, len(c.text))] if n is None else window_runs(paras, hits, n)
                    sent += [(c.start + a, c.start + b) for a, b in runs]
            inside = lambda s, e: any(a <= s and e <= b for a, b in sent)
            gold = sum(inside(s, e) for s, e in text.bounds)
            in_kept = [(s, e) for s, e in text.pronoun if any(k and c.start <= s and e <= c.end for c, k in kept)]
            pron = sum(inside(s, e) for s, e in in_kept)
            study.setdefault(n, {})[text.book.id] = (sum(k for _, k in kept), len(chunks), gold,
                                                     len(text.bounds) - gold, sum(b - a for a, b in sent),
                                                     pron, len(in_kept) - pron)
    return study


def kept_text_tokens(texts: list[Text], cfg, client, max_tokens: int) -> int:
    """Tokens of the text inside the chunks the pre-filter keeps, each paragraph counted once (no overlap)."""
    count, total = client.count_tokens, 0
    for text in texts:
        end = 0
        for chunk, kept in our_chunks(text, cfg, client, max_tokens):
            if kept and chunk.end > end:
                total += count(text.book.text[max(chunk.start, end):chunk.end])
            end = max(end, chunk.end) if kept else end
    return total


def print_recall(study: dict, texts: list[Text]) -> None:
    print("\nWhat extraction sends, and the chosen speaker's gold quotations it leaves out (no LLM)")
    print(f"{'':36} {'':16} {'':>6} {'':>4} {'':>4} {'gold quotations left out':^{9 * len(study)}}")
    print(f"{'text':36} {'speaker':16} {'chunks':>6} {'kept':>4} {'gold':>4} "
          + " ".join(f"{'chunks' if n is None else f'N={n}':>8}" for n in study))
    for text in texts:
        row = [study[n][text.book.id] for n in study]
        print(f"{text.book.id[:36]:36} {text.name[:16]:16} {row[0][1]:>6} {row[0][0]:>4} {len(text.bounds):>4} "
              + " ".join(f"{r[3]:>8}" for r in row))
    print(f"\n{'what is sent':26} {'gold left out':>13} {'text sent':>10}   "
          "pronoun-attributed gold quotations left out")
    base = sum(r[4] for r in study[None].values())
    for n, rows in study.items():
        label = "kept chunks (pre-filter)" if n is None else f"+ focus_window={n}"
        lost, sent = sum(r[3] for r in rows.values()), sum(r[4] for r in rows.values())
        pron, pron_lost = sum(r[5] for r in rows.values()), sum(r[6] for r in rows.values())
        print(f"{label:26} {lost:>13} {sent / base:>10.0%}   {pron_lost:>3} of {pron + pron_lost} in kept chunks"
              + ("   FAIL" if lost else ""))
    print("(fr-litbank has no coreference: a gold quotation whose Source is a bare pronoun may be the chosen "
          "speaker's;\n reading Pauline finds two of Laurence's among those every focus window above leaves out)")


# -- prompts of the original project ----------------------------------------------------------------------
def original_extraction(instructions: str, chunk: str) -> list[dict]:
    """The original layout: task line, the chunk, then the rest of the same instructions (no schema)."""
    task, rest = instructions.split("\n\n", 1)
    rest = rest.rstrip().removesuffix("Extrait :").rstrip()
    return [{"role": "user", "content": f"{task}\n\nExtrait :\n{chunk}\n\n{rest}"}]


def original_generation(messages: list[dict], k: int) -> list[dict]:
    """The original layout: task line, the citation, then the rest, k JSON objects one after the other."""
    task, rest = messages[0]["content"].split("\n\n", 1)
    rest = rest[:rest.index("Réponds uniquement")] + (
        f'Réponds uniquement par {k} objets JSON {{"instruction": "...", "response": "..."}} écrits à la '
        "suite, sans aucun texte autour.")
    return [{"role": "user", "content": f"{task}\n\n{messages[1]['content']}\n\n{rest}"}]


def gutenberg_layout(text: str) -> str:
    """Paragraphs hard-wrapped at 70 columns with blank lines between them, as in a Gutenberg file."""
    return "\n\n".join(textwrap.fill(p, 70) for p in text.split("\n") if p.strip()) + "\n"


def citations_of(text: Text) -> list[dict]:
    """The chosen speaker's gold quotations as citation rows (what extract writes, what generate reads)."""
    from dantes_mlx.extract.rows import context_before
    from dantes_mlx.extract.grounding import join_spoken

    rows = []
    for spans in text.quotes:
        start, end = spans[0][0], spans[-1][1]
        rows.append({"source_id": f"{text.book.id}:{start}-{end}", "citation": join_spoken(text.book.text, spans),
                     "contexte": context_before(text.book.text, start), "provenance": {}})
    return rows


def persona(text: Text) -> str:
    return (f"Tu es {text.name}, personnage de « {text.book.id.replace('_', ' ')} ». Tu parles le français "
            "soutenu du livre et tu vouvoies ton interlocuteur.")


# -- runs -----------------------------------------------------------------------------------------------------
class Cost:
    """What one approach of one stage cost."""

    def __init__(self, label: str):
        self.label, self.items, self.calls, self.tokens, self.seconds = label, 0, 0, Counter(), 0.0

    def add(self, prompt: int, evaluated: int, generated: int, calls: int = 1) -> None:
        self.calls += calls
        self.tokens.update(prompt=prompt, evaluated=evaluated, generated=generated)

    def __iadd__(self, other: "Cost") -> "Cost":
        self.items, self.calls, self.seconds = self.items + other.items, self.calls + other.calls, \
            self.seconds + other.seconds
        self.tokens.update(other.tokens)
        return self


def run_original_extraction(client, texts, prompt, chunk_lines, sampling, layout) -> Cost:
    from dantes_mlx.extract.chunks import Book, chunk_book

    cost, t0 = Cost("original"), time.monotonic()
    for text in texts:
        book = text.book if layout == "paragraphs" else Book(text.book.id, gutenberg_layout(text.book.text))
        for chunk in chunk_book(book, chunk_lines, 0):
            r = client.chat(original_extraction(prompt.instructions(text.name, text.aliases), chunk.text), **sampling)
            cost.items += 1
            cost.add(r.prompt_tokens, r.evaluated_tokens, r.completion_tokens)
    cost.seconds = time.monotonic() - t0
    return cost


def run_our_extraction(client, texts, cfg, sampling, tmp: Path, label: str) -> Cost:
    from dantes_mlx.config import CharacterConfig
    from dantes_mlx.extract.llm_method import extract_llm

    cost, t0 = Cost(label), time.monotonic()
    for text in texts:
        who = CharacterConfig(name=text.name, aliases=text.aliases, language="fr")
        s = extract_llm([text.book], who, cfg, tmp / label / f"{text.book.id}.jsonl", client, sampling=sampling,
                        progress=False)
        cost.items += s.chunks
        n = s.new_tokens
        cost.add(n["prompt_tokens"], n["evaluated_tokens"], n["completion_tokens"], s.called + s.failed)
    cost.seconds = time.monotonic() - t0
    return cost


def run_original_generation(client, texts, sampling, k: int) -> Cost:
    from dantes_mlx.config import CharacterConfig
    from dantes_mlx.llm.prompt import load_prompt

    prompt, cost, t0 = load_prompt("generate", "fr"), Cost("original"), time.monotonic()
    for text in texts:
        who = CharacterConfig(name=text.name, aliases=text.aliases, language="fr", persona=persona(text))
        for row in citations_of(text):
            ours = prompt.messages(name=who.name, persona=who.persona, k=k, contexte=row["contexte"] or "(aucun)",
                                   citation=row["citation"])
            r = client.chat(original_generation(ours, k), **sampling)
            cost.items += 1
            cost.add(r.prompt_tokens, r.evaluated_tokens, r.completion_tokens)
    cost.seconds = time.monotonic() - t0
    return cost


def run_our_generation(client, texts, sampling, k: int, tmp: Path) -> Cost:
    from dantes_mlx.config import CharacterConfig, GenerateConfig
    from dantes_mlx.generate.pairs import generate_pairs

    cost, t0 = Cost("ours"), time.monotonic()
    for text in texts:
        who = CharacterConfig(name=text.name, aliases=text.aliases, language="fr", persona=persona(text))
        rows = citations_of(text)
        s = generate_pairs(rows, client, tmp / "pairs" / f"{text.book.id}.jsonl", GenerateConfig(pairs_per_citation=k),
                           who, sampling=sampling, progress=False).stats
        cost.items += len(rows)
        cost.add(s.prompt_tokens, s.evaluated_tokens, s.completion_tokens, s.calls + s.failed)
    cost.seconds = time.monotonic() - t0
    return cost


def build_model(workdir: Path, corpus: str) -> Path:
    """The tiny random Mistral as an f16 GGUF, as small as llama.cpp allows: long prompts cost attention.

    Its tokenizer learns the texts, so a token is about 4 characters, as with a real model's vocabulary.
    """
    from dantes_mlx.export.gguf import write_gguf
    from dantes_mlx.models.tiny import build_tiny_model, builtin_corpus

    folder = build_tiny_model(workdir / "tiny", builtin_corpus() + "\n" + corpus, vocab_size=16384,
                              hidden_size=32, num_layers=1, num_heads=1, num_kv_heads=1, intermediate_size=64)
    return write_gguf(folder, workdir / "tiny-f16.gguf", outtype="f16")


def print_costs(title: str, costs: list[Cost], unit: str) -> None:
    print(f"\n{title}")
    print(f"{'approach':16} {unit:>9} {'calls':>6} {'prompt tok':>11} {'evaluated':>10} {'generated':>10} "
          f"{'time s':>7}")
    for c in costs:
        print(f"{c.label:16} {c.items:>9} {c.calls:>6} {c.tokens['prompt']:>11} {c.tokens['evaluated']:>10} "
              f"{c.tokens['generated']:>10} {c.seconds:>7.1f}")
    if len(costs) >= 2:
        print(f"evaluated prompt tokens, original / ours: "
              f"{costs[0].tokens['evaluated'] / max(1, costs[1].tokens['evaluated']):.2f}")


def main() -> None:
    from dantes_mlx.config import ExtractConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="fr-litbank folder (NAME.txt + NAME.ann)")
    parser.add_argument("--chunk-lines", type=int, default=100, help="ours: paragraphs per chunk")
    parser.add_argument("--overlap", type=int, default=10, help="ours: paragraphs of overlap")
    parser.add_argument("--original-lines", type=int, default=100,
                        help="the original's chunk size (the issue fixes it at 100 lines)")
    parser.add_argument("--chunk-tokens", type=int, default=0,
                        help="ours: most tokens of text per chunk (0: what n_ctx holds, the default)")
    parser.add_argument("--pairs", type=int, default=3, help="pairs asked per citation")
    parser.add_argument("--max-tokens", type=int, default=24, help="tokens generated per call (kept small)")
    parser.add_argument("--focus-window", type=int, default=ExtractConfig().focus_window,
                        help="also run ours with this focus window (0: the default run only)")
    parser.add_argument("--original-layout", choices=["paragraphs", "gutenberg"], default="paragraphs",
                        help="what the original's '100 lines' are: paragraphs (conservative) or 70-column "
                             "lines as in the Gutenberg file it read (smaller chunks, more calls)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data}: fr-litbank dev folder not found (clone the shared data next to the repo)")

    from dantes_mlx.config import LLMConfig
    from dantes_mlx.extract.prompt import citation_prompt as load_prompt
    from dantes_mlx.llm.llamacpp import LlamaCppClient

    texts = [Text(path) for path in sorted(args.data.glob("*.txt"))]
    prompt = load_prompt()
    sampling = {"temperature": 0.0, "max_tokens": args.max_tokens, "seed": 0}
    ours_cfg = ExtractConfig(chunk_lines=args.chunk_lines, overlap=args.overlap, chunk_tokens=args.chunk_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.monotonic()
        gguf = build_model(tmp, "\n".join(t.book.text for t in texts))
        print(f"\ntiny GGUF built in {time.monotonic() - t0:.1f} s: {gguf.name}", file=sys.stderr)
        # The original sends whole 100-paragraph chunks (the longest is about 17k tokens with this vocabulary:
        # its gpt-oss-20b had the context for them); ours runs with llm.n_ctx's default and cuts its chunks
        # to fit it, as `dantes-mlx extract` does.
        n_ctx = {"original": 24576, "ours": LLMConfig().n_ctx}

        def client(who: str) -> LlamaCppClient:  # a fresh model per run: no prefix carried from another run
            return LlamaCppClient(str(gguf), n_ctx=n_ctx[who], n_threads=args.threads, verbose=False)

        llm = client("ours")
        print_recall(recall_study(texts, ours_cfg, llm, args.max_tokens), texts)
        kept_tokens = kept_text_tokens(texts, ours_cfg, llm, args.max_tokens)
        llm.close()
        extraction, generation = [], []
        for stage, who, run in (
                (extraction, "original", lambda c: run_original_extraction(c, texts, prompt, args.original_lines,
                                                                           sampling, args.original_layout)),
                (extraction, "ours", lambda c: run_our_extraction(c, texts, ours_cfg, sampling, tmp, "ours")),
                (generation, "original", lambda c: run_original_generation(c, texts, sampling, args.pairs)),
                (generation, "ours", lambda c: run_our_generation(c, texts, sampling, args.pairs, tmp))):
            llm = client(who)
            stage.append(run(llm))
            llm.close()
        if args.focus_window > 0:
            llm = client("ours")
            cfg = replace(ours_cfg, focus_window=args.focus_window)
            extraction.append(run_our_extraction(llm, texts, cfg, sampling, tmp, f"ours+focus{args.focus_window}"))
            llm.close()

    layout = (f"{args.original_lines} paragraphs" if args.original_layout == "paragraphs"
              else f"{args.original_lines} lines of 70 columns")
    print_costs(f"Extraction: {len(texts)} texts, original chunks of {layout}, ours {args.chunk_lines} paragraphs "
                f"+ {args.overlap} overlap, max_tokens={args.max_tokens}", extraction, "chunks")
    print_costs(f"Generation: {sum(len(t.quotes) for t in texts)} gold citations, {args.pairs} pairs asked per "
                f"citation, max_tokens={args.max_tokens}", generation, "citations")
    combined = [Cost(label) for label in ("original", "ours")]
    for total, parts in zip(combined, zip(extraction, generation)):
        for part in parts:
            total.items += part.items
            total.calls += part.calls
            total.tokens.update(part.tokens)
            total.seconds += part.seconds
    print_costs("Both stages", combined, "items")
    print("(generated tokens come from a random model and are not compared)")
    ratio = combined[0].tokens["evaluated"] / max(1, combined[1].tokens["evaluated"])
    defaults = ExtractConfig()
    settings = ("default settings" if (args.chunk_lines, args.overlap, args.chunk_tokens) ==
                (defaults.chunk_lines, defaults.overlap, defaults.chunk_tokens)
                else f"chunks of {args.chunk_lines} paragraphs + {args.overlap} overlap")
    print(f"\nCeiling on these texts: the pre-filter keeps {kept_tokens} tokens of text. Any method that reads each "
          f"kept paragraph once,\neven with free instructions and free generation, evaluates at least that: "
          f"{combined[0].tokens['evaluated']} / {kept_tokens} = {combined[0].tokens['evaluated'] / kept_tokens:.2f} "
          f"at most.")
    print(f"ratio: {ratio:.2f} = prompt tokens llama.cpp evaluated over extraction + generation, original approach / "
          f"ours with {settings} (goal >= 2)")


if __name__ == "__main__":
    main()
