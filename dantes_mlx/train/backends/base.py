"""The TrainBackend protocol every training backend (built in or plugin) implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from dantes_mlx.config import TrainConfig

# What `device()` may answer; `--backend auto` prefers them in this order.
#   metal: MLX on Apple Silicon; cuda: an NVIDIA GPU; cpu-torch: PyTorch on a CPU;
#   cpu: MLX's CPU build (correct but slow: MLX's fast path is Metal).
AUTO_ORDER = ("metal", "cuda", "cpu-torch", "cpu")


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) training run produced."""
    backend: str
    adapter_dir: Path
    steps: int                       # global step reached (micro-batches, resumed runs included)
    train_loss: float | None = None  # last reported train loss
    val_loss: float | None = None    # last reported validation loss
    tokens_per_sec: float | None = None
    peak_memory_gb: float | None = None
    seconds: float = 0.0
    files: dict = field(default_factory=dict)  # role -> path (adapters, config, metrics, plot ...)
    choice: str = ""                 # why this backend ran (set by the train stage, not the backend)


@runtime_checkable
class TrainBackend(Protocol):
    """A way to fine-tune: found through the `dantes_mlx.backends` entry-point group."""

    name: str

    def available(self) -> tuple[bool, str]:
        """(usable here, why or why not) — cheap: never loads a model."""
        ...

    def device(self) -> str:
        """Where it would train, one of AUTO_ORDER (or any other word: never picked by auto)."""
        ...

    def check(self, cfg: "TrainConfig") -> None:
        """Raise ConfigError naming the setting and this backend when a setting is unsupported."""
        ...

    def train(self, cfg: "TrainConfig", data_dir: Path, adapter_dir: Path,
              resume: bool = False) -> TrainResult:
        """Train on data_dir/{train,valid}.jsonl and write adapters/ (see dantes_mlx.train.stage)."""
        ...
