"""Dataset statistics: rows per split, token lengths (with a PNG histogram), label balance, answer openings."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dantes_mlx.dataset.validate import (Problem, count_tokens, qa_pairs, read_split, row_problems, split_files,
                                         token_summary)
from dantes_mlx.errors import InputError
from dantes_mlx.fr.text import fold


@dataclass
class DatasetStats:
    """What `dantes-mlx stats` prints."""
    folder: str
    rows: dict = field(default_factory=dict)
    lengths: dict = field(default_factory=dict)  # split -> token (or word) counts per row
    unit: str = "tokens"
    labels: dict = field(default_factory=dict)  # split -> Counter of labels
    openings: list = field(default_factory=list)  # (opening, count) most common first
    answers: int = 0
    plot: str | None = None
    unreadable: list = field(default_factory=list)  # Problems: lines left out of every number (validate errors)
    token_note: str = ""  # why lengths are in words (no tokenizer)
    top: int = 10         # answer openings listed

    def summary(self, top: int | None = None) -> str:
        top = self.top if top is None else top
        lines = [f"lengths in words ({self.token_note})"] if self.unit == "words" and self.token_note else []
        lines.append(f"{self.folder}: " + ", ".join(f"{s} {n}" for s, n in self.rows.items())
                     + f" rows (total {sum(self.rows.values())})")
        if self.unreadable:
            lines.append(f"{len(self.unreadable)} row(s) left out of these numbers: not valid training rows "
                         f"(first: {self.unreadable[0]}); `dantes-mlx validate` lists them all")
        for split, counts in self.lengths.items():
            if counts:
                s = token_summary(counts)
                lines.append(f"  {split:5s} {self.unit}: min {s['min']}  median {s['median']:.0f}  "
                             f"p95 {s['p95']:.0f}  max {s['max']}")
        if self.labels:
            lines.append("label balance:")
            names = sorted({name for c in self.labels.values() for name in c})
            for name in names:
                cells = []
                for split, c in self.labels.items():
                    total = sum(c.values()) or 1
                    cells.append(f"{split} {c[name]} ({100 * c[name] / total:.0f}%)")
                lines.append(f"  {name:12s} " + "  ".join(cells))
        if self.openings:
            lines.append(f"top answer openings (of {self.answers} answers; many repeats = template collapse):")
            lines += [f"  {n:5d}  {100 * n / max(1, self.answers):4.1f}%  {text}" for text, n in self.openings[:top]]
        if self.plot:
            lines.append(f"histogram: {self.plot}")
        return "\n".join(lines)


    def failure(self) -> InputError | None:
        """Rows that are not valid training rows: counted, the first named, the numbers computed without them."""
        if not self.unreadable:
            return None
        first = self.unreadable[0]
        return InputError(f"{len(self.unreadable)} row(s) are not valid training rows and were left out of the "
                          f"numbers above; this is the first: {first.message}", path=first.path, line=first.line,
                          fix=f"`dantes-mlx validate {self.folder}` lists every one; repair them or rebuild the "
                              "folder with `dantes-mlx prepare`")


def answer_opening(answer: str, words: int = 4) -> str:
    """The first words of an answer, normalised (case, quotes, punctuation)."""
    return " ".join(fold(answer).split()[:words])


def plot_lengths(lengths: dict[str, list[int]], unit: str, path: Path) -> Path:
    """Overlaid length histograms per split, written as a PNG (matplotlib's Agg backend, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    every = [n for counts in lengths.values() for n in counts]
    bins = min(50, max(5, len(set(every))))
    for split, counts in lengths.items():
        if counts:
            # Each split as a share of its own rows, so a small test split stays visible next to train.
            ax.hist(counts, bins=bins, range=(min(every), max(every)), weights=[100 / len(counts)] * len(counts),
                    alpha=0.5, label=f"{split} ({len(counts)} rows)")
    ax.set_xlabel(f"{unit} per row")
    ax.set_ylabel("% of the split's rows")
    ax.set_title("Row lengths per split")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def dataset_stats(folder: str | Path, tokenizer=None, plot_path: str | Path | None = None,
                  opening_words: int = 4) -> DatasetStats:
    """Statistics of a prepared folder; lengths are tokens with a tokenizer, else words (stated in `unit`)."""
    folder = Path(folder)
    stats = DatasetStats(str(folder), unit="tokens" if tokenizer is not None else "words")
    openings: Counter = Counter()
    for split, path in split_files(folder).items():
        rows, problems = read_split(path, split)
        problems += [Problem(r.path, r.line, row_problems(r)[0]) for r in rows if row_problems(r)]
        stats.unreadable += sorted(problems, key=lambda p: p.line or 0)
        rows = [r for r in rows if not row_problems(r)]
        stats.rows[split] = len(rows)
        stats.lengths[split] = [count_tokens(tokenizer, r.data, r.fmt) if tokenizer is not None
                                else sum(len((q + " " + a).split()) for q, a in qa_pairs(r)) for r in rows]
        labels = Counter(str(r.data["label"]) for r in rows if r.data.get("label") is not None)
        if labels:
            stats.labels[split] = labels
        for row in (r for r in rows if r.data.get("label") is None):  # a label repeats by design
            for _, answer in qa_pairs(row):
                openings[answer_opening(answer, opening_words)] += 1
                stats.answers += 1
    stats.openings = [(text, n) for text, n in openings.most_common() if n > 1]
    if plot_path is not None and any(stats.lengths.values()):
        stats.plot = str(plot_lengths(stats.lengths, stats.unit, Path(plot_path)))
    return stats
