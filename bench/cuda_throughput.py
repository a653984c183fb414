"""Training throughput of the `unsloth` plugin backend on whatever torch has (meant for an NVIDIA GPU).

Builds a random Mistral (default 4 layers, hidden 256; --layers/--hidden for a larger one), writes chat
rows <= 256 tokens, and runs `dantes-mlx train --backend unsloth` on it: Unsloth + TRL when Unsloth is
installed and CUDA is present, else transformers + peft (TRL if installed, else the built-in loop). It
prints the path and device the run took, then tokens/s (the median of the reports after the first) and
peak memory. On a machine without CUDA it still runs, on the CPU, and says so.

Run: python bench/cuda_throughput.py [--iters 40] [--layers 8 --hidden 1024]   (needs torch + the plugin)
The last line is `tokens/s: X (path, device)`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LINEAR_KEYS = "self_attn.q_proj,self_attn.k_proj,self_attn.v_proj,self_attn.o_proj,mlp.gate_proj,mlp.up_proj,mlp.down_proj"


def build_inputs(work: Path, layers: int, hidden: int) -> tuple[Path, Path]:
    """A random Mistral and 64 chat rows of the package's French prose (3-6 sentence answers)."""
    from dantes_mlx.models.tiny import build_tiny_model, builtin_corpus

    model = build_tiny_model(work / "model", num_layers=layers, hidden_size=hidden, intermediate_size=3 * hidden,
                             num_heads=max(hidden // 64, 4), num_kv_heads=max(hidden // 256, 2))
    sentences = [s.strip() + "." for s in re.split(r"[.!?»]\s", builtin_corpus().replace("\n", " ")) if len(s) > 30]
    data = work / "data"
    data.mkdir()
    for name, n in (("train", 64), ("valid", 4)):
        rows = [json.dumps({"messages": [{"role": "user", "content": "Racontez-moi votre arrivée à Marseille."},
                                         {"role": "assistant", "content": " ".join(
                                             sentences[(i * 5 + j) % len(sentences)] for j in range(3 + i % 4))}]},
                           ensure_ascii=False) for i in range(n)]
        (data / f"{name}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return model, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256, help="a multiple of 256")
    args = parser.parse_args()
    import torch
    import yaml

    device = f"CUDA ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "no CUDA device: CPU"
    print(f"torch {torch.__version__}, {device}", flush=True)
    with tempfile.TemporaryDirectory(prefix="cuda-bench-") as tmp:
        work = Path(tmp)
        model, data = build_inputs(work, args.layers, args.hidden)
        out, every = work / "adapters", max(args.iters // 8, 1)
        cmd = [sys.executable, "-m", "dantes_mlx", "train", "--backend", "unsloth", "--base-model", str(model),
               "--data", str(data), "--adapter-path", str(out), "--iters", str(args.iters),
               "--batch-size", str(args.batch_size), "--num-layers", "-1", "--rank", "8", "--scale", "20",
               "--dropout", "0", "--target-modules", LINEAR_KEYS, "--learning-rate", "1e-4",
               "--lr-schedule", "constant", "--warmup-steps", "0", "--max-seq-length", "256", "--no-mask-prompt",
               "--steps-per-report", str(every), "--steps-per-eval", str(10 * args.iters),
               "--save-every", str(10 * args.iters), "--val-batches", "1"]
        tic = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        if proc.returncode:
            sys.exit(f"training failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
        seconds = time.perf_counter() - tic
        derived = yaml.safe_load((out / "train_config.yaml").read_text())["derived"]
        rows = [json.loads(line) for line in open(out / "metrics.jsonl") if "train_loss" in line]
    rates = [r["tokens_per_sec"] for r in rows]
    rate = statistics.median(rates[1:] if len(rates) > 1 else rates)
    print(f"model: {args.layers} layers, hidden {args.hidden}; batch {args.batch_size}, {args.iters} steps, "
          f"LoRA r=8 on every linear layer; {seconds:.1f} s wall")
    print(f"path: {derived['path_description']} on {derived['device']}")
    print(f"peak memory: {max(r['peak_memory_gb'] for r in rows):.2f} GB; last train loss {rows[-1]['train_loss']:.3f}")
    if derived["device"] != "cuda":
        print("note: no CUDA device here, so this measured the CPU path; run it on an NVIDIA machine for GPU figures")
    print(f"tokens/s: {rate:.0f} ({derived['path']}, {derived['device']})")


if __name__ == "__main__":
    main()
