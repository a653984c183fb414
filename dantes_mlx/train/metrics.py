"""A run's metrics: metrics.jsonl (strict JSON, appended as training goes) and the loss plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from dantes_mlx.store import read_jsonl, write_jsonl_atomic


class MetricsLog:
    """metrics.jsonl: one JSON object per train or validation report, appended as training goes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, row: dict) -> None:
        """Append one report; a NaN or infinite value is written as null and named in "non_finite" (strict JSON)."""
        bad = [key for key, value in row.items() if isinstance(value, float) and not math.isfinite(value)]
        if bad:
            row = {**{k: (None if k in bad else v) for k, v in row.items()}, "non_finite": bad}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            fh.flush()

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [row for _, row in read_jsonl(self.path)]

    def keep_until(self, step: int) -> None:
        """Drop reports after `step` (written after the checkpoint a resumed run starts from)."""
        if self.path.is_file():
            write_jsonl_atomic(self.path, [r for r in self.rows() if r.get("step", 0) <= step])

    def last(self, key: str):
        values = [r[key] for r in self.rows() if r.get(key) is not None]
        return values[-1] if values else None


def plot_losses(metrics_path: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Render train and validation loss against step to a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = MetricsLog(metrics_path).rows()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, label, style in (("train_loss", "train", "-"), ("val_loss", "valid", "o--")):
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), style, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or "training loss")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend()
    png_path = Path(png_path)
    tmp = png_path.with_name(png_path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path
