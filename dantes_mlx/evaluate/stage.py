"""The eval stage's one entry: settings from dantes.yaml and flags, the project's default paths, then evaluate()."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

from dantes_mlx import llm
from dantes_mlx.adapter_format import folder_format
from dantes_mlx.card.lookup import resolve_persona
from dantes_mlx.config import CharacterConfig, EvalConfig, LLMConfig, TrainConfig, section
from dantes_mlx.errors import ConfigError, StageFailed
from dantes_mlx.evaluate import compare
from dantes_mlx.evaluate.compare import EvalResult, check_report_dir
from dantes_mlx.evaluate.report import text_summary
from dantes_mlx.stage import Log
from dantes_mlx.workspace import Workspace


@dataclass
class EvalSummary:
    """An evaluation: its results and the report's index.html."""
    result: EvalResult
    index: Path

    def summary(self) -> str:
        return text_summary(self.result) + f"\nreport: {self.index}"

    def failure(self) -> StageFailed | None:
        """What could not be measured (a failing judge): the report holds the rest, the exit status says so."""
        if not self.result.failures:
            return None
        return StageFailed("eval: " + "; ".join(self.result.failures) + f"; the report is written: {self.index}",
                           path=self.index,
                           fix="fix the cause above (is the judge's LLM server up? llm.url / --judge-url), then run "
                               "the same command again: the answers are cached and not generated again")


@dataclass
class Settings:
    """What one evaluation reads: the eval section, the character, the models compared and the judge."""
    eval: EvalConfig
    character: CharacterConfig
    default_base: str = ""               # train.base_model: the base when neither flag nor adapter names one
    base_model: str | None = None        # else the adapter's base
    adapter_path: str | None = None      # else project.adapters_dir (unless a GGUF alone is evaluated)
    data_dir: str | None = None          # else data/dataset
    gguf: str | None = None              # the fine-tuned side as a GGUF (llama.cpp)
    out_dir: str | None = None           # else <reports_dir>/eval-<date>
    judge: LLMConfig | None = field(default=None)  # the judge's LLM when eval.judge is on
    persona_source: str = ""             # where character.persona came from: the settings file, or the card
    base_gguf: str | None = None         # the base side as a GGUF (llama.cpp)

    @classmethod
    def from_config(cls, config: dict, overrides: dict | None = None, *, extra_probes: list[str] = (),
                    base_model: str | None = None, adapter_path: str | None = None, data_dir: str | None = None,
                    gguf: str | None = None, out_dir: str | None = None, judge_model: str | None = None,
                    judge_url: str | None = None, base_gguf: str | None = None) -> "Settings":
        cfg = section(EvalConfig, config, overrides)
        cfg.probes = list(cfg.probes) + [p for p in extra_probes if p not in cfg.probes]
        judge = None
        if cfg.judge:
            judge = section(LLMConfig, config, {"model": judge_model, "url": judge_url})
            if not (judge.model or judge.url):
                raise ConfigError("--judge needs a judge LLM", path="dantes.yaml [llm]",
                                  fix="set llm.model (GGUF) or llm.url (server), or pass --judge-model / --judge-url")
        persona = resolve_persona(config)
        character = replace(section(CharacterConfig, config), persona=persona.text)
        return cls(cfg, character, section(TrainConfig, config).base_model, base_model, adapter_path, data_dir, gguf,
                   out_dir, judge, persona.source, base_gguf)


def run(settings: Settings, workspace: Workspace, log: Log) -> EvalSummary:
    """Base vs fine-tuned on the same prompts and sampling; the report goes to the report folder."""
    adapter = None if settings.gguf and not settings.adapter_path else workspace.adapter(settings.adapter_path)
    if adapter is not None:
        folder_format(adapter.path)  # an mlx-lm or a PEFT adapter, else an error saying what was expected
    base = settings.base_model or (adapter.base_model() if adapter is not None else settings.default_base)
    data = Path(settings.data_dir) if settings.data_dir else workspace.dataset
    out = Path(settings.out_dir) if settings.out_dir else workspace.reports / f"eval-{date.today().isoformat()}"
    adapter_path = adapter.path if adapter is not None else None
    check_report_dir(out, data, adapter_path, settings.gguf, settings.base_gguf)  # before a judge model loads
    if settings.persona_source and (settings.eval.persona_for_probes or settings.eval.judge):
        log(f"persona: {settings.persona_source}")
    judge = settings.judge
    result = compare.evaluate(
        settings.eval, settings.character, base_model=base, data_dir=data, out_dir=out, adapter_path=adapter_path,
        gguf=settings.gguf, citations=workspace.eval_citation_candidates(settings.data_dir),
        judge_client=llm.make_client(judge) if judge else None, cache_dir=workspace.reports / ".cache",
        max_failures=judge.max_consecutive_failures if judge else 5, base_gguf=settings.base_gguf)
    return EvalSummary(result, out / "index.html")
