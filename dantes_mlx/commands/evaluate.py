"""`dantes-mlx eval`: options in, one call to dantes_mlx.evaluate out, a summary and the report's path."""

from __future__ import annotations

import click


@click.command("eval")
@click.option("--base-model", default=None,
              help="Base model (HF id or folder) [default: the adapter's base, else train.base_model].")
@click.option("--adapter-path", type=click.Path(file_okay=False), default=None,
              help="Adapter folder from `dantes-mlx train` [default: project.adapters_dir].")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Dataset folder holding test.jsonl [default: <project.data_dir>/dataset].")
@click.option("--gguf", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Evaluate this GGUF (llama.cpp) as the fine-tuned model instead of base + adapter.")
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
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Project config [default: dantes.yaml if present].")
def eval_cmd(base_model, adapter_path, data_dir, gguf, judge, judge_model, judge_url, probes, max_tokens,
             temperature, seed, samples, out_dir, open_report, config_path):
    """Compare the base and fine-tuned models; write reports/eval-<date>/index.html and report.md."""
    from dantes_mlx.config import load_yaml
    from dantes_mlx.evaluate import eval_failure, evaluate_project
    from dantes_mlx.report import text_summary

    overrides = {"judge": judge, "max_tokens": max_tokens, "temperature": temperature, "seed": seed,
                 "samples": samples}
    result, index = evaluate_project(load_yaml(config_path), overrides, extra_probes=list(probes),
                                     base_model=base_model, adapter_path=adapter_path, data_dir=data_dir, gguf=gguf,
                                     out_dir=out_dir, judge_model=judge_model, judge_url=judge_url)
    click.echo(text_summary(result))
    click.echo(f"report: {index}")
    if open_report:
        import webbrowser

        webbrowser.open(index.resolve().as_uri())
    failure = eval_failure(result, index)
    if failure is not None:  # the report holds what was measured; the exit status says what was not
        raise failure
