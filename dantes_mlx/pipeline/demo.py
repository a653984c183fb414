"""`demo`: the whole pipeline offline on a built-in scene (or a book), through the same stage entries as `run`:
on the embedded real model (SmolLM2-135M-Instruct, see demo_real.py) by default, or with `--tiny` on a random
tiny model built on the fly and a template stand-in for the LLM (seconds, no real model needed)."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

from dantes_mlx.book import stage as book
from dantes_mlx.chat.engines import load_engine
from dantes_mlx.config import (CharacterConfig, CleanConfig, ExportConfig, ExtractConfig, GenerateConfig, LLMConfig,
                               PrepareConfig, TrainConfig)
from dantes_mlx.dataset import stage as dataset
from dantes_mlx.export import stage as export
from dantes_mlx.extract import stage as extract
from dantes_mlx.generate import stage as generate
from dantes_mlx.models import tiny
from dantes_mlx.pipeline.demo_real import RealDemoSettings, real_demo
from dantes_mlx.pipeline.demo_writer import DemoPairWriter
from dantes_mlx.pipeline.run import begin, finish, interrupted_by_user, stopped
from dantes_mlx.stage import Log, stderr
from dantes_mlx.store import write_text_atomic
from dantes_mlx.train import stage as train
from dantes_mlx.workspace import Workspace

RESOURCES = Path(__file__).parent.parent / "resources"
DEMO_SCENE = RESOURCES / "demo_scene.txt"
DEMO_QUESTION = "Qui êtes-vous, monsieur le comte ?"

REAL_THING = """\
For the real thing on a Mac with internet (Apple Silicon, 16 GB or more):
  dantes-mlx init                      # writes dantes.yaml (Monte-Cristo, 4 volumes, Mistral-7B)
  # in dantes.yaml set llm.model to a local generator GGUF (or llm.url to llama-server / Ollama)
  dantes-mlx run                       # fetch, clean, extract, generate, prepare, train, export, eval
  ollama run dantes
"""


def demo(workdir: str | Path = "demo-run", book_id: str | None = None, iters: int | None = None,
         quantization: str | None = None, log: Log = stderr, tiny: bool = False,
         real: RealDemoSettings | None = None) -> dict:
    """Offline end to end on a built-in scene (or `book_id` with internet): on the embedded real model, or
    (`tiny`) on a random tiny model with a template stand-in for the LLM.

    Run again on the same `workdir`, it reuses the stored LLM answers and resumes training from its checkpoint."""
    command = shlex.join(["dantes-mlx", "demo", "--workdir", str(workdir)] + (["--tiny"] if tiny else [])
                         + (["--book", str(book_id)] if book_id else [])
                         + (["--iters", str(iters)] if iters else [])
                         + (["--quantization", quantization] if quantization else []))
    begun: list[str] = []

    def stage(title: str) -> float:
        begun.append(title.split(" (")[0])
        return begin(title, log)

    try:
        if not tiny:
            real = real or RealDemoSettings()
            real.iters, real.quantization = iters or real.iters, quantization or real.quantization
            return real_demo(Path(workdir), log, stage, real, book_id, DEMO_SCENE)
        return _demo(Path(workdir), book_id, iters or 60, quantization or "q4_k_m", log, stage)
    except (KeyboardInterrupt, Exception) as exc:
        if begun and interrupted_by_user(exc):
            raise stopped(begun[-1], exc, command) from None
        raise


def train_settings(base: Path, iters: int) -> TrainConfig:
    """The tiny model's LoRA: every layer, a high learning rate, checkpoints halfway and at the end."""
    return TrainConfig(backend="mlx", base_model=str(base), num_layers=-1, rank=8, scale=4.0, dropout=0.0,
                       learning_rate=2e-3, warmup_steps=5, batch_size=2, iters=iters, max_seq_length=512,
                       steps_per_report=10, steps_per_eval=max(10, iters // 2), save_every=max(10, iters // 2),
                       val_batches=-1)


def _demo(root: Path, book_id: str | None, iters: int, quantization: str, log: Log, stage) -> dict:
    started, character, ws = time.monotonic(), CharacterConfig(), Workspace.under(root)
    stage("fetch")
    fetch = book.FetchSettings(ids=(book_id,)) if book_id else book.FetchSettings(files=(DEMO_SCENE,))
    fetched = finish(book.run_fetch(fetch, ws, log), log)
    stage("clean")
    books = finish(book.run_clean(book.CleanSettings(CleanConfig()), ws, log), log).outputs
    stage("extract (French dialogue rules)")
    finish(extract.run(extract.Settings(character, ExtractConfig(method="rules"), LLMConfig(), progress=False),
                       ws, log), log)
    stage("generate (demo template stand-in for the LLM)")
    log("note: the demo fills fixed templates instead of calling an LLM; `dantes-mlx run` uses your LLM")
    finish(generate.run(generate.Settings(character, GenerateConfig(), LLMConfig(concurrency=1),
                                          client=DemoPairWriter(), progress=False), ws, log), log)
    stage("tiny base model")
    corpus = tiny.builtin_corpus() + "\n" + "\n".join(Path(p).read_text(encoding="utf-8") for p in books)
    base = tiny.build_tiny_model(root / "tiny-base", corpus)
    log(f"Mistral-architecture model with random weights and a French SentencePiece tokenizer: {base}")
    stage("prepare")
    finish(dataset.run_prepare(dataset.PrepareSettings(PrepareConfig(), character.persona, str(base), 2), ws, log),
           log)
    stage("train (mlx-lm LoRA)")
    finish(train.run(train.Settings(train_settings(base, iters), resume=None), ws, log), log)
    stage("export (PEFT, GGUF LoRA, fused GGUF, Modelfile) + parity gate")
    cfg = ExportConfig(quantization=quantization, ollama_name="dantes-demo", ollama_base="", ollama_create=False)
    exported = finish(export.run(export.Settings(cfg, character.persona, base_model=str(base)), ws, log), log)
    stage("ask through the GGUF (llama.cpp)")
    answer = load_engine(gguf=exported.files["fused"]).generate(
        [{"role": "system", "content": character.persona}, {"role": "user", "content": DEMO_QUESTION}],
        max_tokens=40, seed=0)
    log(f"Q: {DEMO_QUESTION}\nA: {answer}\n(a tiny random model trained for {iters} steps: "
        "the words are noise; the plumbing is real)")
    manifest = {
        "workdir": str(root), "seconds": round(time.monotonic() - started, 1),
        "book": str(fetched.books[0].path), "clean": [str(p) for p in books],
        "citations": str(ws.citations), "pairs": str(ws.pairs), "dataset": str(ws.dataset),
        "base_model": str(base), "adapters": str(ws.adapters),
        "exports": exported.to_dict(), "question": DEMO_QUESTION, "answer": answer,
    }
    write_text_atomic(root / "demo.json", json.dumps(manifest, ensure_ascii=False, indent=1) + "\n")
    log(f"\nDemo finished in {manifest['seconds']} s; every file is listed in {root / 'demo.json'}\n")
    log(REAL_THING)
    return manifest
