"""`dantes-mlx prefs`: options in, one call to dantes_mlx.prefs.stage out."""

from __future__ import annotations

import click

from dantes_mlx.cli_common import CONFIG_OPTION, project, run_stage
from dantes_mlx.prefs.stage import Settings, run


@click.command("prefs")
@CONFIG_OPTION
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Dataset folder with train/valid.jsonl [default: <project.data_dir>/dataset].")
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Folder for the preference rows [default: <dataset>/preferences].")
@click.option("--base-model", default=None, help="mlx-lm model answering as the base [default: prefs.base_model, "
                                                 "else train.base_model].")
@click.option("--gguf", type=click.Path(dir_okay=False), default=None,
              help="Answer with llama.cpp from this GGUF of the base instead.")
@click.option("--max-tokens", type=int, default=None, help="Longest base answer in tokens [default: 256].")
@click.option("--temperature", type=float, default=None, help="Sampling temperature [default: 0, greedy].")
def prefs(config_path, data_dir, output, base_model, gguf, max_tokens, temperature):
    """Preference rows for `train --method dpo|orpo`: each train/valid question's in-character answer (chosen)
    against the base model's own answer (rejected), in TRL's prompt/chosen/rejected format.

    Costs one base-model generation per question. Resumable: the base answers are stored beside the rows
    (base_answers.store.jsonl); after an interruption run the same command again.
    """
    config, workspace = project(config_path)
    settings = Settings.from_config(config, gguf=gguf, data_dir=data_dir, output=output, base_model=base_model,
                                    max_tokens=max_tokens, temperature=temperature)
    run_stage(run, settings, workspace)
