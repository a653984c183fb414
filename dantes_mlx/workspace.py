"""The project folder layout and the adapter folder format, owned in one place: every path a stage reads or writes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from dantes_mlx.config import (CardConfig, EvalConfig, ExportConfig, ExtractConfig, GenerateConfig, ProjectConfig,
                               section)
from dantes_mlx.errors import InputError
from dantes_mlx.models.fingerprint import model_fingerprint
from dantes_mlx.models.hub import local_model
from dantes_mlx.store import write_text_atomic

SPLITS = ("train", "valid", "test")
# Files kept next to an LLM stage's output (extract, generate): never an input themselves.
SIDE_SUFFIXES = (".store.jsonl", ".errors.jsonl", ".rejects.jsonl", ".partial.jsonl")

# The adapter folder: what `train` writes (mlx-lm's files and ours) and export, eval, chat and parity read.
MLX_WEIGHTS = "adapters.safetensors"          # mlx-lm's adapter
PEFT_WEIGHTS = "adapter_model.safetensors"    # a PEFT adapter (the torch plugin, other tools)
ADAPTER_CONFIG = "adapter_config.json"        # mlx-lm's (with `model`, the base) or PEFT's
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
STATE_FILE = "train_state.json"               # the last complete checkpoint: what --resume continues
OPTIMIZER_FILE = "optimizer.safetensors"
TRAIN_CONFIG_FILE = "train_config.yaml"       # every setting the run used, and the backend that trained it
TEMPLATE_FILE = "chat_template.jinja"
BASE_FINGERPRINT_FILE = "base_fingerprint.json"  # which base the adapter was trained on; export checks it
DATASET_MARKER = "dataset.sha256"             # what the run learnt from; --resume checks it

# The card folder: what `card` writes and prepare, chat, eval and export read (the persona in card.json).
CARD_FILE = "card.json"


def stage_outputs(folder: Path, what: str, fix: str) -> list[Path]:
    """The JSONL outputs an LLM stage wrote in a folder, its side files (store, errors, rejects) left out; an error
    naming the folder when there is none."""
    files = sorted(p for p in folder.glob("*.jsonl") if not p.name.endswith(SIDE_SUFFIXES))
    if not files:
        raise InputError(f"no {what} file", path=folder, fix=fix)
    return files


def checkpoint_name(step: int) -> str:
    """mlx-lm's numbered checkpoint file name."""
    return f"{step:07d}_adapters.safetensors"


def dataset_fingerprint(folder: str | Path) -> str:
    """sha256 of train.jsonl and valid.jsonl: what a training run learnt from."""
    digest = hashlib.sha256()
    for name in ("train.jsonl", "valid.jsonl"):
        path = Path(folder) / name
        digest.update(name.encode() + (path.read_bytes() if path.is_file() else b"-"))
    return digest.hexdigest()


def write_base_fingerprint(base_model: str, adapter_dir: str | Path) -> Path | None:
    """Record in the adapter folder which base it was trained on (export refuses another); None when the
    base is neither a folder nor in the Hugging Face cache."""
    path = local_model(base_model)
    if path is None:  # not downloaded here (another machine's run): nothing to fingerprint
        return None
    out = Path(adapter_dir) / BASE_FINGERPRINT_FILE
    write_text_atomic(out, json.dumps({"base_model": base_model, **model_fingerprint(path)}, indent=2) + "\n")
    return out


@dataclass(frozen=True)
class AdapterFolder:
    """An adapter folder: the files `train` writes there and what they record (base, dataset, backend)."""
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def file(self, name: str) -> Path:
        return self.path / name

    def has_adapter(self) -> bool:
        """An mlx-lm or a PEFT adapter is there."""
        return self.file(MLX_WEIGHTS).is_file() or self.file(PEFT_WEIGHTS).is_file()

    def settings(self) -> dict:
        """adapter_config.json ({} when absent)."""
        path = self.file(ADAPTER_CONFIG)
        if not path.is_file():
            return {}
        return json.loads(path.read_text(encoding="utf-8"))

    def run_settings(self) -> dict:
        """The settings the run used (mask_prompt, max_seq_length...): train_config.yaml's `train:` (either
        backend writes it), else mlx-lm's adapter_config.json ({} when neither)."""
        path = self.file(TRAIN_CONFIG_FILE)
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise InputError(f"invalid YAML: {exc}", path=path, fix="train again, or repair the file") from exc
            if isinstance(data, dict) and isinstance(data.get("train"), dict):
                return data["train"]
        return self.settings()

    def recorded_base(self) -> str | None:
        """The base model the adapter says it was trained on (mlx-lm `model`, PEFT `base_model_name_or_path`)."""
        if not self.file(ADAPTER_CONFIG).is_file():
            return None
        try:
            config = json.loads(self.file(ADAPTER_CONFIG).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc.msg}", path=self.file(ADAPTER_CONFIG), line=exc.lineno,
                             fix="train again, or repair the file") from exc
        return config.get("model") or config.get("base_model_name_or_path") or None

    def base_model(self) -> str:
        """The base an adapter (mlx-lm or PEFT) was trained on, or an error saying what to pass instead."""
        if not self.file(ADAPTER_CONFIG).is_file():
            raise InputError("no adapter_config.json: not an adapter folder (mlx-lm or PEFT)", path=self.path,
                             fix="pass the folder `dantes-mlx train` wrote (--adapter-path)")
        model = self.recorded_base()
        if not model:
            raise InputError("adapter_config.json does not name its base model", path=self.file(ADAPTER_CONFIG),
                             fix="pass --model BASE")
        return model

    def base_fingerprint(self) -> dict | None:
        """What base_fingerprint.json records ({base_model, sha256, weight_files}), None when absent."""
        path = self.file(BASE_FINGERPRINT_FILE)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def trained_on(self, dataset: str | Path) -> bool | None:
        """Whether the run here learnt from this dataset folder (None: the folder does not record it)."""
        marker = self.file(DATASET_MARKER)
        if not marker.is_file():
            return None
        return marker.read_text(encoding="utf-8").strip() == dataset_fingerprint(dataset)

    def mark_dataset(self, dataset: str | Path) -> None:
        """Record the dataset the run here learns from (before it starts: a stopped run is marked too)."""
        write_text_atomic(self.file(DATASET_MARKER), dataset_fingerprint(dataset))

    def has_checkpoint_state(self) -> bool:
        return self.file(STATE_FILE).is_file()


@dataclass(frozen=True)
class Workspace:
    """Where each stage reads and writes: dantes.yaml's project folders and the outputs its sections name."""
    data: Path = Path("data")
    adapters: Path = Path("adapters")
    reports: Path = Path("reports")
    export: Path = Path("export")
    citations_file: str = ""   # extract.output (empty: data/citations/citations.jsonl)
    pairs_file: str = ""       # generate.output (empty: data/pairs/pairs.jsonl)
    eval_citations: str = ""   # eval.citations (empty: extract's citations)
    card_dir: str = ""         # card.output_dir (empty: data/card)

    @classmethod
    def from_config(cls, config: dict) -> "Workspace":
        """The folders and files a loaded dantes.yaml names."""
        project = section(ProjectConfig, config)
        return cls(data=Path(project.data_dir), adapters=Path(project.adapters_dir),
                   reports=Path(project.reports_dir), export=Path(section(ExportConfig, config).out_dir),
                   citations_file=section(ExtractConfig, config).output,
                   pairs_file=section(GenerateConfig, config).output,
                   eval_citations=section(EvalConfig, config).citations,
                   card_dir=section(CardConfig, config).output_dir)

    @classmethod
    def under(cls, root: str | Path) -> "Workspace":
        """Every folder under one root (the demo's work folder)."""
        root = Path(root)
        return cls(data=root / "data", adapters=root / "adapters", reports=root / "reports", export=root / "export")

    def with_adapters(self, path: str | Path | None) -> "Workspace":
        """The same workspace with another adapter folder (None: unchanged)."""
        return self if path is None else replace(self, adapters=Path(path))

    raw = property(lambda self: self.data / "raw")
    clean = property(lambda self: self.data / "clean")
    citations_dir = property(lambda self: self.data / "citations")
    pairs_dir = property(lambda self: self.data / "pairs")
    dataset = property(lambda self: self.data / "dataset")
    preferences = property(lambda self: self.data / "dataset" / "preferences")  # `prefs` writes, dpo/orpo read

    @property
    def card(self) -> Path:
        """The folder `card` writes (card.json, card.md, persona.txt, its store) and the persona is read from."""
        return Path(self.card_dir) if self.card_dir else self.data / "card"

    @property
    def card_file(self) -> Path:
        return self.card / CARD_FILE

    @property
    def character_card(self) -> Path:
        """The card as text (card.md), what generate's out-of-character answers are grounded in."""
        return self.card / "card.md"

    @property
    def citations(self) -> Path:
        """The citations file extract writes and generate reads."""
        return Path(self.citations_file) if self.citations_file else self.citations_dir / "citations.jsonl"

    @property
    def pairs(self) -> Path:
        """The pairs file generate writes and prepare reads."""
        return Path(self.pairs_file) if self.pairs_file else self.pairs_dir / "pairs.jsonl"

    def split_files(self, folder: str | Path | None = None) -> list[Path]:
        """train/valid/test.jsonl of a dataset folder (the project's by default)."""
        folder = Path(folder) if folder is not None else self.dataset
        return [folder / f"{split}.jsonl" for split in SPLITS]

    def adapter(self, path: str | Path | None = None) -> AdapterFolder:
        """An adapter folder: `path`, else the project's."""
        return AdapterFolder(Path(path) if path is not None else self.adapters)

    def citation_files(self) -> list[Path]:
        """extract.output when set, else every <data>/citations/*.jsonl extract wrote (side files left out)."""
        if self.citations_file:
            return [Path(self.citations_file)]
        return stage_outputs(self.citations_dir, "citations",
                             "run `dantes-mlx extract` first, or give citation files as arguments")

    def pairs_files(self) -> list[Path]:
        """What prepare reads by default: generate.output when set, else every <data>/pairs/*.jsonl (side files
        left out)."""
        if self.pairs_file:
            if not Path(self.pairs_file).is_file():
                raise InputError("no pairs file", path=self.pairs_file, fix="run `dantes-mlx generate` first (it "
                                 "writes generate.output of dantes.yaml), or give input files")
            return [Path(self.pairs_file)]
        return stage_outputs(self.pairs_dir, "pairs", "run `dantes-mlx generate` first, or give input files")

    def eval_citation_candidates(self, data_dir: str | Path | None = None) -> list[str]:
        """Where eval looks for citations: eval.citations (or extract.output) alone, else beside the dataset it
        reads, then the project's."""
        explicit = self.eval_citations or self.citations_file
        if explicit:
            return [explicit]
        beside = [str(Path(data_dir).parent / "citations" / "citations.jsonl")] if data_dir else []
        return list(dict.fromkeys(beside + [str(self.citations_dir / "citations.jsonl")]))
