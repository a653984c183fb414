"""Which backend a Linux CPU should train with: bare `mlx_lm lora` (MLX's CPU build) vs PyTorch CPU + peft.

Both train, in one run, the same tiny random Mistral (4 layers, hidden 256, built here) on the same chat
rows (<= 256 tokens, no prompt masking: every token trains) with the same LoRA (rank 8, scale 20, no
dropout, every linear layer of every block), batch 4, Adam, constant learning rate. The PyTorch side is
the plugin itself (`dantes-mlx train --backend unsloth`, its built-in torch loop: transformers + peft).
Tokens/s is each trainer's own figure (trained tokens per second of step time, validation excluded),
the median of the reports after the first (which pays MLX's kernel compilation / torch's warm-up).

Run: python bench/backend_cpu_compare.py [--torch-python /path/to/venv-with-torch/bin/python]  (~1-2 min, 2 cores)
The last line is `ratio: X` = PyTorch+peft tokens/s / mlx_lm tokens/s: how much faster the plugin's path
trains on a Linux CPU, the reason `--backend auto` picks it there when installed (MLX's fast path is Metal).
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
LINEAR_KEYS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
RANK, SCALE, LR, BATCH, MAX_LEN = 8, 20.0, 1e-4, 4, 256
QUESTIONS = ["Racontez-moi votre arrivée à Marseille.", "Que voyez-vous depuis le pont ?",
             "Que pensez-vous de vos compagnons ?", "Décrivez le port ce matin-là."]
# mlx-lm's report line: "  iter   train_loss ▼    tok/s    tokens"
REPORT = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+[▼▲]\s+([\d,]+)\s+[\d.]+k", re.M)


def build_inputs(work: Path) -> tuple[Path, Path]:
    """The 4-layer model and 32 chat rows whose answers are 3-6 sentences of the package's French prose."""
    from dantes_mlx.models.tiny import build_tiny_model, builtin_corpus

    model = build_tiny_model(work / "model", num_layers=4, hidden_size=256)
    text = builtin_corpus().replace("\n", " ")
    sentences = [s.strip() + "." for s in re.split(r"[.!?»]\s", text) if len(s) > 30]
    data = work / "data"
    data.mkdir()
    for name, n in (("train", 32), ("valid", 4)):
        rows = []
        for i in range(n):
            answer = " ".join(sentences[(i * 5 + j) % len(sentences)] for j in range(3 + i % 4))
            rows.append(json.dumps({"messages": [{"role": "user", "content": QUESTIONS[i % 4]},
                                                 {"role": "assistant", "content": answer}]}, ensure_ascii=False))
        (data / f"{name}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return model, data


def run_child(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run a command to completion (output to `log`); its wall seconds. Exits with its output on failure."""
    tic = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent, env=env).returncode
    if code:
        sys.exit(f"{' '.join(cmd[:4])} failed ({code}); its output:\n{log.read_text()[-3000:]}")
    return time.perf_counter() - tic


def bare_mlx_lm(model: Path, data: Path, work: Path, iters: int, every: int) -> dict:
    """`python -m mlx_lm lora --train` as a user would run it (LoRA keys from a -c config)."""
    import yaml

    config = work / "mlx_lm.yaml"
    config.write_text(yaml.safe_dump({"lora_parameters": {"rank": RANK, "scale": SCALE, "dropout": 0.0,
                                                          "keys": LINEAR_KEYS}}))
    cmd = [sys.executable, "-m", "mlx_lm", "lora", "--train", "--model", str(model), "--data", str(data),
           "--adapter-path", str(work / "mlx"), "--iters", str(iters), "--batch-size", str(BATCH),
           "--num-layers", "-1", "--learning-rate", str(LR), "--optimizer", "adam",
           "--max-seq-length", str(MAX_LEN), "--steps-per-report", str(every), "--steps-per-eval",
           str(10 * iters), "--save-every", str(10 * iters), "--val-batches", "1", "-c", str(config)]
    seconds = run_child(cmd, work / "mlx_lm.log")
    text = re.sub(r"\x1b\[[0-9;]*m", "", (work / "mlx_lm.log").read_text())
    reports = REPORT.findall(text)
    if not reports:
        sys.exit(f"could not read mlx_lm's tokens/s reports; its output:\n{text[-3000:]}")
    return {"rates": [float(t.replace(",", "")) for _, _, t in reports], "seconds": seconds,
            "loss": float(reports[-1][1]), "iters": iters}


def torch_peft(model: Path, data: Path, work: Path, iters: int, every: int, python: str) -> dict | str:
    """The plugin's transformers + peft loop on the CPU (or why it could not run)."""
    probe = subprocess.run([python, "-c", "import torch, peft, dantes_mlx_unsloth; print(torch.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode:
        why = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
        return f"{why} in {python}: pip install 'torch==2.13.0' -e plugins/dantes-mlx-unsloth, or pass --torch-python"
    out = work / "torch"
    cmd = [python, "-m", "dantes_mlx", "train", "--backend", "unsloth", "--base-model", str(model),
           "--data", str(data), "--adapter-path", str(out), "--iters", str(iters), "--batch-size", str(BATCH),
           "--num-layers", "-1", "--rank", str(RANK), "--scale", str(SCALE), "--dropout", "0",
           "--target-modules", ",".join(LINEAR_KEYS), "--learning-rate", str(LR), "--lr-schedule", "constant",
           "--warmup-steps", "0", "--optimizer", "adam", "--max-seq-length", str(MAX_LEN), "--no-mask-prompt",
           "--steps-per-report", str(every), "--steps-per-eval", str(10 * iters), "--save-every", str(10 * iters),
           "--val-batches", "1"]
    env = {**os.environ, "DANTES_UNSLOTH_PATH": "loop", "PYTHONPATH": str(REPO)}
    seconds = run_child(cmd, work / "torch.log", env)
    rows = [json.loads(line) for line in open(out / "metrics.jsonl") if "train_loss" in line]
    return {"rates": [r["tokens_per_sec"] for r in rows], "seconds": seconds, "loss": rows[-1]["train_loss"],
            "iters": iters, "torch": probe.stdout.strip()}


def steady(rates: list[float]) -> float:
    """Median tokens/s after the first report (warm-up and kernel compilation)."""
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlx-iters", type=int, default=8, help="mlx_lm steps (slow on CPU) [default: 8]")
    parser.add_argument("--torch-iters", type=int, default=32, help="PyTorch steps [default: 32]")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="Python with torch + the plugin installed [default: this one]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="backend-cpu-") as tmp:
        work = Path(tmp)
        model, data = build_inputs(work)
        print(f"tiny Mistral (4 layers, hidden 256), 32 chat rows <= {MAX_LEN} tokens, LoRA r={RANK} on "
              f"{len(LINEAR_KEYS)} linear layers x all blocks, batch {BATCH}, CPU ({os.cpu_count()} cores)", flush=True)
        mlx = bare_mlx_lm(model, data, work, args.mlx_iters, max(args.mlx_iters // 4, 1))
        torch = torch_peft(model, data, work, args.torch_iters, max(args.torch_iters // 8, 1), args.torch_python)
    print(f"\n{'runner':<34}{'steps':>6}{'tokens/s':>10}{'wall s':>8}{'last loss':>11}")
    print(f"{'mlx_lm lora (MLX CPU build)':<34}{mlx['iters']:>6}{steady(mlx['rates']):>10.0f}{mlx['seconds']:>8.1f}"
          f"{mlx['loss']:>11.3f}")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} on {os.cpu_count()} cores during the run: figures are noisy")
    if isinstance(torch, str):
        print(f"{'torch + peft (plugin, CPU)':<34} skipped: {torch}")
        print("ratio: n/a (PyTorch side skipped)")
        return
    name = f"torch {torch['torch']} + peft (plugin)"
    print(f"{name:<34}{torch['iters']:>6}{steady(torch['rates']):>10.0f}{torch['seconds']:>8.1f}{torch['loss']:>11.3f}")
    print("ratio = torch+peft tokens/s / mlx_lm tokens/s (above 1: a Linux CPU trains faster with the plugin)")
    print(f"ratio: {steady(torch['rates']) / steady(mlx['rates']):.1f}")


if __name__ == "__main__":
    main()
