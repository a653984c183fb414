"""`dantes-mlx export` and `dantes-mlx parity`: exported files, and the check that they behave."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("parity")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Settings file (default: dantes.yaml if present).")
@click.option("--gguf", "gguf_path", required=True, type=click.Path(dir_okay=False),
              help="The GGUF to check (fused model, or the base when --lora is given).")
@click.option("--lora", "lora_path", type=click.Path(dir_okay=False), default=None,
              help="GGUF LoRA adapter applied on top of --gguf by llama.cpp.")
@click.option("--model", default=None, help="Reference MLX/HF model folder or repo (default: train.base_model).")
@click.option("--adapter", "--adapter-path", "adapter", default=None,
              help="Reference adapter folder, mlx-lm or PEFT (default: project.adapters_dir when it holds one).")
@click.option("--no-adapter", is_flag=True, help="Compare with the base model alone.")
@click.option("--quantization", default=None, help="Threshold set, e.g. f16 or q4_k_m (default: read from the GGUF).")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False), default=None,
              help="JSONL of prompts (question strings or message lists) instead of the built-in French set.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the report as JSON to this file.")
@click.option("--report-only", is_flag=True, help="Print the figures and exit 0 even when parity fails.")
def parity(config_path, gguf_path, lora_path, model, adapter, no_adapter, quantization, prompts_file,
           json_out, report_only):
    """Check that an exported GGUF predicts like the trained model (tokens, top-1, KL)."""
    from dantes_mlx.config import CharacterConfig, ProjectConfig, TrainConfig, load_yaml, section
    from dantes_mlx.export.parity import run_parity
    from dantes_mlx.export.peft import recorded_base_model
    from dantes_mlx.outputs import check_output
    from dantes_mlx.store import write_text_atomic

    if adapter is not None and no_adapter:
        raise click.UsageError("--adapter and --no-adapter cannot be used together; keep one")
    config = load_yaml(config_path)
    if adapter is None and not no_adapter:
        default = Path(section(ProjectConfig, config).adapters_dir)
        trained = any((default / f).is_file() for f in ("adapters.safetensors", "adapter_model.safetensors"))
        adapter = str(default) if trained else None
    # As export does: the base the adapter was trained on, before train.base_model.
    model = model or (recorded_base_model(adapter) if adapter and not no_adapter else None) \
        or section(TrainConfig, config).base_model
    if json_out:  # before the long comparison
        check_output(json_out, inputs=[gguf_path, lora_path, prompts_file], flag="--json", example="parity.json")
    report = run_parity(model, gguf_path, adapter=None if no_adapter else adapter, lora_path=lora_path,
                        quantization=quantization, prompts_file=prompts_file,
                        system=section(CharacterConfig, config).persona, enforce=not report_only)
    click.echo(report.summary())
    if json_out:
        write_text_atomic(json_out, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
        click.echo(f"report -> {json_out}")


@click.command("export")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Settings file (default: dantes.yaml if present).")
@click.option("--adapter-path", default=None,
              help="Adapter folder, mlx-lm or PEFT format (default: project.adapters_dir).")
@click.option("--base-model", default=None,
              help="Base model folder or HF repo id (default: the one recorded in the adapter, else train.base_model).")
@click.option("-o", "--output", "out_dir", default=None, help="Output folder (default: export.out_dir).")
@click.option("--quantization", default=None, help="Fused GGUF type: f16, q8_0, q4_k_m, q5_k_m... (default: export.quantization).")
@click.option("--name", default=None, help="Ollama model name (default: export.ollama_name).")
@click.option("--ollama-base", default=None,
              help="Ollama library model used as FROM in Modelfile.adapter ('' : our base f16 GGUF).")
@click.option("--parity/--no-parity", default=None, help="Run the parity gate (default: export.parity).")
@click.option("--ollama-create/--no-ollama-create", default=None,
              help="Run `ollama create` when ollama is on PATH (default: export.ollama_create).")
@click.option("--ollama-route", type=click.Choice(["fused", "adapter"]), default=None,
              help="Modelfile `ollama create` registers: fused GGUF, or base + ADAPTER (Ollama <= 0.34.0) "
                   "(default: export.ollama_route).")
@click.option("--allow-other-base", is_flag=True,
              help="Export onto --base-model even when it is not the base the adapter was trained on.")
def export(config_path, adapter_path, base_model, out_dir, quantization, name, ollama_base, parity,
           ollama_create, ollama_route, allow_other_base):
    """Export PEFT adapter, GGUF LoRA, fused GGUF and Modelfile; fail when parity fails."""
    from dantes_mlx.config import load_yaml
    from dantes_mlx.export import export_project

    overrides = {"out_dir": out_dir, "quantization": quantization, "ollama_name": name,
                 "ollama_base": ollama_base, "parity": parity, "ollama_create": ollama_create,
                 "ollama_route": ollama_route}
    result = export_project(load_yaml(config_path), overrides, adapter_path=adapter_path, base_model=base_model,
                            allow_other_base=allow_other_base, log=lambda msg: click.echo(msg, err=True))
    click.echo(result.summary())
    if result.ollama_failed:  # the files are written and listed above; only the registration failed
        raise click.exceptions.Exit(1)
