"""`dantes-mlx eval`: options in, one call to the eval stage out, a summary and the report's path."""

from __future__ import annotations

import webbrowser

import click

from dantes_mlx.cli_common import CONFIG_OPTION, log, project
from dantes_mlx.evaluate.side_by_side import side_by_side, write_side_by_side
from dantes_mlx.evaluate.stage import Settings, run


@click.command("eval")
@click.option("--base-model", default=None,
              help="Base model (HF id or folder) [default: the adapter's base, else train.base_model].")
@click.option("--adapter-path", type=click.Path(file_okay=False), default=None,
              help="Adapter folder from `dantes-mlx train` [default: project.adapters_dir].")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Dataset folder holding test.jsonl [default: <project.data_dir>/dataset].")
@click.option("--gguf", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Evaluate this GGUF (llama.cpp) as the fine-tuned model instead of base + adapter.")
@click.option("--base-gguf", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Run the base model from this GGUF (llama.cpp, e.g. export's base_f16.gguf) instead of mlx-lm; "
                   "with --gguf both test losses are measured by llama.cpp (no mlx needed: fast on a Linux CPU).")
@click.option("--judge/--no-judge", default=None, help="Score answers with an LLM judge [default: eval.judge].")
@click.option("--judge-model", default=None, help="Judge GGUF or HF_REPO:FILE.gguf [default: llm.model].")
@click.option("--judge-url", default=None, help="Judge OpenAI-compatible server URL [default: llm.url].")
@click.option("--probe", "probes", multiple=True, help="Extra probe question (repeatable), added to eval.probes.")
@click.option("--max-tokens", type=int, default=None, help="Tokens generated per answer [default: eval.max_tokens].")
@click.option("--temperature", type=float, default=None, help="Sampling temperature [default: eval.temperature].")
@click.option("--seed", type=int, default=None, help="Sampling and sampling-of-questions seed [default: eval.seed].")
@click.option("--samples", type=int, default=None,
              help="Held-out test questions answered by both models (-1: all) [default: eval.samples].")
@click.option("-o", "--out-dir", type=click.Path(file_okay=False), default=None,
              help="Report folder [default: <project.reports_dir>/eval-<date>].")
@click.option("--open", "open_report", is_flag=True, help="Open index.html in the web browser afterwards.")
@click.option("--side-by-side", "reports", multiple=True, type=click.Path(file_okay=False),
              help="Print finished eval reports side by side (repeat: e.g. the SFT and the DPO adapter's); runs "
                   "no model. With -o, also writes DIR/side-by-side.md with every model's out-of-character answers "
                   "and scenes.")
@CONFIG_OPTION
def eval_cmd(base_model, adapter_path, data_dir, gguf, base_gguf, judge, judge_model, judge_url, probes, max_tokens,
             temperature, seed, samples, out_dir, open_report, reports, config_path):
    """Compare the base and fine-tuned models; write reports/eval-<date>/index.html and report.md."""
    if reports:
        if not out_dir:
            click.echo(side_by_side(list(reports)))
            return
        metrics, written = write_side_by_side(list(reports), out_dir)
        click.echo(f"{metrics}\nwritten: {written} (with the out-of-character answers and the scenes of every model)")
        return
    config, workspace = project(config_path)
    overrides = {"judge": judge, "max_tokens": max_tokens, "temperature": temperature, "seed": seed,
                 "samples": samples}
    settings = Settings.from_config(config, overrides, extra_probes=list(probes), base_model=base_model,
                                    adapter_path=adapter_path, data_dir=data_dir, gguf=gguf, out_dir=out_dir,
                                    judge_model=judge_model, judge_url=judge_url, base_gguf=base_gguf)
    summary = run(settings, workspace, log)
    click.echo(summary.summary())
    if open_report:
        webbrowser.open(summary.index.resolve().as_uri())
    failure = summary.failure()
    if failure is not None:  # the report holds what was measured; the exit status says what was not
        raise failure
