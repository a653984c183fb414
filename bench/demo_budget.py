"""Time budget of a real-model demo on this machine: import, LoRA training, held-out loss, export + parity, chat speed.

The flow a real-model demo runs, each stage timed in one invocation on the real SmolLM2-135M-Instruct:
  1. `dantes-mlx import-gguf --embedded` (GGUF Q4_1 -> float32 safetensors folder);
  2. `dantes-mlx train` (default: the torch plugin backend) on --rows persona rows (French questions and
     Dantès' answers, ../shared/data/reference/dantes_conversations.jsonl), once per --layers value, with the
     held-out loss (--test rows from other citations) every --eval-every steps: what N steps buy;
  3. `dantes-mlx export` of the last adapter to a fused GGUF per --quant (parity gate on);
  4. generation speed of the exported GGUF through llama-cpp-python in process, n_threads 1 and 2
     (the peer measured in the same run: the base Q4_1 GGUF).
The held-out loss at step k is measured before step k runs (mlx-lm's and the plugin's rhythm), so the
"step 80" figure is after 79 updates.

Run: python bench/demo_budget.py --torch-python /work/venv-torch/bin/python [--steps 80 --layers 8,-1]
     (~15-40 min on 2 busy cores; --steps 20 --layers 8 for a quick look)
The last line is `score: X` = seconds of the demo's path as measured here: import + the first --layers
training run (validation included) + the first export (parity included); installs not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlx_cpu_blas import find_openblas, preload_env
from train_real_compare import REPO, import_model, python_path, run_measured, train_command, write_persona_data

# the base GGUF the generation speed is compared against (where `import-gguf --embedded` caches it)
GGUF_CACHE = Path.home() / ".cache" / "dantes-mlx" / "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = "Edmond, que ressentez-vous en revoyant le port de Marseille ?"


def train_run(args, layers: int, model: Path, data: Path, work: Path) -> dict:
    """One training run with `layers` adapted layers: s/step, held-out loss by step, peak RSS, or its error."""
    out = work / f"adapter_{'all' if layers < 0 else layers}"
    python, env = args.torch_python, {}
    if args.backend == "mlx":
        python, lib = sys.executable, find_openblas(args.openblas)
        env = preload_env(lib, 1) if lib else {}
    run_args = argparse.Namespace(**{**vars(args), "layers": layers})
    cmd = train_command(python, args.backend, run_args, model, data, out)
    cmd[cmd.index("--steps-per-eval") + 1] = str(args.eval_every)
    cmd[cmd.index("--steps-per-report") + 1] = str(args.eval_every)
    cmd[cmd.index("--save-every") + 1] = str(args.steps)
    full_env = {**os.environ, "PYTHONPATH": python_path(REPO / "plugins" / "dantes-mlx-unsloth"),
                "DANTES_UNSLOTH_PATH": "loop", **env}
    load = os.getloadavg()[0]
    code, wall, rss = run_measured(cmd, work / f"{out.name}.log", full_env, args.timeout)
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()] \
        if (out / "metrics.jsonl").is_file() else []
    result = {"layers": layers, "adapter": out, "wall": wall, "rss": rss, "load": load,
              "held_out": {r["step"]: r["val_loss"] for r in rows if "val_loss" in r},
              "val_time": sum(r.get("val_time", 0) for r in rows if "val_loss" in r),
              "step_s": [1 / r["iters_per_sec"] for r in rows if "iters_per_sec" in r]}
    if code:
        tail = (work / f"{out.name}.log").read_text(errors="replace").strip().splitlines()[-3:]
        result["error"] = f"exit {code}: " + " | ".join(tail)
    return result


def export_run(adapter: Path, model: Path, out: Path, quant: str, timeout: float) -> dict:
    """`dantes-mlx export` to a fused GGUF of type `quant` with the parity gate; time, files, or the error."""
    cmd = [sys.executable, "-m", "dantes_mlx", "export", "--adapter-path", str(adapter), "--base-model", str(model),
           "-o", str(out), "--quantization", quant, "--parity", "--no-ollama-create"]
    log = out.parent / f"export_{quant}.log"
    env = {**os.environ, "PYTHONPATH": python_path()}
    code, wall, rss = run_measured(cmd, log, env, timeout)
    text = log.read_text(errors="replace")
    result = {"quant": quant, "wall": wall, "rss": rss, "code": code, "load": os.getloadavg()[0],
              "ggufs": sorted(str(p) for p in out.glob("*.gguf")),
              "parity": [ln.strip() for ln in text.splitlines() if "parity" in ln.lower()][-4:]}
    if code:
        result["error"] = " | ".join(text.strip().splitlines()[-4:])
    return result


def generation_speed(gguf: Path, threads: int, max_tokens: int = 96) -> float:
    """Completion tokens/s of one greedy chat reply through llama-cpp-python in process."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=1024, n_threads=threads, verbose=False, seed=0)
    messages = [{"role": "user", "content": QUESTION}]
    llm.create_chat_completion(messages=messages, max_tokens=8, temperature=0)  # warm-up
    tic = time.perf_counter()
    reply = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0)
    seconds = time.perf_counter() - tic
    llm.close()
    return reply["usage"]["completion_tokens"] / seconds


def print_training(runs: list[dict], steps: int) -> None:
    """Held-out loss by step and seconds per step, one line per --layers value."""
    for r in runs:
        name = "all 30" if r["layers"] < 0 else f"last {r['layers']}"
        if "error" in r:
            print(f"train, LoRA on {name} layers: failed: {r['error']}")
        per_step = sorted(r["step_s"])[len(r["step_s"]) // 2] if r["step_s"] else float("nan")
        curve = ", ".join(f"{k}: {v:.3f}" for k, v in sorted(r["held_out"].items()))
        print(f"train, LoRA on {name} layers: {steps} steps in {r['wall']:.0f} s wall ({per_step:.1f} s/step median "
              f"of {len(r['step_s'])} reports, validation {r['val_time']:.0f} s), peak RSS {r['rss']:.2f} GB, "
              f"load {r['load']:.1f}\n  held-out loss by step: {curve}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--layers", default="8,-1", help="comma-separated --num-layers values [default: 8,-1]")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--backend", default="unsloth", help="unsloth (torch) or mlx [default: unsloth]")
    parser.add_argument("--openblas", help="OpenBLAS preloaded for --backend mlx [default: Debian's path]")
    parser.add_argument("--torch-python", default=sys.executable)
    parser.add_argument("--quant", default="q8_0", help="comma-separated fused GGUF types ('': no export) [default: q8_0]")
    parser.add_argument("--skip-generate", action="store_true", help="leave out the llama.cpp speed stage")
    parser.add_argument("--model", help="an imported SmolLM2 folder [default: import it here, timed]")
    parser.add_argument("--keep", help="copy the adapters and exports to this folder")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="demo-budget-") as tmp:
        work = Path(tmp)
        model, seconds_import = (Path(args.model), 0.0) if args.model else (work / "smollm2", None)
        if seconds_import is None:
            seconds_import = import_model(model)
            print(f"import-gguf --embedded: {seconds_import:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
        data = write_persona_data(work / "data", args.rows, args.test)
        print(f"{args.backend}: {args.rows} rows, {args.test} held out, batch {args.batch}, seq <= {args.seq}, "
              f"LoRA r={args.rank} scale {args.scale}, lr {args.lr} constant, {args.steps} steps", flush=True)
        runs = [train_run(args, int(n), model, data, work) for n in args.layers.split(",")]
        print_training(runs, args.steps)
        exports = [export_run(runs[0]["adapter"], model, work / f"export_{q}", q, args.timeout)
                   for q in args.quant.split(",") if q] if "error" not in runs[0] else []
        for e in exports:
            state = f"failed: {e['error']}" if "error" in e else "ok"
            print(f"export {e['quant']}: {e['wall']:.0f} s, peak RSS {e['rss']:.2f} GB, load {e['load']:.1f}, {state}")
            print("  " + "\n  ".join(e["parity"]))
        fused = next((Path(g) for e in exports for g in e["ggufs"] if "error" not in e and e["quant"] in g), None)
        for name, gguf in () if args.skip_generate else (("base Q4_1", GGUF_CACHE), ("fused export", fused)):
            if gguf and gguf.is_file():
                speeds = {t: generation_speed(gguf, t) for t in (1, 2)}
                print(f"llama.cpp {name} ({gguf.name}): " + ", ".join(f"n_threads {t}: {v:.1f} tok/s"
                                                                    for t, v in speeds.items()))
        if args.keep:
            subprocess.run(["cp", "-r", *[str(p) for p in work.iterdir() if p.name != "smollm2"], args.keep],
                           check=False)
    total = seconds_import + runs[0]["wall"] + (exports[0]["wall"] if exports else 0)
    print("score = seconds of import (0 with --model) + first training run + first export (installs not counted)")
    print(f"score: {total:.0f}")


if __name__ == "__main__":
    main()
