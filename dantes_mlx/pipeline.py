"""The whole pipeline: `demo` (offline, tiny model, built-in scene) and `run` (the real thing from dantes.yaml)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dantes_mlx.config import (SECTIONS, CharacterConfig, CleanConfig, ExtractConfig, GenerateConfig,
                               LLMConfig, PrepareConfig, ProjectConfig, TrainConfig, section)
from dantes_mlx.errors import ConfigError, DantesError, InputError
from dantes_mlx.export import check_export_settings
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
    """Where each stage reads and writes, under one project folder (extract.output / generate.output if set)."""
    root: Path
    data: Path = field(init=False)
    citations_file: str = ""
    pairs_file: str = ""

    def __post_init__(self):
        self.root = Path(self.root)
        self.data = self.root / "data"

    raw = property(lambda self: self.data / "raw")
    clean = property(lambda self: self.data / "clean")
    citations = property(lambda self: Path(self.citations_file or self.data / "citations" / "citations.jsonl"))
    pairs = property(lambda self: Path(self.pairs_file or self.data / "pairs" / "pairs.jsonl"))
    dataset = property(lambda self: self.data / "dataset")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _stage(name: str, log: Callable[[str], None]):
    log(f"\n== {name} " + "=" * max(0, 60 - len(name)))
    return time.monotonic()


class PipelineInterrupted(DantesError):
    """Ctrl-C during a stage: what the stages finished is kept; the message gives the command that goes on."""
    exit_code = 130


def interrupted_by_user(exc: BaseException) -> bool:
    """Ctrl-C, as such or as the stage's own error (LLM stores, a training stopped at its checkpoint)."""
    from dantes_mlx.extract import ExtractInterrupted
    from dantes_mlx.generate import GenerateInterrupted

    return isinstance(exc, (KeyboardInterrupt, ExtractInterrupted, GenerateInterrupted)) or \
        isinstance(exc.__context__, KeyboardInterrupt)


def stopped(stage: str, exc: BaseException, command: str) -> PipelineInterrupted:
    """The error a Ctrl-C in `stage` becomes: the stage's own note, then the command that continues."""
    note = (getattr(exc, "detail", None) or str(exc) or "Ctrl-C").removeprefix("interrupted: ")
    return PipelineInterrupted(f"interrupted during {stage}: {note}",
                               fix=f"run `{command}` to continue: stores, caches and checkpoints are reused")


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

    if not books:
        raise InputError("no clean books to extract from", path=layout.clean,
                         fix="run the fetch and clean stages first (`dantes-mlx run --to clean`), or put "
                             "cleaned .txt files there")
    loaded = [load_book(p) for p in books]
    method = ("hybrid" if llm and (llm.model or llm.url) else "rules") if cfg.method == "auto" else cfg.method
    if method in ("llm", "hybrid"):
        from dantes_mlx.extract import check_paths, llm_sampling
        from dantes_mlx.extract_hybrid import extract_hybrid
        from dantes_mlx.llm import make_client

        # The sampling of `dantes-mlx extract` itself: same store keys, so a run reuses its replies.
        check_paths(layout.citations, loaded, cfg.prompt_file)  # before a model is loaded
        run = extract_hybrid if method == "hybrid" else extract_llm
        summary = run(loaded, character, cfg, layout.citations, make_client(llm), sampling=llm_sampling(cfg, llm),
                      concurrency=llm.concurrency, progress=False, max_failures=llm.max_consecutive_failures)
    else:
        summary = extract_rules(loaded, character, cfg, layout.citations, progress=False)
    rejected = ", ".join(f"{k} {v}" for k, v in summary.rejected.items()) or "none"
    log(f"{summary.kept} citations of {character.name} kept ({summary.method}; {summary.chunks} chunks, "
        f"{summary.skipped} skipped by the pre-filter, {summary.merged} overlap duplicates merged; "
        f"rejected: {rejected}) -> {summary.output}")
    if summary.failure() is not None:  # `run` stops here: generate must not read a partial or stale file
        raise summary.failure()
    return layout.citations


def stage_generate(layout: Layout, client, character: CharacterConfig, cfg: GenerateConfig,
                   concurrency: int, log, max_failures: int = 5) -> Path:
    from dantes_mlx.generate import generate_pairs, select_citations

    citations, notes = select_citations([layout.citations], character, chosen=False)
    for note in notes:
        log(f"warning: {note}")
    summary = generate_pairs(citations, client, layout.pairs, cfg, character, concurrency=concurrency,
                             progress=False, inputs=[layout.citations], max_failures=max_failures)
    log("\n".join(summary.lines()))
    if summary.failure() is not None:  # `run` stops here: prepare must not read a partial or stale file
        raise summary.failure()
    return layout.pairs


def stage_prepare(layout: Layout, cfg: PrepareConfig, persona: str, tokenizer_name: str, batch_size: int,
                  log) -> Path:
    from dantes_mlx.dataset import default_inputs, prepare
    from dantes_mlx.validate import load_tokenizer

    tokenizer, note = load_tokenizer(tokenizer_name)
    report = prepare(default_inputs(layout.data, layout.pairs_file), layout.dataset, cfg, persona, tokenizer, note, batch_size=batch_size)
    log(report.summary())
    return layout.dataset


def stage_train(cfg: TrainConfig, dataset: Path, adapters: Path, log) -> None:
    """Train, resuming the last checkpoint only when it was trained on this very dataset."""
    from dantes_mlx.train import DATASET_MARKER, STATE_FILE, dataset_fingerprint, summary, train

    marker, fingerprint = adapters / DATASET_MARKER, dataset_fingerprint(dataset)
    resume = (adapters / STATE_FILE).is_file() and marker.is_file() and marker.read_text() == fingerprint
    log("resuming from the last checkpoint" if resume else "training from scratch")
    write_text_atomic(marker, fingerprint)  # train() writes it too; here it also marks a run stopped before it starts
    log(summary(train(cfg, dataset, adapters, resume=resume, restart=not resume)))  # new data: start again


# ---------------------------------------------------------------- demo
def demo(workdir: str | Path = "demo-run", book: str | None = None, iters: int = 60,
         quantization: str = "q4_k_m", log: Callable[[str], None] = _say) -> dict:
    """Offline end to end on a built-in scene (or `book` with internet) and a tiny model built on the fly.

    Run again on the same `workdir`, it reuses the stored pairs and resumes training from its checkpoint."""
    command = shlex.join(["dantes-mlx", "demo", "--workdir", str(workdir)] + (["--book", str(book)] if book else [])
                         + (["--iters", str(iters)] if iters != 60 else [])
                         + (["--quantization", quantization] if quantization != "q4_k_m" else []))
    begun: list[str] = []

    def begin(title: str) -> float:
        begun.append(title.split(" (")[0])
        return _stage(title, log)

    try:
        return _demo(Layout(Path(workdir)), book, iters, quantization, log, begin)
    except (KeyboardInterrupt, Exception) as exc:
        if begun and interrupted_by_user(exc):
            raise stopped(begun[-1], exc, command) from None
        raise


def _demo(layout: Layout, book: str | None, iters: int, quantization: str, log, begin) -> dict:
    from dantes_mlx.chat import load_engine
    from dantes_mlx.demo_writer import DemoPairWriter
    from dantes_mlx.export import export_all
    from dantes_mlx.gutenberg_fetch import copy_book, fetch_books
    from dantes_mlx.tinymodel import build_tiny_model, builtin_corpus

    started = time.monotonic()
    character = CharacterConfig()
    begin("fetch")
    fetched = fetch_books([book], layout.raw) if book else [copy_book(DEMO_SCENE, layout.raw)]
    log("\n".join(f"{f.book}: {f.status} -> {f.path}" for f in fetched))
    begin("clean")
    books = stage_clean(layout, CleanConfig(), log)
    begin("extract (French dialogue rules)")
    stage_extract(layout, books, character, ExtractConfig(method="rules"), None, log)
    begin("generate (demo template stand-in for the LLM)")
    log("note: the demo fills fixed templates instead of calling an LLM; `dantes-mlx run` uses your LLM")
    stage_generate(layout, DemoPairWriter(), character, GenerateConfig(), 1, log)
    begin("tiny base model")
    corpus = builtin_corpus() + "\n" + "\n".join(Path(p).read_text(encoding="utf-8") for p in books)
    base = build_tiny_model(layout.root / "tiny-base", corpus)
    log(f"Mistral-architecture model with random weights and a French SentencePiece tokenizer: {base}")
    begin("prepare")
    stage_prepare(layout, PrepareConfig(), character.persona, str(base), 2, log)
    begin("train (mlx-lm LoRA)")
    cfg = TrainConfig(backend="mlx", base_model=str(base), num_layers=-1, rank=8, scale=4.0, dropout=0.0,
                      learning_rate=2e-3, warmup_steps=5, batch_size=2, iters=iters, max_seq_length=512,
                      steps_per_report=10, steps_per_eval=max(10, iters // 2), save_every=max(10, iters // 2),
                      val_batches=-1)
    stage_train(cfg, layout.dataset, layout.root / "adapters", log)
    begin("export (PEFT, GGUF LoRA, fused GGUF, Modelfile) + parity gate")
    exported = export_all(base, layout.root / "adapters", layout.root / "export", quantization=quantization,
                          name="dantes-demo", persona=character.persona, parity=True, log=log)
    log(exported.summary())
    begin("ask through the GGUF (llama.cpp)")
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
    """Every stage from dantes.yaml; each resumes where it stopped (stores, caches, checkpoints)."""
    stages = stage_range(start, stop)
    settings = {cls: section(cls, config) for cls in SECTIONS.values()}  # a typo fails now, not hours later
    if "export" in stages:  # a persona the Modelfile cannot hold fails now, not after training
        check_export_settings(config)
    llm = settings[LLMConfig]
    if "generate" in stages and not (llm.model or llm.url):
        path = getattr(config, "path", None) or "dantes.yaml"
        raise ConfigError("no generator LLM configured for the generate stage", path=f"{path} [llm]",
                          fix="set llm.model (a GGUF path or HF_REPO:FILE.gguf) or llm.url (llama-server, Ollama), "
                              "or stop before it with `--to extract`")
    check_layout(settings)
    path = getattr(config, "path", None)
    command = ["dantes-mlx", "run"] + (["--config", str(path)] if path and Path(path) != Path("dantes.yaml") else [])
    for name in stages:
        began = _stage(name, log)
        try:
            _run_stage(name, config, settings, log)
        except (KeyboardInterrupt, Exception) as exc:
            if interrupted_by_user(exc):
                resume = command + ["--from", name] + (["--to", stop] if stop else [])
                raise stopped(name, exc, shlex.join(resume)) from None
            raise
        log(f"[{name}] done in {time.monotonic() - began:.1f} s")


def check_layout(settings: dict) -> None:
    """The files `run` writes, checked before the first stage: no stage's output is another stage's input."""
    from dantes_mlx.extract import side_paths
    from dantes_mlx.generate import check_paths
    from dantes_mlx.outputs import check_output

    layout = _layout(settings)
    check_output(layout.citations, writes=side_paths(layout.citations), flag="extract.output",
                 example="citations.jsonl")
    check_paths(layout.pairs, [layout.citations, *side_paths(layout.citations)], flag="generate.output")
    check_output(layout.dataset, kind="dir", inputs=[layout.citations, layout.pairs], flag="project.data_dir",
                 writes=[layout.dataset / f"{s}.jsonl" for s in ("train", "valid", "test")])


def _layout(settings: dict) -> Layout:
    layout = Layout(Path("."), citations_file=settings[ExtractConfig].output,
                    pairs_file=settings[GenerateConfig].output)
    layout.data = Path(settings[ProjectConfig].data_dir)
    return layout


def _run_stage(name: str, config: dict, settings: dict, log) -> None:
    """One stage of `run`, reading and writing where dantes.yaml says."""
    project, character, llm = settings[ProjectConfig], settings[CharacterConfig], settings[LLMConfig]
    train_cfg, adapters = settings[TrainConfig], Path(project.adapters_dir)
    layout = _layout(settings)
    if name == "fetch":
        from dantes_mlx.gutenberg_fetch import fetch_books

        for f in fetch_books(project.books, layout.raw, base_url=project.gutenberg_url):
            log(f"{f.book}: {f.status} -> {f.path}")
    elif name == "clean":
        stage_clean(layout, settings[CleanConfig], log)
    elif name == "extract":
        stage_extract(layout, sorted(layout.clean.glob("*.txt")), character, settings[ExtractConfig], llm, log)
    elif name == "generate":
        from dantes_mlx.generate import check_paths
        from dantes_mlx.llm import make_client

        check_paths(layout.pairs, [layout.citations], settings[GenerateConfig].prompt_file)  # before a model loads
        stage_generate(layout, make_client(llm), character, settings[GenerateConfig],
                       llm.concurrency if llm.url else 1, log, llm.max_consecutive_failures)
    elif name == "prepare":
        prep = section(PrepareConfig, config)
        prep.max_seq_length = min(prep.max_seq_length, train_cfg.max_seq_length)  # what training keeps
        stage_prepare(layout, prep, character.persona, prep.tokenizer or train_cfg.base_model,
                      train_cfg.batch_size, log)
    elif name == "train":
        stage_train(train_cfg, layout.dataset, adapters, log)
    elif name == "export":
        from dantes_mlx.export import export_project

        log(export_project(config, adapter_path=adapters, log=log).summary())
    elif name == "eval":
        from dantes_mlx.evaluate import eval_failure, evaluate_project
        from dantes_mlx.report import text_summary

        result, index = evaluate_project(config, {}, adapter_path=str(adapters))
        log(text_summary(result) + f"\nreport: {index}")
        if eval_failure(result, index) is not None:
            raise eval_failure(result, index)
