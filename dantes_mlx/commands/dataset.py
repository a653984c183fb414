"""`dantes-mlx prepare`, `validate` and `stats`: build, check and describe the training dataset."""

from __future__ import annotations

from pathlib import Path

import click

CONFIG_OPTION = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                             help="Settings file (default: dantes.yaml if present).")
TOKENIZER_HELP = "Tokenizer for token counts: local folder or HF id ('none' skips; default: train.base_model)."


def _tokenizer(cfg: dict, flag: str | None, prepare_setting: str = ""):
    """Load the tokenizer named by the flag, else prepare.tokenizer, else train.base_model."""
    from dantes_mlx.config import TrainConfig, section
    from dantes_mlx.validate import load_tokenizer

    return load_tokenizer(flag if flag is not None else prepare_setting or section(TrainConfig, cfg).base_model)


def _length_limit(cfg: dict, prep, flag: int | None) -> int:
    """The flag, else the smaller of prepare.max_seq_length and train.max_seq_length (training cuts there)."""
    from dantes_mlx.config import TrainConfig, section

    return flag if flag is not None else min(prep.max_seq_length, section(TrainConfig, cfg).max_seq_length)


def _batch_size(cfg: dict) -> int:
    from dantes_mlx.config import TrainConfig, section

    return section(TrainConfig, cfg).batch_size


def _default_dir(cfg: dict) -> Path:
    from dantes_mlx.config import ProjectConfig, section

    return Path(section(ProjectConfig, cfg).data_dir) / "dataset"


@click.command("prepare")
@click.argument("inputs", nargs=-1, type=click.Path(dir_okay=False))
@CONFIG_OPTION
@click.option("-o", "--output", default=None, help="Output folder (default: <data_dir>/dataset).")
@click.option("--split", default=None, help="train/valid/test percentages (default 80/10/10).")
@click.option("--seed", type=int, default=None, help="Split seed (default 0).")
@click.option("--format", "fmt", type=click.Choice(["chat", "completions", "text"]), default=None,
              help="mlx-lm format of the rows (default chat).")
@click.option("--system/--no-system", default=None, help="Add the persona as a system message (default on).")
@click.option("--group-key", default=None, help="Field whose equal values stay in one split.")
@click.option("--group-consecutive/--no-group-consecutive", default=None,
              help="Group runs of consecutive rows about the same thing (files without ids).")
@click.option("--stratify/--no-stratify", default=None, help="Stratify labelled data by label (default on).")
@click.option("--split-by", type=click.Choice(["group", "row"]), default=None,
              help="group (default): a source's rows share one split, valid/test measure generalisation; row: "
                   "fact memorisation, each source keeps a row in train and valid/test ask its other wordings.")
@click.option("--dedupe/--no-dedupe", default=None, help="Drop exact and near-duplicate rows (default on).")
@click.option("--max-seq-length", type=int, default=None,
              help="Token limit reported by the validation (default: the smaller of prepare.max_seq_length and "
                   "train.max_seq_length).")
@click.option("--save-hf", default=None, help="Also save a Hugging Face DatasetDict to this folder.")
@click.option("--hub-repo", default=None, help="Also push the DatasetDict to this Hub dataset repo.")
@click.option("--tokenizer", default=None, help=TOKENIZER_HELP)
def prepare(inputs, config_path, output, split, seed, fmt, system, group_key, group_consecutive, stratify, split_by,
            dedupe, max_seq_length, save_hf, hub_repo, tokenizer):
    """Build leak-free train/valid/test.jsonl from INPUT files (pairs, ShareGPT, chat, Alpaca, prompt/completion,
    TRL or text; JSONL, JSON or CSV), then validate them."""
    from dantes_mlx import dataset as stage
    from dantes_mlx.config import CharacterConfig, GenerateConfig, PrepareConfig, ProjectConfig, load_yaml, section

    cfg = load_yaml(config_path)
    prep = section(PrepareConfig, cfg, {
        "split": split, "seed": seed, "format": fmt, "system_prompt": system, "group_key": group_key,
        "group_consecutive": group_consecutive, "stratify": stratify, "split_by": split_by, "dedupe": dedupe,
        "max_seq_length": max_seq_length, "save_hf": save_hf, "hub_repo": hub_repo, "tokenizer": tokenizer})
    prep.max_seq_length = _length_limit(cfg, prep, max_seq_length)
    files = list(inputs) or stage.default_inputs(section(ProjectConfig, cfg).data_dir,
                                                 section(GenerateConfig, cfg).output)
    out = stage.check_paths(files, output or _default_dir(cfg), prep)  # before a tokenizer is loaded
    tok, note = _tokenizer(cfg, tokenizer, prep.tokenizer)
    report = stage.prepare(files, out, prep, section(CharacterConfig, cfg).persona, tok, note, _batch_size(cfg))
    click.echo(report.summary())
    if report.validation is not None and report.validation.errors:
        raise click.ClickException(f"{len(report.validation.errors)} validation error(s) in {report.out_dir}")


@click.command("validate")
@click.argument("folder", required=False, type=click.Path(file_okay=False))
@CONFIG_OPTION
@click.option("--tokenizer", default=None, help=TOKENIZER_HELP)
@click.option("--max-seq-length", type=int, default=None,
              help="Token limit (default: the smaller of prepare.max_seq_length and train.max_seq_length).")
@click.option("--truncate", "fix", flag_value="truncate", default=None,
              help="Cut the final answer of over-long rows to fit (files rewritten atomically, each original kept "
                   "as SPLIT.jsonl.orig; refused when a split would be left empty).")
@click.option("--drop", "fix", flag_value="drop", help="Drop over-long rows (as --truncate: originals kept).")
def validate(folder, config_path, tokenizer, max_seq_length, fix):
    """Check FOLDER's train/valid/test.jsonl: JSON, roles, content, token lengths and cross-split leaks."""
    from dantes_mlx.config import PrepareConfig, load_yaml, section
    from dantes_mlx.errors import DantesError
    from dantes_mlx.validate import validate_dir

    cfg = load_yaml(config_path)
    prep = section(PrepareConfig, cfg, {"max_seq_length": max_seq_length})
    tok, note = _tokenizer(cfg, tokenizer, prep.tokenizer)
    folder = Path(folder) if folder else _default_dir(cfg)
    report = validate_dir(folder, tok, note, _length_limit(cfg, prep, max_seq_length), prep.near_dup_threshold, fix,
                          _batch_size(cfg))
    click.echo(report.summary())
    if report.errors:
        raise DantesError(f"{len(report.errors)} error(s); see the list above", path=folder,
                          fix="repair the rows named above, or rebuild the folder with `dantes-mlx prepare`")


@click.command("stats")
@click.argument("folder", required=False, type=click.Path(file_okay=False))
@CONFIG_OPTION
@click.option("--tokenizer", default=None, help=TOKENIZER_HELP)
@click.option("--plot", default=None, help="Histogram PNG (default: FOLDER/lengths.png).")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Answer openings listed.")
def stats(folder, config_path, tokenizer, plot, top):
    """Rows per split, token length histogram, label balance and the most repeated answer openings."""
    from dantes_mlx.config import PrepareConfig, load_yaml, section
    from dantes_mlx.dataset_split import SPLITS
    from dantes_mlx.dataset_stats import dataset_stats
    from dantes_mlx.errors import InputError
    from dantes_mlx.outputs import check_output

    cfg = load_yaml(config_path)
    folder = Path(folder) if folder else _default_dir(cfg)
    plot = check_output(plot or folder / "lengths.png", inputs=[folder / f"{s}.jsonl" for s in SPLITS],
                        flag="--plot", example="lengths.png")
    tok, note = _tokenizer(cfg, tokenizer, section(PrepareConfig, cfg).tokenizer)
    result = dataset_stats(folder, tok, plot)
    if tok is None:
        click.echo(f"lengths in words ({note})")
    click.echo(result.summary(top))
    if result.unreadable:
        first = result.unreadable[0]
        raise InputError(f"{len(result.unreadable)} row(s) are not valid training rows and were left out of the "
                         f"numbers above; this is the first: {first.message}", path=first.path, line=first.line,
                         fix=f"`dantes-mlx validate {folder}` lists every one; repair them or rebuild the folder "
                             "with `dantes-mlx prepare`")
