"""LoRA on the real SmolLM2-135M-Instruct, Linux CPU: MLX's CPU build (as shipped, and with OpenBLAS) vs torch.

All runs train, in one invocation, the same LoRA (rank, scale, last N layers, q/k/v/o + MLP projections,
no dropout) on the same persona rows (French questions and Dantès' answers from
../shared/data/reference/dantes_conversations.jsonl, prompt masking on, the same batch size, max sequence
length, Adam and constant learning rate) through `dantes-mlx train`:
  mlx            --backend mlx with the `mlx-cpu` wheel as installed (it calls netlib's reference BLAS);
  mlx+OpenBLAS   the same, with an OpenBLAS preloaded so MLX's float32 matmuls use it (bench/mlx_cpu_blas.py);
  torch          --backend unsloth (the plugin's transformers + peft loop) from --torch-python.
Tokens/s is the trainer's own figure (trained tokens per second of step time, validation excluded), the
median of the per-step reports after the first; peak memory is each process's peak RSS (wait4);
held-out loss is the validation loss on --test rows before step 1 and after the last step.

Run: python bench/train_real_compare.py --torch-python /work/venv-torch/bin/python [--steps 3]
     (15-25 min on 2 busy cores: the stock MLX run dominates, up to --timeout; --skip-stock-mlx leaves it out)
Stock MLX is so slow (netlib BLAS) that its training steps may not finish within --timeout on a busy machine:
the first held-out pass, the same rows forward only for every runner, is measured before training starts.
The last line is `ratio: X` = the first held-out pass's seconds, stock MLX / torch (above 1: torch is faster);
training tokens/s ratios are printed above it when both runs finish.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backend_cpu_compare import LINEAR_KEYS, steady
from mlx_cpu_blas import find_openblas, preload_env

REPO = Path(__file__).resolve().parents[1]
CONVERSATIONS = REPO.parent / "shared" / "data" / "reference" / "dantes_conversations.jsonl"
SYSTEM = ("Tu es Edmond Dantès, le héros du Comte de Monte-Cristo d'Alexandre Dumas. "
          "Réponds en français, à la première personne, dans la langue du roman.")


def persona_row(line: str) -> dict:
    """A ShareGPT row of the reference file as an mlx-lm chat row with the persona's system prompt."""
    turns = json.loads(line)["conversations"]
    return {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": turns[0]["value"]},
                         {"role": "assistant", "content": turns[1]["value"]}]}


def write_persona_data(folder: Path, n_train: int, n_test: int, source: Path = CONVERSATIONS) -> Path:
    """train.jsonl from the first rows, valid.jsonl (= held-out test) from the last rows: other citations."""
    lines = [ln for ln in source.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if n_train + n_test > len(lines):
        sys.exit(f"{source} has {len(lines)} rows, fewer than --rows + --test ({n_train + n_test})")
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", lines[:n_train]), ("valid", lines[-n_test:])):
        text = "".join(json.dumps(persona_row(ln), ensure_ascii=False) + "\n" for ln in rows)
        (folder / f"{name}.jsonl").write_text(text, encoding="utf-8")
    return folder


def python_path(*extra: Path) -> str:
    """This checkout (and `extra`) first, then the caller's PYTHONPATH (which may register entry points)."""
    return ":".join([str(REPO), *map(str, extra), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))])


def import_model(folder: Path) -> float:
    """`dantes-mlx import-gguf --embedded -o folder` (SmolLM2-135M-Instruct as float32); its wall seconds."""
    tic = time.perf_counter()
    cmd = [sys.executable, "-m", "dantes_mlx", "import-gguf", "--embedded", "-o", str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": python_path()})
    if proc.returncode:
        sys.exit(f"import-gguf failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - tic


def run_measured(cmd: list[str], log: Path, env: dict, timeout: float) -> tuple[int, float, float]:
    """Run `cmd` (output to `log`); (exit code, wall seconds, peak RSS in GB of it and its children)."""
    tic = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = tic + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.5)
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    return code, time.perf_counter() - tic, usage.ru_maxrss / 1e6  # ru_maxrss is in KB on Linux


def train_command(python: str, backend: str, args, model: Path, data: Path, out: Path) -> list[str]:
    """The `dantes-mlx train` line both backends run, identical but for --backend."""
    return [python, "-m", "dantes_mlx", "train", "--backend", backend, "--base-model", str(model),
            "--data", str(data), "--adapter-path", str(out), "--iters", str(args.steps),
            "--batch-size", str(args.batch), "--num-layers", str(args.layers), "--rank", str(args.rank),
            "--scale", str(args.scale), "--dropout", "0", "--target-modules", ",".join(LINEAR_KEYS),
            "--learning-rate", str(args.lr), "--lr-schedule", "constant", "--warmup-steps", "0",
            "--optimizer", "adam", "--max-seq-length", str(args.seq), "--mask-prompt",
            "--steps-per-report", "1", "--steps-per-eval", str(args.steps), "--save-every", str(args.steps),
            "--val-batches", "-1"]


def train(name: str, python: str, backend: str, args, model: Path, data: Path, work: Path,
          env_extra: dict) -> dict:
    """One training run: its metrics (or its error), wall time and peak RSS."""
    out = work / name.replace("+", "_")
    env = {**os.environ, "PYTHONPATH": python_path(REPO / "plugins" / "dantes-mlx-unsloth"),
           "DANTES_UNSLOTH_PATH": "loop", **env_extra}
    load = os.getloadavg()[0]
    code, wall, rss = run_measured(train_command(python, backend, args, model, data, out), work / f"{out.name}.log",
                                   env, args.timeout)
    metrics = out / "metrics.jsonl"
    rows = [json.loads(ln) for ln in metrics.read_text().splitlines()] if metrics.is_file() else []
    trains, vals = [r for r in rows if "train_loss" in r], [r for r in rows if "val_loss" in r]
    result = {"name": name, "wall": wall, "rss": rss, "load": load, "steps": len(trains),
              "eval_s": vals[0]["val_time"] if vals else None}
    if code or not trains:
        tail = (work / f"{out.name}.log").read_text(errors="replace").strip().splitlines()[-3:]
        result["error"] = f"exit {code} after {wall:.0f}s: " + " | ".join(tail)
        return result
    step_s = [1 / r["iters_per_sec"] for r in trains]
    result.update(tok_s=steady([r["tokens_per_sec"] for r in trains]), step_s=statistics.median(step_s[1:] or step_s),
                  first_loss=trains[0]["train_loss"], last_loss=trains[-1]["train_loss"],
                  val_before=vals[0]["val_loss"] if vals else None, val_after=vals[-1]["val_loss"] if vals else None)
    return result


def report(results: list[dict]) -> None:
    """The comparison table."""
    print(f"\n{'runner':<14}{'1st eval s':>11}{'steps':>6}{'tok/s':>8}{'s/step':>8}{'peak RSS GB':>12}{'loss 1st':>10}"
          f"{'loss last':>10}{'held-out':>18}{'wall s':>8}{'load':>6}")
    for r in results:
        first_eval = f"{r['eval_s']:>11.1f}" if r.get("eval_s") is not None else f"{'n/a':>11}"
        if "error" in r:
            print(f"{r['name']:<14}{first_eval}{r['steps']:>6}  failed: {r['error']}")
            continue
        held = f"{r['val_before']:.3f}->{r['val_after']:.3f}" if r["val_before"] is not None else "n/a"
        print(f"{r['name']:<14}{first_eval}{r['steps']:>6}{r['tok_s']:>8.1f}{r['step_s']:>8.1f}{r['rss']:>12.2f}"
              f"{r['first_loss']:>10.3f}{r['last_loss']:>10.3f}{held:>18}{r['wall']:>8.0f}{r['load']:>6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per run [default: 3]")
    parser.add_argument("--batch", type=int, default=2, help="rows per step [default: 2]")
    parser.add_argument("--seq", type=int, default=128, help="max sequence length [default: 128]")
    parser.add_argument("--layers", type=int, default=8, help="last layers with LoRA (-1: all 30) [default: 8]")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--scale", type=float, default=20.0)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--rows", type=int, default=32, help="training rows [default: 32]")
    parser.add_argument("--test", type=int, default=8, help="held-out rows (validation) [default: 8]")
    parser.add_argument("--model", help="an imported SmolLM2 folder [default: import-gguf --embedded here]")
    parser.add_argument("--torch-python", default=sys.executable, help="Python with torch + the plugin")
    parser.add_argument("--openblas", help="OpenBLAS for the mlx+OpenBLAS run [default: Debian's path]")
    parser.add_argument("--blas-threads", type=int, default=1, help="OPENBLAS_NUM_THREADS [default: 1]")
    parser.add_argument("--torch-threads", type=int, help="OMP_NUM_THREADS for torch [default: unset, all cores]")
    parser.add_argument("--skip-stock-mlx", action="store_true", help="leave out the slow stock MLX run")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run [default: 1800]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="train-real-") as tmp:
        work = Path(tmp)
        model = Path(args.model) if args.model else work / "smollm2"
        if not args.model:
            print(f"import-gguf --embedded: {import_model(model):.1f} s", flush=True)
        data = write_persona_data(work / "data", args.rows, args.test)
        print(f"SmolLM2-135M-Instruct (float32), {args.rows} persona rows, {args.test} held out, batch {args.batch}, "
              f"seq <= {args.seq}, LoRA r={args.rank} scale {args.scale} on {len(LINEAR_KEYS)} projections x "
              f"{'all' if args.layers < 0 else args.layers} layers, Adam lr {args.lr}, {args.steps} steps, "
              f"{os.cpu_count()} cores", flush=True)
        threads = {"OMP_NUM_THREADS": str(args.torch_threads)} if args.torch_threads else {}
        runs = [("torch", args.torch_python, "unsloth", threads)]
        lib = find_openblas(args.openblas)
        if lib:
            runs.append(("mlx+OpenBLAS", sys.executable, "mlx", preload_env(lib, args.blas_threads)))
        else:
            print("mlx+OpenBLAS skipped: no OpenBLAS (apt-get install libopenblas0-pthread, or --openblas PATH)")
        if not args.skip_stock_mlx:
            runs.append(("mlx", sys.executable, "mlx", {}))
        results = []
        for name, python, backend, env in runs:
            results.append(train(name, python, backend, args, model, data, work, env))
            print(f"  {name} done in {results[-1]['wall']:.0f} s", flush=True)
    report(results)
    rate = {r["name"]: r.get("tok_s") for r in results}
    if rate.get("torch") and rate.get("mlx"):
        print(f"training tokens/s, torch / stock MLX: {rate['torch'] / rate['mlx']:.2f}")
    if rate.get("torch") and rate.get("mlx+OpenBLAS"):
        print(f"training tokens/s, torch / mlx+OpenBLAS: {rate['torch'] / rate['mlx+OpenBLAS']:.2f}")
    # The first held-out pass is the same work for every runner (the --test rows, forward only, before any
    # update) and is measured even when a slow run then times out in training.
    evals = {r["name"]: r.get("eval_s") for r in results}
    if evals.get("mlx+OpenBLAS") and evals.get("torch"):
        print(f"first held-out pass, mlx+OpenBLAS s / torch s: {evals['mlx+OpenBLAS'] / evals['torch']:.2f}")
    print("ratio = seconds of the first held-out pass (same rows, forward only), stock MLX CPU / torch "
          "(above 1: a Linux CPU runs the model faster with torch)")
    if not (evals.get("torch") and evals.get("mlx")):
        print("ratio: n/a (a run was skipped or failed before its first held-out pass)")
        return
    print(f"ratio: {evals['mlx'] / evals['torch']:.1f}")


if __name__ == "__main__":
    main()
