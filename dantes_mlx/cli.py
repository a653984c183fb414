"""The `dantes-mlx` command: a lazy click group that dispatches to each stage package's cli module."""

from __future__ import annotations

import errno
import importlib
import os

import click

from dantes_mlx import __version__
from dantes_mlx.errors import DantesError

# transformers only tokenizes here: its "PyTorch was not found" advice at import is noise on a Mac.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

# name -> (package, attribute of its cli module, one-line help): dantes_mlx.<package>.cli:<attribute>. Modules import
# only on use, so `dantes-mlx --help` stays fast and never loads mlx, llama.cpp or torch.
COMMANDS = {
    "init": ("pipeline", "init", "Write a commented dantes.yaml for a new project."),
    "fetch": ("book", "fetch", "Download Project Gutenberg ebooks (or copy a local file) into data/raw/."),
    "clean": ("book", "clean", "Strip licence text, unwrap lines, record chapters; print stats."),
    "extract": ("extract", "extract", "Extract a character's citations (local LLM or French dialogue rules)."),
    "generate": ("generate", "generate", "Generate instruction/response pairs in the character's voice."),
    "card": ("card", "card", "Build the character card (psychology, style, behaviour) and a persona from it."),
    "prepare": ("dataset", "prepare", "Build leak-free train/valid/test splits in mlx-lm's formats."),
    "validate": ("dataset", "validate", "Check a dataset folder the way fine-tuning services do."),
    "stats": ("dataset", "stats", "Counts, token lengths, label balance and answer openings of a dataset."),
    "import-gguf": ("models", "import_gguf", "Turn a GGUF (or the embedded SmolLM2) into a model folder to train on."),
    "prefs": ("prefs", "prefs", "Preference pairs for dpo/orpo: the in-character answer vs the base model's own."),
    "train": ("train", "train", "Fine-tune with LoRA/DoRA/QLoRA/full (mlx-lm, or a plugin backend)."),
    "backends": ("train", "backends", "List the training backends installed and whether they are usable."),
    "export": ("export", "export", "Export PEFT adapter, GGUF LoRA, fused GGUF and an Ollama Modelfile."),
    "parity": ("export", "parity", "Check that an exported GGUF predicts like the trained model."),
    "chat": ("chat", "chat", "Chat with the fine-tuned model (MLX + adapter, or a GGUF)."),
    "ask": ("chat", "ask", "Ask the fine-tuned model one question."),
    "eval": ("evaluate", "eval_cmd", "Compare base and fine-tuned models; write an HTML/Markdown report."),
    "demo": ("pipeline", "demo", "Run the whole pipeline offline on a built-in scene and a tiny model."),
    "run": ("pipeline", "run", "Run the whole real pipeline from dantes.yaml, each stage resumable."),
}


# The last word on file errors no stage foresaw (permissions, a full disk): a message naming the file, not a traceback.
_OS_FIXES = {errno.EACCES: "check the file's permissions, or choose another path",
             errno.EPERM: "check the file's permissions, or choose another path",
             errno.ENOSPC: "free some disk space, then run the same command again (finished work is kept)",
             errno.EROFS: "choose a path on a writable disk",
             errno.ENOENT: "check the path", errno.EISDIR: "give the path of a file, not a folder",
             errno.ENOTDIR: "a folder in this path is a file: check the path"}


def os_error(exc: OSError) -> DantesError | None:
    """A DantesError for an OSError about a file or the disk, or None for any other (a bug: keep its traceback)."""
    if exc.errno not in _OS_FIXES or (exc.filename is None and exc.errno != errno.ENOSPC):
        return None
    return DantesError(exc.strerror or str(exc), path=exc.filename, fix=_OS_FIXES[exc.errno])


def click_error(exc: DantesError) -> click.ClickException:
    """The click error a DantesError becomes: its message without a traceback, its exit status."""
    error = click.ClickException(exc.message)
    error.exit_code = exc.exit_code
    return error


class LazyGroup(click.Group):
    """A click group whose commands are imported the first time they are used."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DantesError as exc:
            raise click_error(exc) from exc
        except OSError as exc:
            error = os_error(exc)
            if error is None:
                raise
            raise click_error(error) from exc

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        package, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"dantes_mlx.{package}.cli"), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dantes-mlx")
def main():
    """Turn a public-domain book into a persona model you can `ollama run`."""


if __name__ == "__main__":
    main()
