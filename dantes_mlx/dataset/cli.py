"""`dantes-mlx prepare`, `validate` and `stats`: build, check and describe the training dataset."""

from __future__ import annotations

import click

from dantes_mlx.cli_common import CONFIG_OPTION, project, run_stage
from dantes_mlx.dataset.stage import (PrepareSettings, StatsSettings, ValidateSettings, run_prepare, run_stats,
                                      run_validate)

TOKENIZER_HELP = "Tokenizer for token counts: local folder or HF id ('none' skips; default: train.base_model)."


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
@click.option("--mix", type=click.Path(dir_okay=False), default=None,
              help="General instruction dataset (JSONL: chat messages or prompt/completion) mixed into train only.")
@click.option("--mix-ratio", type=float, default=None,
              help="General rows added per persona train row (e.g. 0.2), drawn with --seed (default 0: none).")
@click.option("--tokenizer", default=None, help=TOKENIZER_HELP)
def prepare(inputs, config_path, output, split, seed, fmt, system, group_key, group_consecutive, stratify, split_by,
            dedupe, max_seq_length, save_hf, hub_repo, mix, mix_ratio, tokenizer):
    """Build leak-free train/valid/test.jsonl from INPUT files (pairs, ShareGPT, chat, Alpaca, prompt/completion,
    TRL or text; JSONL, JSON or CSV), then validate them."""
    config, workspace = project(config_path)
    settings = PrepareSettings.from_config(
        config, inputs=inputs, output=output, tokenizer=tokenizer, split=split, seed=seed, format=fmt,
        system_prompt=system, group_key=group_key, group_consecutive=group_consecutive, stratify=stratify,
        split_by=split_by, dedupe=dedupe, max_seq_length=max_seq_length, save_hf=save_hf, hub_repo=hub_repo, mix=mix,
        mix_ratio=mix_ratio)
    run_stage(run_prepare, settings, workspace)


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
    config, workspace = project(config_path)
    settings = ValidateSettings.from_config(config, folder=folder, tokenizer=tokenizer, max_seq_length=max_seq_length,
                                            fix=fix)
    run_stage(run_validate, settings, workspace)


@click.command("stats")
@click.argument("folder", required=False, type=click.Path(file_okay=False))
@CONFIG_OPTION
@click.option("--tokenizer", default=None, help=TOKENIZER_HELP)
@click.option("--plot", default=None, help="Histogram PNG (default: FOLDER/lengths.png).")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Answer openings listed.")
def stats(folder, config_path, tokenizer, plot, top):
    """Rows per split, token length histogram, label balance and the most repeated answer openings."""
    config, workspace = project(config_path)
    run_stage(run_stats, StatsSettings.from_config(config, folder=folder, tokenizer=tokenizer, plot=plot, top=top),
              workspace)
