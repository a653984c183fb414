"""The prepare, validate and stats stages' entries: settings from dantes.yaml and flags, the tokenizer loaded once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dantes_mlx.card.lookup import resolve_persona
from dantes_mlx.config import PrepareConfig, TrainConfig, section
from dantes_mlx.dataset.prepare import PrepareReport, check_paths, prepare
from dantes_mlx.dataset.stats import DatasetStats, dataset_stats
from dantes_mlx.dataset.validate import ValidationReport, validate_dir
from dantes_mlx.models.hub import load_tokenizer
from dantes_mlx.outputs import check_output
from dantes_mlx.stage import Log
from dantes_mlx.workspace import Workspace


def training_length(prepare_cfg: PrepareConfig, train: TrainConfig, flag: int | None = None) -> int:
    """The token limit rows are checked against: the flag, else the smaller of prepare.max_seq_length and
    train.max_seq_length (training cuts there)."""
    return flag if flag is not None else min(prepare_cfg.max_seq_length, train.max_seq_length)


def tokenizer_name(flag: str | None, prepare_cfg: PrepareConfig, train: TrainConfig) -> str:
    """The tokenizer for token counts: the flag, else prepare.tokenizer, else train.base_model ('none' skips)."""
    return flag if flag is not None else prepare_cfg.tokenizer or train.base_model


@dataclass
class PrepareSettings:
    """What one prepare run reads: the prepare section (its length limit resolved), persona, tokenizer, batch."""
    prepare: PrepareConfig
    persona: str
    tokenizer: str
    batch_size: int
    inputs: tuple = ()           # pairs and other datasets; none: the workspace's pairs files
    output: str | None = None    # else data/dataset
    persona_source: str = ""     # where the persona came from (the log says it): the settings file, or the card

    @classmethod
    def from_config(cls, config: dict, *, inputs: tuple = (), output: str | None = None,
                    tokenizer: str | None = None, **flags) -> "PrepareSettings":
        prep = section(PrepareConfig, config, {**flags, "tokenizer": tokenizer})
        train = section(TrainConfig, config)
        prep.max_seq_length = training_length(prep, train, flags.get("max_seq_length"))
        persona = resolve_persona(config)
        return cls(prep, persona.text, tokenizer_name(tokenizer, prep, train), train.batch_size, tuple(inputs),
                   output, persona.source)


def run_prepare(settings: PrepareSettings, workspace: Workspace, log: Log) -> PrepareReport:
    """Leak-free train/valid/test.jsonl from the inputs, then validated (errors fail the stage)."""
    files = list(settings.inputs) or workspace.pairs_files()
    out = check_paths(files, settings.output or workspace.dataset, settings.prepare)  # before a tokenizer loads
    if settings.persona_source and settings.prepare.system_prompt:
        log(f"persona: {settings.persona_source}")
    tokenizer, note = load_tokenizer(settings.tokenizer)
    return prepare(files, out, settings.prepare, settings.persona, tokenizer, note, settings.batch_size)


@dataclass
class ValidateSettings:
    """What one validate run reads: the folder, tokenizer, length limit, near-duplicate threshold and fix."""
    tokenizer: str
    max_seq_length: int
    near_dup_threshold: float
    batch_size: int
    folder: str | None = None    # else data/dataset
    fix: str | None = None       # truncate or drop over-long rows

    @classmethod
    def from_config(cls, config: dict, *, folder: str | None = None, tokenizer: str | None = None,
                    max_seq_length: int | None = None, fix: str | None = None) -> "ValidateSettings":
        prep = section(PrepareConfig, config, {"max_seq_length": max_seq_length})
        train = section(TrainConfig, config)
        return cls(tokenizer_name(tokenizer, prep, train), training_length(prep, train, max_seq_length),
                   prep.near_dup_threshold, train.batch_size, folder, fix)


def run_validate(settings: ValidateSettings, workspace: Workspace, log: Log) -> ValidationReport:
    """The checks fine-tuning services run, each problem as file:line; errors fail the stage."""
    tokenizer, note = load_tokenizer(settings.tokenizer)
    return validate_dir(Path(settings.folder) if settings.folder else workspace.dataset, tokenizer, note,
                        settings.max_seq_length, settings.near_dup_threshold, settings.fix, settings.batch_size)


@dataclass
class StatsSettings:
    """What one stats run reads: the folder, the tokenizer, the histogram's path and how many openings to list."""
    tokenizer: str
    folder: str | None = None    # else data/dataset
    plot: str | None = None      # else FOLDER/lengths.png
    top: int = 10

    @classmethod
    def from_config(cls, config: dict, *, folder: str | None = None, tokenizer: str | None = None,
                    plot: str | None = None, top: int = 10) -> "StatsSettings":
        prep, train = section(PrepareConfig, config), section(TrainConfig, config)
        return cls(tokenizer_name(tokenizer, prep, train), folder, plot, top)


def run_stats(settings: StatsSettings, workspace: Workspace, log: Log) -> DatasetStats:
    """Counts, token lengths (and their histogram), label balance, repeated answer openings."""
    folder = Path(settings.folder) if settings.folder else workspace.dataset
    plot = check_output(settings.plot or folder / "lengths.png", inputs=workspace.split_files(folder),
                        flag="--plot", example="lengths.png")
    tokenizer, note = load_tokenizer(settings.tokenizer)
    result = dataset_stats(folder, tokenizer, plot)
    result.token_note, result.top = note, settings.top
    return result
