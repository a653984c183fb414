"""Dedupe (exact and MinHash near duplicates), grouping (source id, field, consecutive rows) and the split."""

from __future__ import annotations

import hashlib
import math
import random
import re
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from dantes_mlx.config import split_ratios
from dantes_mlx.errors import ConfigError
from dantes_mlx.fr.text import fold, strip_accents

SPLITS = ("train", "valid", "test")
# group: a group's rows share one split (valid/test: unseen sources); row: memorisation (see split_within_groups).
SPLIT_MODES = ("group", "row")
WORD = re.compile(r"\w+")
TEMPLATE_CHARS = 4000  # a prompt template is looked for in the first and last characters of a text
MIN_LINK_SIMILARITY = 0.05  # floor for small files, where most random pairs share no word at all


def parse_split(spec: str) -> tuple[float, float, float]:
    """'80/10/10' -> (0.8, 0.1, 0.1); two numbers mean no test split. The percentages must add up to 100."""
    ratios = split_ratios(spec)
    if ratios is None:
        raise ConfigError(f"invalid split '{spec}': need two or three percentages that add up to 100, the first "
                          "above 0", path="prepare.split (--split)",
                          fix="give train/valid/test percentages, e.g. 80/10/10")
    return ratios


# ---------------------------------------------------------------- near duplicates (MinHash + LSH)

def shingles(text: str, n: int = 3) -> np.ndarray:
    """Sorted unique 32-bit hashes of the word n-grams of normalised text (one hash when shorter than n)."""
    words = fold(text).split()
    if not words:
        return np.zeros(0, dtype=np.uint64)
    h = np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))
    if len(words) < n:
        h, n = np.array([int(h.sum() % (1 << 32))], dtype=np.uint64), 1
    grams = np.zeros(len(h) - n + 1, dtype=np.uint64)
    for k in range(n):  # polynomial mix of the n word hashes, wrapping in uint64, folded to 32 bits
        grams = grams * np.uint64(0x9E3779B97F4A7C15) + h[k:len(h) - n + 1 + k]
    return np.unique((grams ^ (grams >> np.uint64(32))) & np.uint64(0xFFFFFFFF))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two shingle hash sets."""
    if not len(a) and not len(b):
        return 1.0
    common = len(np.intersect1d(a, b, assume_unique=True))
    return common / (len(a) + len(b) - common)


def _bands_for(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) whose LSH S-curve rises well below `threshold`, so candidates are rarely missed."""
    options = [(b, num_perm // b) for b in range(1, num_perm + 1) if num_perm % b == 0]
    target = max(0.05, threshold - 0.2)
    return min(options, key=lambda br: abs((1 / br[0]) ** (1 / br[1]) - target))


def minhash(sets: list[np.ndarray], num_perm: int = 128, seed: int = 1, chunk: int = 50_000) -> np.ndarray:
    """MinHash signatures (len(sets) x num_perm): min of a multiply-shift hash per permutation, vectorised."""
    rng = np.random.default_rng(seed)
    a = (rng.integers(0, 1 << 63, num_perm, dtype=np.uint64) | np.uint64(1))[:, None]  # odd multipliers
    b = rng.integers(0, 1 << 63, num_perm, dtype=np.uint64)[:, None]
    out = np.full((len(sets), num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
    start = 0
    while start < len(sets):  # batches of documents holding about `chunk` shingles
        stop, total = start, 0
        while stop < len(sets) and (total == 0 or total + len(sets[stop]) <= chunk):
            total += len(sets[stop])
            stop += 1
        batch = [i for i in range(start, stop) if len(sets[i])]
        if batch:
            # (a*h + b) mod 2^64, top 32 bits: multiply-shift hashing (uint64 arithmetic wraps by design)
            values = (a * np.concatenate([sets[i] for i in batch])[None, :] + b) >> np.uint64(32)
            offsets = np.cumsum([0] + [len(sets[i]) for i in batch[:-1]])
            out[batch] = np.minimum.reduceat(values, offsets, axis=1).T
        start = stop
    return out


def near_duplicate_pairs(sets: list[np.ndarray], threshold: float,
                         num_perm: int = 128) -> list[tuple[int, int, float]]:
    """(i, j, jaccard) for i < j whose shingle sets have Jaccard >= threshold (LSH candidates, verified)."""
    if len(sets) < 2:
        return []
    bands, rows = _bands_for(threshold, num_perm)
    signatures = minhash(sets, num_perm)
    candidates: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for i, sig in enumerate(signatures[:, band * rows:(band + 1) * rows]):
            if len(sets[i]):
                buckets[sig.tobytes()].append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    candidates.add((members[x], members[y]))
    pairs = []
    for i, j in sorted(candidates):
        score = jaccard(sets[i], sets[j])
        if score >= threshold:
            pairs.append((i, j, score))
    return pairs


@dataclass
class Drop:
    """A row removed before the split, why, and the row it duplicates."""
    index: int
    reason: str
    kept: int


def _shared_start(token_lists: list[list[str]], need: int) -> list[str]:
    """The longest run of leading tokens that at least `need` of the lists start with."""
    shared: list[str] = []
    alive = token_lists
    while True:
        counts = Counter(t[len(shared)] for t in alive if len(t) > len(shared))
        if not counts or counts.most_common(1)[0][1] < need:
            return shared
        token = counts.most_common(1)[0][0]
        shared.append(token)
        alive = [t for t in alive if len(t) >= len(shared) and t[len(shared) - 1] == token]


def prompt_template(texts: list[str], min_rows: int = 10, share: float = 0.5) -> tuple[str, str]:
    """(prefix, suffix) that most texts share, cut at whitespace: a prompt template such as a classification
    instruction before every e-mail; ("", "") under `min_rows` distinct texts, where it could be content."""
    if len(set(texts)) < min_rows:
        return "", ""
    need = max(2, math.ceil(share * len(texts)))
    prefix = _shared_start([re.split(r"(\s+)", t[:TEMPLATE_CHARS]) for t in texts], need)
    suffix = _shared_start([re.split(r"(\s+)", t[-TEMPLATE_CHARS:])[::-1] for t in texts], need)[::-1]
    # Whole words only: drop a last (first) token that may be the start (end) of a longer word.
    if prefix and not prefix[-1].isspace():
        prefix.pop()
    if suffix and not suffix[0].isspace():
        suffix.pop(0)
    return "".join(prefix), "".join(suffix)


def strip_template(texts: list[str], min_rows: int = 10) -> list[str]:
    """The texts without the prompt template most of them share (see `prompt_template`)."""
    prefix, suffix = prompt_template(texts, min_rows)
    out = []
    for text in texts:
        text = text[len(prefix):] if prefix and text.startswith(prefix) else text
        out.append(text[:len(text) - len(suffix)] if suffix and text.endswith(suffix) else text)
    return out


def near_duplicate_qa(questions: list[str], answers: list[str], threshold: float) -> list[tuple[int, int, float]]:
    """(i, j, similarity) of rows whose questions AND answers both reach `threshold` (Jaccard).

    Judged apart, so that one long answer shared by several questions (a fact asked three ways) or one
    label shared by many e-mails does not make different questions look alike.
    """
    answer_sets = [shingles(a) for a in answers]
    pairs = []
    for i, j, score in near_duplicate_pairs([shingles(q) for q in questions], threshold):
        both = min(score, jaccard(answer_sets[i], answer_sets[j]))
        if both >= threshold:
            pairs.append((i, j, both))
    return pairs


def find_duplicates(texts: list[str], threshold: float, answers: list[str] | None = None) -> list[Drop]:
    """Rows to drop: exact duplicates of normalised (text, answer), then near duplicates (Jaccard >= threshold
    on the texts and on the answers, each judged apart; no answers: the texts alone)."""
    answers = answers if answers is not None else [""] * len(texts)
    drops: dict[int, Drop] = {}
    first: dict[str, int] = {}
    for i, (text, answer) in enumerate(zip(texts, answers)):
        key = hashlib.sha1(f"{fold(text)}\x1f{fold(answer)}".encode("utf-8")).hexdigest()
        if key in first:
            drops[i] = Drop(i, "exact duplicate", first[key])
        else:
            first[key] = i
    alive = [i for i in range(len(texts)) if i not in drops]
    if threshold < 1.0:
        found = near_duplicate_qa([texts[i] for i in alive], [answers[i] for i in alive], threshold)
        for x, y, score in found:
            i, j = alive[x], alive[y]
            if j not in drops and i not in drops:
                drops[j] = Drop(j, f"near duplicate (Jaccard {score:.2f})", i)
    return sorted(drops.values(), key=lambda d: d.index)


# ---------------------------------------------------------------- groups

class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def _tfidf(docs: list[list[str]]) -> list[dict[str, float]]:
    df = Counter(w for doc in docs for w in set(doc))
    n = len(docs)
    vectors = []
    for doc in docs:
        weights = {w: (1 + math.log(c)) * math.log(n / df[w]) for w, c in Counter(doc).items()}
        norm = math.sqrt(sum(v * v for v in weights.values())) or 1.0
        vectors.append({w: v / norm for w, v in weights.items()})
    return vectors


def _cosine(a: dict, b: dict) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(w, 0.0) for w, v in a.items())


# Frequent function words longer than 3 letters (French, English): IDF discounts them on large files,
# this list does it on small ones.
STOP_WORDS = frozenset("""
avec avez avoir cela celle celui cette comme comment dans donc elle elles etait etre fait leur leurs mais
meme nous notre nous pour pourquoi quand quel quelle quelles quels sans selon sont sous tout toute tous
tres vers votre vous about been does from have more that their there these they this what when where which
with would your""".split())


def content_words(text: str) -> list[str]:
    """Words longer than 3 letters, accents folded, cut to 6 letters (a crude stemmer), stop words left out."""
    return [w[:6] for w in WORD.findall(strip_accents(text)) if len(w) > 3 and w not in STOP_WORDS]


def consecutive_runs(texts: list[str], strictness: float = 0.98, window: int = 2,
                     seed: int = 0) -> tuple[list[int], float]:
    """Group runs of consecutive rows about the same thing; returns (run id per row, similarity threshold).

    Two rows up to `window` apart are linked when their TF-IDF cosine (rare words weigh most) beats
    `strictness` of random row pairs, and a link joins every row between them, so a weak middle row
    (a question with different words) stays with its neighbours.
    """
    n = len(texts)
    if n == 0:
        return [], 0.0
    vectors = _tfidf([content_words(t) for t in texts])
    rng = random.Random(seed)
    pairs = [(rng.randrange(n), rng.randrange(n)) for _ in range(min(4000, n * n))]
    background = sorted(_cosine(vectors[i], vectors[j]) for i, j in pairs if abs(i - j) > 2 * window)
    threshold = background[min(len(background) - 1, int(strictness * len(background)))] if background else 0.0
    threshold = max(threshold, MIN_LINK_SIMILARITY)
    reach = list(range(n))
    for i in range(n):
        for j in range(i + 1, min(n, i + window + 1)):
            if _cosine(vectors[i], vectors[j]) >= threshold:
                reach[i] = j
    runs, run, end = [], 0, -1
    for i in range(n):
        if i > end and i > 0:
            run += 1
        runs.append(run)
        end = max(end, reach[i])
    return runs, threshold


def group_ids(keys: list[list[str | None]]) -> list[int]:
    """Connected components of rows that share any non-None key (row i's keys are keys[i]; a slot may hold a list,
    e.g. every citation a conversation cites)."""
    uf = UnionFind(len(keys))
    owner: dict[tuple[int, str], int] = {}
    for i, row_keys in enumerate(keys):
        for slot, value in enumerate(row_keys):
            for key in value if isinstance(value, (list, tuple)) else [value]:
                if key is not None:
                    uf.union(i, owner.setdefault((slot, key), i))
    roots: dict[int, int] = {}
    return [roots.setdefault(uf.find(i), len(roots)) for i in range(len(keys))]


# ---------------------------------------------------------------- split

def _assign(units: list[tuple[int, int]], targets: list[float], done: list[float],
            totals: list[float], total_targets: list[float]) -> dict[int, int]:
    """Greedy: each unit (id, size) goes to the split furthest below its target (ties: overall deficit)."""
    out = {}
    for unit, size in units:
        open_splits = [s for s in range(len(targets)) if total_targets[s] > 0]  # a 0% split gets nothing
        best = max(open_splits, key=lambda s: (targets[s] - done[s], total_targets[s] - totals[s], -s))
        out[unit] = best
        done[best] += size
        totals[best] += size
    return out


def _row_targets(rows: int, ratios: tuple[float, ...], owed: list[float]) -> list[float]:
    """Whole rows of one label per split: each share rounded down, train given at least one (a label never
    trained on cannot be learnt), the rows left over one each to the splits owed most by earlier labels'
    rounding (`owed` is carried from label to label, so the splits' sizes follow the ratios too)."""
    targets = [math.floor(rows * r + 1e-9) for r in ratios]
    if rows and not targets[0]:
        targets[0] = 1
    for s, r in enumerate(ratios):
        owed[s] += rows * r - targets[s]
    short = [s for s in range(len(ratios)) if rows * ratios[s] > targets[s] + 1e-9]  # one more stays within a row
    for s in sorted(short, key=lambda s: (-owed[s], s))[:rows - sum(targets)]:
        targets[s] += 1
        owed[s] -= 1
    return [float(t) for t in targets]


def split_groups(groups: list[int], ratios: tuple[float, ...], seed: int = 0,
                 labels: list[str | None] | None = None) -> list[str]:
    """Split name per row: whole groups only, seeded; stratified by (group majority) label when given.

    With one-row groups, every label's count in every split is within one row of its share, every label
    has a row in train, and the splits' sizes are within one row per label of their shares.
    """
    sizes = Counter(groups)
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    strata: dict[str | None, list[int]] = defaultdict(list)
    group_label: dict[int, str | None] = {}
    if labels is not None:
        votes: dict[int, Counter] = defaultdict(Counter)
        for g, label in zip(groups, labels):
            votes[g][label] += 1
        group_label = {g: min(c.items(), key=lambda kv: (-kv[1], str(kv[0])))[0] for g, c in votes.items()}
    for g in order:
        strata[group_label.get(g)].append(g)
    n = len(groups)
    total_targets = [r * n for r in ratios]
    totals = [0.0] * len(ratios)
    where: dict[int, int] = {}
    owed = [0.0] * len(ratios)
    for label in sorted(strata, key=lambda k: (k is None, str(k))):
        members = strata[label]
        rows = sum(sizes[g] for g in members)
        # Larger groups first (stable within the shuffled order) so small ones can even out the counts.
        units = sorted(((g, sizes[g]) for g in members), key=lambda u: -u[1])
        targets = _row_targets(rows, ratios, owed)
        where.update(_assign(units, targets, [0.0] * len(ratios), totals, total_targets))
    return [SPLITS[where[g]] for g in groups]


def split_within_groups(groups: list[int], ratios: tuple[float, ...], seed: int = 0,
                        labels: list[str | None] | None = None) -> list[str]:
    """Split name per row for fact memorisation (`--split-by row`), seeded.

    Every group keeps a row in train; valid and test take its other rows (other wordings of a trained fact),
    one per group before a second of any group, up to each split's share; one-row groups stay in train.
    With labels, each label's rows are split by its own share, as in `split_groups`.
    """
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    strata: dict[str | None, list[int]] = defaultdict(list)
    for i in order:
        strata[labels[i] if labels is not None else None].append(i)
    names = [SPLITS[0]] * len(groups)
    owed = [0.0] * len(ratios)
    for label in sorted(strata, key=lambda k: (k is None, str(k))):
        members = strata[label]
        seen: Counter = Counter()
        spare = []  # (wording rank within its group, shuffled position, row)
        for position, i in enumerate(members):
            if seen[groups[i]]:
                spare.append((seen[groups[i]], position, i))
            seen[groups[i]] += 1
        targets = _row_targets(len(members), ratios, owed)
        held = [0] * len(ratios)
        for _, _, i in sorted(spare):
            best = max(range(1, len(ratios)), key=lambda s: (targets[s] - held[s], -s))
            if targets[best] - held[best] < 1:
                break
            names[i] = SPLITS[best]
            held[best] += 1
    return names
