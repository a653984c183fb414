"""What every stage offers: `run(settings, workspace, log) -> Summary`, and the Summary its command and `run` print."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

from dantes_mlx.errors import DantesError

Log = Callable[[str], None]  # progress and warnings as a stage goes (stderr on the command line)


@runtime_checkable
class Summary(Protocol):
    """What a stage did, printed the same way by its command and by `run`, and how it failed, if it did."""

    def summary(self) -> str:
        """The result for a person: files written, counts, figures, notes (one line each)."""
        ...

    def failure(self) -> DantesError | None:
        """The error the stage ends with once its summary is shown (exit status 1), or None."""
        ...


@dataclass
class Lines:
    """A Summary that is only lines (stages that either finish or raise)."""
    text: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "\n".join(self.text)

    def failure(self) -> DantesError | None:
        return None


def stderr(message: str) -> None:
    """The default Log: one line on stderr, flushed."""
    print(message, file=sys.stderr, flush=True)
