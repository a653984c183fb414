"""The four export targets from one adapter: PEFT adapter, GGUF LoRA, fused GGUF (quantized), Ollama Modelfiles,
gated by parity before any Modelfile is written."""

from __future__ import annotations

import json
import math
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from dantes_mlx.adapter_format import check_adapter, load_adapter, weights_file
from dantes_mlx.config import ExportConfig
from dantes_mlx.errors import ConfigError, DantesError, ModelError, StageFailed
from dantes_mlx.export.fuse import fuse_adapter
from dantes_mlx.export.gate import CachedReference, gate_verdict, parity_gate
from dantes_mlx.export.gguf import load_weights, quant_name, quantize, read_config, read_vocab, write_gguf
from dantes_mlx.export.gguf_lora import write_gguf_lora
from dantes_mlx.export.modelfile import (ADAPTER_NOTE, MISTRAL, ChatFormat, build_modelfile, check_model_name, check_modelfile_values,
                                         create_commands, default_license)
from dantes_mlx.export.modelfile import ollama_create as run_ollama_create
from dantes_mlx.export.modelfile import chat_format
from dantes_mlx.export.parity import (LazyReference, ParityReport, default_prompts, make_base_reference, make_reference,
                                      thresholds_for)
from dantes_mlx.export.peft import write_peft_adapter
from dantes_mlx.models.fingerprint import model_fingerprint
from dantes_mlx.models.hub import resolve_model
from dantes_mlx.models.weights import check_weights
from dantes_mlx.outputs import check_output
from dantes_mlx.store import write_text_atomic
from dantes_mlx.workspace import ADAPTER_CONFIG, BASE_FINGERPRINT_FILE, PEFT_WEIGHTS, AdapterFolder

EXPORT_MANIFEST = "export.json"
BASE_GGUF = "base-f16.gguf"
# export.ollama_route -> the Modelfile `ollama create` registers
ROUTES = {"fused": "modelfile", "adapter": "modelfile_adapter"}


@dataclass
class ExportResult:
    """What `export_all` wrote, the parity reports, and what happened with Ollama."""

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    reports: dict[str, ParityReport] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ollama: str = ""
    ollama_failed: bool = False  # `ollama create` ran and failed; the exported files are complete

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.reports.values())

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "files": {k: str(v) for k, v in self.files.items()},
                "parity": {k: _finite(r.to_dict()) for k, r in self.reports.items()},
                "passed": self.passed, "notes": self.notes, "ollama": self.ollama,
                "ollama_failed": self.ollama_failed}

    def failure(self) -> StageFailed | None:
        """`ollama create` ran and failed: the exported files are complete (exit status 1, but `run` goes on)."""
        if not self.ollama_failed:
            return None
        return StageFailed("the exported files are complete; only `ollama create` failed", path=self.out_dir,
                           fix="see the Ollama message above: once Ollama runs, register the files it names",
                           stops_run=False)

    def summary(self) -> str:
        """Lines for the terminal: files, parity verdicts, notes, the Ollama step."""
        lines = [f"export -> {self.out_dir}"]
        lines += [f"  {key:<16} {path}" for key, path in self.files.items()]
        for label, report in self.reports.items():
            lines.append(f"[{label}] " + report.summary())
        lines += [f"note: {note}" for note in self.notes]
        if self.ollama:
            lines.append(self.ollama)
        return "\n".join(lines)


def _finite(value):
    """JSON-safe copy: infinite/NaN figures (a file llama.cpp refused) become null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_base(adapter_dir: Path, base_dir: Path, base_name: str, allow_other: bool, result: ExportResult) -> None:
    """Refuse a base other than the one `dantes-mlx train` fingerprinted (shapes alone cannot tell)."""
    recorded = AdapterFolder(adapter_dir).base_fingerprint()
    if recorded is None:
        result.notes.append(f"warning: the adapter has no base-model fingerprint (trained before dantes-mlx recorded "
                            f"one, or by another tool): nothing checks that {base_name} is the base it was trained on")
        return
    if recorded.get("sha256") == model_fingerprint(base_dir)["sha256"]:
        return
    trained_on = recorded.get("base_model", "?")
    if allow_other:
        result.notes.append(f"--allow-other-base: exporting onto {base_name}, not {trained_on} the adapter was "
                            "trained on (the parity gate compares against this other base too)")
        return
    raise ModelError(f"the adapter was trained on {trained_on}, but --base-model {base_name} is a different model "
                     "(same shapes, other weights or config)", path=Path(adapter_dir) / BASE_FINGERPRINT_FILE,
                     fix=f"pass --base-model {trained_on} (or a copy of the same files); to export onto "
                         f"{base_name} anyway, add --allow-other-base")


def _adapter_targets(adapter, base_name: str, out: Path, result: ExportResult, peft_base_model: str) -> None:
    """Write the PEFT adapter (a PEFT input is copied as it is)."""
    if adapter.kind == "full":
        result.notes.append("full fine-tune: no PEFT or GGUF LoRA adapter (only the fused GGUF)")
        return
    peft_dir = out / "peft"
    if adapter.source == "peft":
        peft_dir.mkdir(parents=True, exist_ok=True)
        for name in (PEFT_WEIGHTS, ADAPTER_CONFIG):
            shutil.copyfile(adapter.path / name, peft_dir / name)
    else:
        write_peft_adapter(adapter, peft_dir, peft_base_model or base_name)
    result.files["peft"] = peft_dir


def _ggufs(adapter, base_dir: Path, out: Path, name: str, quantization: str, result: ExportResult,
           want_base: bool, vocab, log: Callable[[str], None]) -> None:
    """Fused f16 GGUF, its quantized copy, the GGUF LoRA and (when wanted) the base f16 GGUF."""
    if adapter.kind == "lora":
        log("writing the GGUF LoRA adapter")
        result.files["gguf_lora"] = write_gguf_lora(adapter, base_dir, out / f"{name}-lora-f16.gguf",
                                                    name=f"{name} LoRA")
    elif adapter.kind == "dora":
        result.notes.append("DoRA: llama.cpp LoRA files cannot hold DoRA magnitudes; use the fused GGUF")
    log("fusing the adapter into the base weights")
    fused = fuse_adapter(load_weights(base_dir), adapter)
    log("writing the fused f16 GGUF")
    result.files["fused_f16"] = write_gguf(base_dir, out / f"{name}-f16.gguf", weights=fused, name=name,
                                           vocab=vocab)
    del fused
    if quantization != "f16":
        log(f"quantizing to {quantization} with llama.cpp")
        result.files["fused"] = quantize(result.files["fused_f16"], out / f"{name}-{quantization}.gguf",
                                         quantization, log=log)
    else:
        result.files["fused"] = result.files["fused_f16"]
    if "gguf_lora" in result.files and want_base:
        log("writing the base f16 GGUF (for llama.cpp --lora and the parity gate)")
        result.files["base_f16"] = write_gguf(base_dir, out / BASE_GGUF, vocab=vocab)


def _modelfiles(out: Path, name: str, result: ExportResult, *, system, parameters, messages,
                license_text: str, ollama_base: str, fmt: ChatFormat = MISTRAL) -> None:
    common = dict(system=system, parameters=parameters, messages=messages, license_text=license_text,
                  template=fmt.template, stop=fmt.stops)
    fused = result.files["fused"].name
    header = f"Ollama Modelfile written by `dantes-mlx export`.\nollama create {name} -f Modelfile"
    write_text_atomic(out / "Modelfile", build_modelfile(f"./{fused}", header=header, **common))
    result.files["modelfile"] = out / "Modelfile"
    if "gguf_lora" in result.files:
        base = ollama_base or f"./{BASE_GGUF}"
        header = (f"Adapter-only route: {base} + the GGUF LoRA, written by `dantes-mlx export`.\n"
                  f"{ADAPTER_NOTE}\nollama create {name}-adapter -f Modelfile.adapter")
        text = build_modelfile(base, adapter=f"./{result.files['gguf_lora'].name}", header=header, **common)
        write_text_atomic(out / "Modelfile.adapter", text)
        result.files["modelfile_adapter"] = out / "Modelfile.adapter"


# Ollama's library tag for Mistral-7B-Instruct-v0.3 (export.ollama_base's default) and that model's shapes.
MISTRAL_7B_V03 = ("mistral:7b-instruct-v0.3", {"hidden_size": 4096, "num_hidden_layers": 32, "vocab_size": 32768})


def _library_base(ollama_base: str, config: Mapping, result: ExportResult) -> str:
    """ollama_base, or "" (our own base GGUF) when it is Mistral-7B-Instruct-v0.3 and the base model is not."""
    tag, shapes = MISTRAL_7B_V03
    if not ollama_base.startswith(tag):
        return ollama_base
    wrong = {k: config.get(k) for k, v in shapes.items() if config.get(k) != v}
    if not wrong:
        return ollama_base
    result.notes.append(f"export.ollama_base {ollama_base} is Mistral-7B-Instruct-v0.3 but the base model is not ("
                        + ", ".join(f"{k} {v}" for k, v in wrong.items()) + "): Modelfile.adapter uses our own base "
                        "GGUF instead; set export.ollama_base to your base's Ollama model to use the library one")
    return ""


def _check_route(route: str, adapter) -> None:
    if route not in ROUTES:
        raise ConfigError(f"unknown export.ollama_route {route!r}", fix=f"use one of {', '.join(ROUTES)}")
    if route == "adapter" and adapter.kind != "lora":
        raise ConfigError(f"export.ollama_route adapter needs a LoRA adapter; this is a {adapter.kind} fine-tune",
                          path=adapter.path, fix="set export.ollama_route: fused")


def export_all(base_model: str | Path | None, adapter_dir: str | Path, out_dir: str | Path = "export", *,
               quantization: str = "q4_k_m", name: str = "dantes", persona: str | None = None,
               messages: Iterable[Mapping] = (), parameters: Mapping | None = None, ollama_base: str = "",
               books: Iterable[str] = (), parity: bool = True, prompts: Sequence | None = None,
               ollama_create: bool = False, peft_base_model: str = "", allow_other_base: bool = False,
               ollama_route: str = "fused", log: Callable[[str], None] = _stderr) -> ExportResult:
    """Export an adapter (mlx-lm or PEFT) to the four targets, gate them, then write the Modelfiles.

    `base_model`: folder or HF repo id (None: the one recorded in the adapter). `ollama_base`: library
    model for Modelfile.adapter's FROM (empty: our base f16 GGUF). `parameters`: Modelfile sampling
    PARAMETERs (None: export.ollama_parameters' defaults). `ollama_route`: which Modelfile `ollama create`
    registers, "fused" or "adapter" (refused by Ollama 0.34.1 and later). Raises ParityError, with the
    figures, when a GGUF does not predict like MLX base + adapter; then no Modelfile is written.
    Raises ModelError when the base is not the one train fingerprinted, unless `allow_other_base`.
    """
    quantization = quant_name(quantization)
    thresholds_for(quantization)
    check_model_name(name)
    # The Modelfile's values (persona, PARAMETERs, MESSAGEs) are checked now, not after the long fuse.
    check_modelfile_values(system=persona, parameters=parameters, messages=messages)
    check_output(out_dir, kind="dir", inputs=[adapter_dir], flag="-o/--output")  # its PEFT files would replace ours
    check_weights(weights_file(adapter_dir))  # a file cut short is named, not a traceback
    adapter = load_adapter(adapter_dir)
    _check_route(ollama_route, adapter)
    base_name = str(base_model or adapter.base_model or "")
    if not base_name:
        raise ConfigError("no base model given and none recorded in the adapter", path=adapter.path,
                          fix="pass --base-model (the model the adapter was trained on)")
    base_dir = resolve_model(base_name)
    check_weights(base_dir)
    config = read_config(base_dir)
    vocab = read_vocab(base_dir, config)  # an unsupported tokenizer is refused before any file is written
    check_adapter(adapter, config)
    out = check_output(out_dir, kind="dir", inputs=[adapter.path, base_dir], flag="-o/--output")
    result = ExportResult(out)
    check_base(adapter.path, base_dir, base_name, allow_other_base, result)
    ollama_base = _library_base(ollama_base, config, result)
    fmt, mismatch = chat_format(base_dir)  # the parity gate uses the base's template, Ollama the Modelfile's
    if mismatch:
        result.notes.append(mismatch)
    out.mkdir(parents=True, exist_ok=True)
    # A previous export's Modelfiles name the GGUFs about to be overwritten: if this one fails the
    # gate they must not be left behind for `ollama create` to ship.
    for stale in ("Modelfile", "Modelfile.adapter"):
        (out / stale).unlink(missing_ok=True)
    _adapter_targets(adapter, base_name, out, result, peft_base_model)
    if adapter.kind != "full" and config.get("quantization") and not peft_base_model:
        result.notes.append(f"the PEFT adapter names {base_name} (an MLX quantized model) as its base; set "
                            "export.peft_base_model to the original repo (e.g. mistralai/Mistral-7B-Instruct-v0.3)")
    _ggufs(adapter, base_dir, out, name, quantization, result, parity or not ollama_base, vocab, log)
    manifest = out / EXPORT_MANIFEST
    if parity:
        checks = [("fused f16", result.files["fused_f16"], None, "f16")]
        if quantization != "f16":
            checks.append((f"fused {quantization}", result.files["fused"], None, quantization))
        if "gguf_lora" in result.files:
            checks.append(("base f16 + GGUF LoRA", result.files["base_f16"], result.files["gguf_lora"], "f16"))
        # A plugin's own reference for the adapters it trained; logits shared by all checks.
        reference = CachedReference(make_reference(base_dir, adapter.path))
        # The base model too, loaded once the trained one is released: a GGUF must carry the fine-tune.
        base = CachedReference(LazyReference(lambda: make_base_reference(base_dir, adapter.path)))
        log(f"parity gate: {reference.name} (and the base without the fine-tune) against each GGUF in llama.cpp")
        result.reports = parity_gate(reference, checks, prompts or default_prompts(persona), base)
        write_text_atomic(manifest, json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
        gate_verdict(result.reports, manifest)
    else:
        result.notes.append("parity gate skipped (--no-parity): nothing proves these files match the model")
    if parameters is None:  # the defaults of export.ollama_parameters; {} writes none
        parameters = ExportConfig().ollama_parameters
    _modelfiles(out, name, result, system=persona, parameters=parameters, messages=messages,
                license_text=default_license(base_name, books), ollama_base=ollama_base, fmt=fmt)
    if ollama_create:
        try:
            _, result.ollama = run_ollama_create(name, result.files[ROUTES[ollama_route]])
        except DantesError as exc:  # the export is done and sound: report, do not lose it
            result.ollama, result.ollama_failed = f"ollama create failed: {exc}", True
    else:
        modelfile = result.files[ROUTES[ollama_route]].resolve()
        steps = "\n".join("  " + shlex.join(c) for c in create_commands(name, modelfile))
        result.ollama = "to register it with Ollama, run:\n" + steps
    result.files["manifest"] = manifest
    write_text_atomic(manifest, json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return result
