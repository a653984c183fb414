"""The whole pipeline: `demo` (offline, tiny model, built-in scene) and `run` (the real thing from dantes.yaml)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dantes_mlx.config import (CharacterConfig, CleanConfig, ExtractConfig, GenerateConfig,
                               LLMConfig, PrepareConfig, ProjectConfig, TrainConfig, section)
from dantes_mlx.errors import ConfigError
from dantes_mlx.store import write_text_atomic

STAGES = ["fetch", "clean", "extract", "generate", "prepare", "train", "export", "eval"]
RESOURCES = Path(__file__).parent / "resources"
DEMO_SCENE = RESOURCES / "demo_scene.txt"
DEMO_QUESTION = "Qui êtes-vous, monsieur le comte ?"

REAL_THING = """\
For the real thing on a Mac with internet (Apple Silicon, 16 GB or more):
  dantes-mlx init                      # writes dantes.yaml (Monte-Cristo, 4 volumes, Mistral-7B)
  # in dantes.yaml set llm.model to a local generator GGUF (or llm.url to llama-server / Ollama)
  dantes-mlx run                       # fetch, clean, extract, generate, prepare, train, export, eval
  ollama run dantes
"""


@dataclass
class Layout:
    """Where each stage reads and writes, under one project folder."""
    root: Path
    data: Path = field(init=False)

    def __post_init__(self):
        self.root = Path(self.root)
        self.data = self.root / "data"

    raw = property(lambda self: self.data / "raw")
    clean = property(lambda self: self.data / "clean")
    citations = property(lambda self: self.data / "citations" / "citations.jsonl")
    pairs = property(lambda self: self.data / "pairs" / "pairs.jsonl")
    dataset = property(lambda self: self.data / "dataset")


DATASET_MARKER = "dataset.sha256"


def dataset_fingerprint(folder: Path) -> str:
    """sha256 of train.jsonl and valid.jsonl: what a training run learnt from."""
    import hashlib

    digest = hashlib.sha256()
    for name in ("train.jsonl", "valid.jsonl"):
        path = Path(folder) / name
        digest.update(name.encode() + (path.read_bytes() if path.is_file() else b"-"))
    return digest.hexdigest()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _stage(name: str, log: Callable[[str], None]):
    log(f"\n== {name} " + "=" * max(0, 60 - len(name)))
    return time.monotonic()


# ---------------------------------------------------------------- stages shared by demo and run
def stage_clean(layout: Layout, cfg: CleanConfig, log) -> list[Path]:
    from dantes_mlx.gutenberg import clean_books

    done = clean_books([], None, layout.raw, layout.clean, cfg)
    for src, dst, result in done:
        stats = ", ".join(f"{k} {v}" for k, v in result.stats.items())
        log(f"{src.name} -> {dst}  ({stats})")
    return [dst for _, dst, _ in done]


def stage_extract(layout: Layout, books: list[Path], character: CharacterConfig, cfg: ExtractConfig,
                  llm: LLMConfig | None, log) -> Path:
    from dantes_mlx.extract import extract_llm, extract_rules, load_book

    loaded = [load_book(p) for p in books]
    if cfg.method == "llm" or (cfg.method == "auto" and llm and (llm.model or llm.url)):
        from dantes_mlx.llm import make_client

        summary = extract_llm(loaded, character, cfg, layout.citations, make_client(llm))
    else:
        summary = extract_rules(loaded, character, cfg, layout.citations, progress=False)
    rejected = ", ".join(f"{k} {v}" for k, v in summary.rejected.items()) or "none"
    log(f"{summary.kept} citations of {character.name} kept ({summary.method}; {summary.chunks} chunks, "
        f"{summary.skipped} skipped by the pre-filter, {summary.merged} overlap duplicates merged; "
        f"rejected: {rejected}) -> {layout.citations}")
    return layout.citations


def stage_generate(layout: Layout, client, character: CharacterConfig, cfg: GenerateConfig,
                   concurrency: int, log) -> Path:
    from dantes_mlx.generate import generate_pairs, load_citations

    summary = generate_pairs(load_citations([layout.citations]), client, layout.pairs, cfg, character,
                             concurrency=concurrency, progress=False)
    log("\n".join(summary.lines()))
    return layout.pairs


def stage_prepare(layout: Layout, cfg: PrepareConfig, persona: str, tokenizer_name: str, batch_size: int,
                  log) -> Path:
    from dantes_mlx.dataset import prepare
    from dantes_mlx.validate import load_tokenizer

    tokenizer, note = load_tokenizer(tokenizer_name)
    report = prepare([layout.pairs], layout.dataset, cfg, persona, tokenizer, note, batch_size=batch_size)
    log(report.summary())
    return layout.dataset


# ---------------------------------------------------------------- demo
def demo(workdir: str | Path = "demo-run", book: str | None = None, iters: int = 60,
         quantization: str = "q4_k_m", log: Callable[[str], None] = _say) -> dict:
    """Offline end to end on a built-in scene (or `book` with internet) and a tiny model built on the fly."""
    from dantes_mlx.chat import load_engine
    from dantes_mlx.demo_writer import DemoPairWriter
    from dantes_mlx.export import export_all
    from dantes_mlx.gutenberg_fetch import copy_book, fetch_books
    from dantes_mlx.tinymodel import build_tiny_model, builtin_corpus
    from dantes_mlx.train import summary as train_summary
    from dantes_mlx.train import train

    started = time.monotonic()
    layout = Layout(Path(workdir))
    character = CharacterConfig()
    _stage("fetch", log)
    fetched = fetch_books([book], layout.raw) if book else [copy_book(DEMO_SCENE, layout.raw)]
    log("\n".join(f"{f.book}: {f.status} -> {f.path}" for f in fetched))
    _stage("clean", log)
    books = stage_clean(layout, CleanConfig(), log)
    _stage("extract (French dialogue rules)", log)
    stage_extract(layout, books, character, ExtractConfig(method="rules"), None, log)
    _stage("generate (demo template stand-in for the LLM)", log)
    log("note: the demo fills fixed templates instead of calling an LLM; `dantes-mlx run` uses your LLM")
    stage_generate(layout, DemoPairWriter(), character, GenerateConfig(), 1, log)
    _stage("tiny base model", log)
    corpus = builtin_corpus() + "\n" + "\n".join(Path(p).read_text(encoding="utf-8") for p in books)
    base = build_tiny_model(layout.root / "tiny-base", corpus)
    log(f"Mistral-architecture model with random weights and a French SentencePiece tokenizer: {base}")
    _stage("prepare", log)
    stage_prepare(layout, PrepareConfig(), character.persona, str(base), 2, log)
    _stage("train (mlx-lm LoRA)", log)
    cfg = TrainConfig(backend="mlx", base_model=str(base), num_layers=-1, rank=8, scale=4.0, dropout=0.0,
                      learning_rate=2e-3, warmup_steps=5, batch_size=2, iters=iters, max_seq_length=512,
                      steps_per_report=10, steps_per_eval=max(10, iters // 2), save_every=max(10, iters // 2),
                      val_batches=-1)
    result = train(cfg, layout.dataset, layout.root / "adapters")
    log(train_summary(result))
    _stage("export (PEFT, GGUF LoRA, fused GGUF, Modelfile) + parity gate", log)
    exported = export_all(base, layout.root / "adapters", layout.root / "export", quantization=quantization,
                          name="dantes-demo", persona=character.persona, parity=True, log=log)
    log(exported.summary())
    _stage("ask through the GGUF (llama.cpp)", log)
    engine = load_engine(gguf=exported.files["fused"])
    answer = engine.generate([{"role": "system", "content": character.persona},
                              {"role": "user", "content": DEMO_QUESTION}], max_tokens=40, seed=0)
    log(f"Q: {DEMO_QUESTION}\nA: {answer}\n(a tiny random model trained for {iters} steps: "
        "the words are noise; the plumbing is real)")
    manifest = {
        "workdir": str(layout.root), "seconds": round(time.monotonic() - started, 1),
        "book": str(fetched[0].path), "clean": [str(p) for p in books],
        "citations": str(layout.citations), "pairs": str(layout.pairs), "dataset": str(layout.dataset),
        "base_model": str(base), "adapters": str(layout.root / "adapters"),
        "exports": exported.to_dict(), "question": DEMO_QUESTION, "answer": answer,
    }
    write_text_atomic(layout.root / "demo.json", json.dumps(manifest, ensure_ascii=False, indent=1) + "\n")
    log(f"\nDemo finished in {manifest['seconds']} s; every file is listed in {layout.root / 'demo.json'}\n")
    log(REAL_THING)
    return manifest


# ---------------------------------------------------------------- run
def stage_range(start: str | None, stop: str | None) -> list[str]:
    """The stages from `start` to `stop` inclusive, with an error listing valid names."""
    for name in (start, stop):
        if name and name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}", fix=f"valid stages: {', '.join(STAGES)}")
    first = STAGES.index(start) if start else 0
    last = STAGES.index(stop) if stop else len(STAGES) - 1
    if first > last:
        raise ConfigError(f"--from {start} comes after --to {stop}", fix=f"stages run in order: {', '.join(STAGES)}")
    return STAGES[first:last + 1]


def run(config: dict, start: str | None = None, stop: str | None = None,
        log: Callable[[str], None] = _say) -> None:
    """Every stage from dantes.yaml; each resumes where it stopped (stores, caches, --resume)."""
    from dantes_mlx.llm import make_client

    project = section(ProjectConfig, config)
    character = section(CharacterConfig, config)
    llm = section(LLMConfig, config)
    layout = Layout(Path("."))
    layout.data = Path(project.data_dir)
    train_cfg = section(TrainConfig, config)
    adapters = Path(project.adapters_dir)
    books: list[Path] = sorted(layout.clean.glob("*.txt"))
    for name in stage_range(start, stop):
        began = _stage(name, log)
        if name == "fetch":
            from dantes_mlx.gutenberg_fetch import fetch_books

            for f in fetch_books(project.books, layout.raw, base_url=project.gutenberg_url):
                log(f"{f.book}: {f.status} -> {f.path}")
        elif name == "clean":
            books = stage_clean(layout, section(CleanConfig, config), log)
        elif name == "extract":
            stage_extract(layout, books, character, section(ExtractConfig, config), llm, log)
        elif name == "generate":
            stage_generate(layout, make_client(llm), character, section(GenerateConfig, config),
                           llm.concurrency if llm.url else 1, log)
        elif name == "prepare":
            prep = section(PrepareConfig, config)
            prep.max_seq_length = min(prep.max_seq_length, train_cfg.max_seq_length)  # what training keeps
            stage_prepare(layout, prep, character.persona,
                          section(PrepareConfig, config).tokenizer or train_cfg.base_model,
                          train_cfg.batch_size, log)
        elif name == "train":
            from dantes_mlx.train import STATE_FILE, summary, train

            # Resume only a run on this very dataset; a regenerated dataset trains from scratch.
            marker, fingerprint = adapters / DATASET_MARKER, dataset_fingerprint(layout.dataset)
            resume = (adapters / STATE_FILE).is_file() and marker.is_file() and marker.read_text() == fingerprint
            log("resuming from the last checkpoint" if resume else "training from scratch")
            write_text_atomic(marker, fingerprint)
            log(summary(train(train_cfg, layout.dataset, adapters, resume=resume)))
        elif name == "export":
            from dantes_mlx.export import export_project

            log(export_project(config, adapter_path=adapters, log=log).summary())
        elif name == "eval":
            from dantes_mlx.evaluate import evaluate_project
            from dantes_mlx.report import text_summary

            result, index = evaluate_project(config, {}, adapter_path=str(adapters))
            log(text_summary(result) + f"\nreport: {index}")
        log(f"[{name}] done in {time.monotonic() - began:.1f} s")
