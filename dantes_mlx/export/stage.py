"""The export and parity stages' entries: settings from dantes.yaml and flags (checked before any work), then the
four targets, or one GGUF checked against the trained model."""

from __future__ import annotations

import json
from dataclasses import dataclass

from dantes_mlx.card.lookup import resolve_persona
from dantes_mlx.config import CharacterConfig, ExportConfig, ProjectConfig, TrainConfig, located, section
from dantes_mlx.errors import ConfigError
from dantes_mlx.export.modelfile import check_model_name, check_modelfile_values
from dantes_mlx.export.parity import ParityReport, run_parity, thresholds_for
from dantes_mlx.export.targets import ExportResult, export_all
from dantes_mlx.outputs import check_output, output_lock
from dantes_mlx.stage import Log
from dantes_mlx.store import write_text_atomic
from dantes_mlx.workspace import Workspace


def check_export_settings(config: dict, overrides: dict | None = None) -> None:
    """The export settings of dantes.yaml checked before any work (export, or `run`'s first stage): the persona and
    Modelfile values Ollama must read back (none holding \"\"\"), the quantization, the model name; the bad one is
    named with its file and line."""
    cfg = section(ExportConfig, config, overrides)
    persona = section(CharacterConfig, config).persona
    checks = (("character", "persona", lambda: check_modelfile_values(system=persona)),
              ("export", "ollama_parameters", lambda: check_modelfile_values(parameters=cfg.ollama_parameters)),
              ("export", "ollama_messages", lambda: check_modelfile_values(messages=cfg.ollama_messages)),
              ("export", "quantization", lambda: thresholds_for(cfg.quantization)),
              ("export", "ollama_name", lambda: check_model_name(cfg.ollama_name)))
    for sec, key, check in checks:
        try:
            check()
        except ConfigError as exc:
            named = exc.detail if f"{sec}.{key}" in exc.detail else f"{sec}.{key}: {exc.detail}"
            raise ConfigError(named, **located(config, sec, key), fix=exc.fix) from None


@dataclass
class Settings:
    """What one export reads: the export section, the persona, the books (licence), the adapter and its base."""
    export: ExportConfig
    persona: str
    books: tuple = ()
    default_base: str = ""               # train.base_model: the base when the adapter records none
    adapter_path: str | None = None      # else project.adapters_dir
    base_model: str | None = None        # else the base the adapter records, else default_base
    out_dir: str | None = None           # else export.out_dir (the workspace's)
    allow_other_base: bool = False
    persona_source: str = ""             # where the persona (the Modelfile's SYSTEM) came from: settings, or card

    @classmethod
    def from_config(cls, config: dict, overrides: dict | None = None, *, adapter_path: str | None = None,
                    base_model: str | None = None, allow_other_base: bool = False) -> "Settings":
        """dantes.yaml's sections < the flags, every export setting checked (file:line) before any work."""
        overrides = dict(overrides or {})
        out_dir = overrides.pop("out_dir", None)
        check_export_settings(config, overrides)
        persona = resolve_persona(config)
        return cls(section(ExportConfig, config, overrides), persona.text, tuple(section(ProjectConfig, config).books),
                   section(TrainConfig, config).base_model, adapter_path, base_model, out_dir, allow_other_base,
                   persona.source)


def run(settings: Settings, workspace: Workspace, log: Log) -> ExportResult:
    """Export the adapter to the four targets, gate them, write the Modelfiles (and register with Ollama)."""
    adapter = workspace.adapter(settings.adapter_path)
    base = settings.base_model or adapter.recorded_base() or settings.default_base
    cfg, out_dir = settings.export, settings.out_dir or workspace.export
    if settings.persona_source:
        log(f"persona (the Modelfile's SYSTEM, the parity prompts): {settings.persona_source}")
    with output_lock(out_dir):  # one export at a time into a folder
        return export_all(base, adapter.path, out_dir, quantization=cfg.quantization, name=cfg.ollama_name,
                          persona=settings.persona, messages=cfg.ollama_messages, parameters=cfg.ollama_parameters,
                          ollama_base=cfg.ollama_base, books=settings.books, parity=cfg.parity,
                          ollama_create=cfg.ollama_create, peft_base_model=cfg.peft_base_model,
                          allow_other_base=settings.allow_other_base, ollama_route=cfg.ollama_route, log=log)


@dataclass
class ParitySettings:
    """What one parity check reads: the GGUF (+ GGUF LoRA), the reference model and adapter, the prompts."""
    gguf: str
    default_base: str                     # train.base_model
    persona: str
    lora: str | None = None
    model: str | None = None              # else the adapter's base, else default_base
    adapter: str | None = None            # else project.adapters_dir when it holds an adapter
    no_adapter: bool = False
    quantization: str | None = None       # else read from the GGUF
    prompts_file: str | None = None
    json_out: str | None = None
    enforce: bool = True                  # fail when parity fails (False: report only)

    @classmethod
    def from_config(cls, config: dict, **flags) -> "ParitySettings":
        return cls(default_base=section(TrainConfig, config).base_model, persona=resolve_persona(config).text,
                   **flags)


@dataclass
class ParitySummary:
    """A parity report, and where its JSON copy went."""
    report: ParityReport
    json_out: str | None = None

    def summary(self) -> str:
        return self.report.summary() + (f"\nreport -> {self.json_out}" if self.json_out else "")

    def failure(self) -> None:
        return None  # an enforced gate that fails raises ParityError with the figures


def run_parity_check(settings: ParitySettings, workspace: Workspace, log: Log) -> ParitySummary:
    """The trained model (+ adapter) against a GGUF (+ GGUF LoRA): tokens, top-1, KL, the fine-tune carried."""
    adapter = None
    if not settings.no_adapter:
        folder = workspace.adapter(settings.adapter)
        adapter = str(folder.path) if settings.adapter is not None or folder.has_adapter() else None
    # As export does: the base the adapter was trained on, before train.base_model.
    model = settings.model or (workspace.adapter(adapter).recorded_base() if adapter else None) \
        or settings.default_base
    if settings.json_out:  # before the long comparison
        check_output(settings.json_out, inputs=[settings.gguf, settings.lora, settings.prompts_file], flag="--json",
                     example="parity.json")
    report = run_parity(model, settings.gguf, adapter=adapter, lora_path=settings.lora,
                        quantization=settings.quantization, prompts_file=settings.prompts_file,
                        system=settings.persona, enforce=settings.enforce)
    if settings.json_out:
        write_text_atomic(settings.json_out, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return ParitySummary(report, settings.json_out)
