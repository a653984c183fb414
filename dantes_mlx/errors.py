"""One exception family whose messages name the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path

import click


class DantesError(click.ClickException):
    """A user-facing error: click prints it without a traceback and exits with status 1."""

    def __init__(self, message: str, *, path: str | Path | None = None,
                 line: int | None = None, fix: str | None = None):
        self.path, self.line, self.fix, self.detail = path, line, fix, message
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        text = where + message
        if fix:
            text += f"\n  fix: {fix}"
        super().__init__(text)


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
    """Some LLM calls of a stage failed: what finished is stored and the previous output kept; exit status 1."""


class ParityError(DantesError):
    """The exported model does not behave like the trained one."""


def require(module: str, purpose: str, pip_name: str | None = None):
    """Import an optional module or raise MissingDependency with the exact pip command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(module, purpose, pip_name) from exc
