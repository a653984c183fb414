"""The prefs stage's one entry: which base model answers, where the rows go, and the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dantes_mlx.chat.engines import Engine, load_engine
from dantes_mlx.config import PrefsConfig, TrainConfig, section
from dantes_mlx.errors import InputError
from dantes_mlx.outputs import check_output, output_lock
from dantes_mlx.prefs.build import PrefsSummary, build_preferences
from dantes_mlx.stage import Log
from dantes_mlx.workspace import Workspace


@dataclass
class EngineAnswerer:
    """The base model answering through a chat engine (mlx-lm, or llama.cpp for a GGUF), sampled as prefs says."""
    engine: Engine
    cfg: PrefsConfig

    @property
    def name(self) -> str:
        c = self.cfg
        sampling = f"greedy,{c.max_tokens}" if c.temperature == 0 else f"t{c.temperature:g},s{c.seed},{c.max_tokens}"
        return f"{self.engine.name}[{sampling}]"

    def answer(self, messages: list[dict]) -> str:
        c = self.cfg
        return self.engine.generate(messages, temp=c.temperature, max_tokens=c.max_tokens, seed=c.seed)


@dataclass
class Settings:
    """What one prefs run reads: the prefs section, the base to answer with, the dataset and output folders."""
    prefs: PrefsConfig
    base_model: str                 # prefs.base_model, else train.base_model
    gguf: str | None = None         # answer with llama.cpp from this GGUF instead
    data_dir: str | None = None     # else data/dataset
    output: str | None = None       # else data/dataset/preferences
    answerer: object | None = field(default=None, repr=False)  # instead of a loaded engine (tests, the demo)

    @classmethod
    def from_config(cls, config: dict, *, gguf: str | None = None, data_dir: str | None = None,
                    output: str | None = None, **flags) -> "Settings":
        prefs = section(PrefsConfig, config, flags)
        return cls(prefs, prefs.base_model or section(TrainConfig, config).base_model, gguf, data_dir, output)

    def make_answerer(self):
        if self.answerer is not None:
            return self.answerer
        return EngineAnswerer(load_engine(model=None if self.gguf else self.base_model, gguf=self.gguf), self.prefs)


def run(settings: Settings, workspace: Workspace, log: Log) -> PrefsSummary:
    """Write the preference rows; the base answers are stored beside them, so an interrupted run resumes."""
    data = Path(settings.data_dir) if settings.data_dir else workspace.dataset
    out = Path(settings.output) if settings.output else (data / "preferences" if settings.data_dir
                                                         else workspace.preferences)
    out = check_output(out, kind="dir", inputs=[data / "train.jsonl"], flag="--output")
    if out.resolve() == data.resolve():
        raise InputError("the preference rows would replace the SFT splits of this folder", path=out,
                         fix="give --output a folder of its own (default: <dataset>/preferences)")
    with output_lock(out):  # one writer per folder: a second run would ask the base the same questions
        return build_preferences(data, out, settings.make_answerer(), log)
