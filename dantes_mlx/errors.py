"""One plain exception family whose messages name the file, the line and the fix; only the CLI makes them click errors."""

from __future__ import annotations

import importlib
from pathlib import Path


class DantesError(Exception):
    """A user-facing error: the command line prints it without a traceback and exits with `exit_code`."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | Path | None = None,
                 line: int | None = None, fix: str | None = None):
        self.path, self.line, self.fix, self.detail = path, line, fix, message
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        self.message = where + message + (f"\n  fix: {fix}" if fix else "")
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class InputError(DantesError):
    """Bad input file or record."""


class ConfigError(DantesError):
    """Bad setting in dantes.yaml or on the command line."""


class ModelError(DantesError):
    """A model could not be found, downloaded or loaded."""


class MissingDependency(DantesError):
    """An optional dependency is not installed; the message gives the pip command."""

    def __init__(self, package: str, purpose: str, pip_name: str | None = None):
        super().__init__(f"{package} is needed for {purpose} but is not installed",
                         fix=f"pip install '{pip_name or package}'")


class StageFailed(DantesError):
    """Some LLM calls of a stage failed: what finished is stored and the previous output kept; exit status 1.
    `stops_run` False: the stage's outputs are complete and `run` goes on (only a last step, such as
    registering with Ollama, failed)."""

    def __init__(self, message: str, *, stops_run: bool = True, **where):
        super().__init__(message, **where)
        self.stops_run = stops_run


class Interrupted(DantesError):
    """Ctrl-C during a stage: what it finished is stored; running the same command again resumes."""

    exit_code = 130


class ParityError(DantesError):
    """The exported model does not behave like the trained one."""


def require(module: str, purpose: str, pip_name: str | None = None):
    """Import an optional module or raise MissingDependency with the exact pip command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(module, purpose, pip_name) from exc
