"""Training throughput: `dantes-mlx train` vs plain `mlx_lm lora`, same data/model/settings, in one run.

Both run as subprocesses on the same tiny random Mistral (4 layers, hidden 256, built here), the same
chat dataset (answers from the package's French prose, prompt masked, rows <= 256 tokens) and the same
LoRA settings (rank 8, scale 20, no dropout, every linear layer of every block, batch 4, constant lr,
Adam). Tokens/s is mlx-lm's own figure (trained tokens per second of step time), the median of the
reports after the first (the first one pays MLX's kernel compilation). Peak memory: MLX's peak for
ours (metrics.jsonl) and the max RSS of each process for both.

For the record it also trains PyTorch + PEFT on the CPU on the same model and rows (same token count
per step) when torch, transformers and peft are installed; else it prints why it skipped.

Run: python bench/train_throughput.py [--iters 12] [--torch-python /path/to/venv-with-torch/bin/python]   (about 1-2 minutes on 2 CPU cores)
The last line is `ratio: X` = our tokens/s / mlx_lm.lora's (must not be below ~1, noise aside).
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
RANK, SCALE, LR, BATCH, MAX_LEN, REPORT_EVERY = 8, 20.0, 1e-4, 4, 256, 3
QUESTIONS = ["Racontez-moi votre arrivée à Marseille.", "Que voyez-vous depuis le pont ?",
             "Que pensez-vous de vos compagnons ?", "Décrivez le port ce matin-là."]


def build_inputs(work: Path) -> tuple[Path, Path]:
    """The tiny model and a chat dataset whose answers are 1-4 sentences of the built-in French text."""
    from dantes_mlx.models.tiny import build_tiny_model, builtin_corpus

    model = build_tiny_model(work / "model", num_layers=4, hidden_size=256)
    sentences = [s.strip() + "." for s in re.split(r"[.!?»]\s", builtin_corpus().replace("\n", " ")) if len(s) > 30]
    data = work / "data"
    data.mkdir()
    for name, n in (("train", 64), ("valid", 8)):
        with open(data / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(n):
                k = 1 + i % 4
                answer = " ".join(sentences[(i * 3 + j) % len(sentences)] for j in range(k))
                row = {"messages": [{"role": "user", "content": QUESTIONS[i % 4]},
                                    {"role": "assistant", "content": answer}]}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return model, data


def run_child(cmd: list[str], log: Path) -> tuple[float, int]:
    """Run a command to completion; (seconds, max RSS in MB). Output goes to `log`."""
    tic = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{cmd[2:4]} failed ({proc.returncode}); its output:\n{log.read_text()[-3000:]}")
    return time.perf_counter() - tic, usage.ru_maxrss // 1024


def ours(model: Path, data: Path, work: Path, iters: int) -> dict:
    out = work / "ours"
    cmd = [sys.executable, "-m", "dantes_mlx", "train", "--backend", "mlx", "--base-model", str(model),
           "--data", str(data), "--adapter-path", str(out), "--iters", str(iters), "--batch-size", str(BATCH),
           "--num-layers", "-1", "--rank", str(RANK), "--scale", str(SCALE), "--dropout", "0",
           "--target-modules", ",".join(LINEAR_KEYS), "--learning-rate", str(LR), "--lr-schedule", "constant",
           "--warmup-steps", "0", "--optimizer", "adam", "--max-seq-length", str(MAX_LEN), "--mask-prompt",
           "--steps-per-report", str(REPORT_EVERY), "--steps-per-eval", str(10 * iters), "--save-every", str(iters),
           "--val-batches", "1"]
    seconds, rss = run_child(cmd, work / "ours.log")
    rows = [json.loads(line) for line in open(out / "metrics.jsonl") if "train_loss" in line]
    return {"tokens_per_sec": [r["tokens_per_sec"] for r in rows], "mlx_peak_gb": max(r["peak_memory_gb"] for r in rows),
            "rss_mb": rss, "seconds": seconds, "loss": rows[-1]["train_loss"]}


REPORT = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+[▼▲]\s+([\d,]+)\s+[\d.]+k", re.M)


def plain_mlx_lm(model: Path, data: Path, work: Path, iters: int) -> dict:
    import yaml

    config = work / "mlx_lm.yaml"
    config.write_text(yaml.safe_dump({"lora_parameters": {"rank": RANK, "scale": SCALE, "dropout": 0.0,
                                                          "keys": LINEAR_KEYS}}))
    cmd = [sys.executable, "-m", "mlx_lm", "lora", "--train", "--model", str(model), "--data", str(data),
           "--adapter-path", str(work / "plain"), "--iters", str(iters), "--batch-size", str(BATCH),
           "--num-layers", "-1", "--learning-rate", str(LR), "--optimizer", "adam", "--max-seq-length",
           str(MAX_LEN), "--mask-prompt", "--steps-per-report", str(REPORT_EVERY), "--steps-per-eval", str(10 * iters),
           "--save-every", str(iters), "--val-batches", "1", "-c", str(config)]
    seconds, rss = run_child(cmd, work / "plain.log")
    text = re.sub(r"\x1b\[[0-9;]*m", "", (work / "plain.log").read_text())
    reports = REPORT.findall(text)
    if not reports:
        sys.exit(f"could not read mlx_lm's tokens/s reports; its output:\n{text[-3000:]}")
    return {"tokens_per_sec": [float(t.replace(",", "")) for _, _, t in reports], "mlx_peak_gb": None,
            "rss_mb": rss, "seconds": seconds, "loss": float(reports[-1][1])}


def torch_peft(model: Path, data: Path, work: Path, iters: int, python: str) -> dict | str:
    """PyTorch + PEFT on the CPU, same rows, same masking, same LoRA; or why it was skipped."""
    probe = subprocess.run([python, "-c", "import torch, transformers, peft"], capture_output=True, text=True)
    if probe.returncode:
        missing = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "import failed"
        return (f"skipped: {missing} in {python} (pip install torch peft, or pass --torch-python "
                "with a venv that has them)")
    out = work / "torch.json"
    seconds, rss = run_child([python, str(Path(__file__).resolve()), "--torch-worker", str(model),
                              str(data), str(iters), str(out)], work / "torch.log")
    result = json.loads(out.read_text())
    result.update(rss_mb=rss, seconds=seconds, mlx_peak_gb=None)
    return result


def torch_worker(model_dir: str, data_dir: str, iters: int, out: str) -> None:
    """Child process: the PEFT training loop, reporting tokens/s every REPORT_EVERY steps like mlx-lm."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=SCALE * RANK, lora_dropout=0.0,
                                             target_modules=[k.split(".")[-1] for k in LINEAR_KEYS]))
    rows = [json.loads(line)["messages"] for line in open(Path(data_dir) / "train.jsonl")]
    examples = []
    for messages in rows:
        full = tok.apply_chat_template(messages, return_dict=False)[:MAX_LEN]
        prompt = len(tok.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=False))
        examples.append((full, prompt))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LR)
    rates, window_tokens, window_time, losses = [], 0, 0.0, []
    for step in range(1, iters + 1):
        batch = [examples[(step * BATCH + j) % len(examples)] for j in range(BATCH)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.zeros((BATCH, width), dtype=torch.long)
        labels = torch.full((BATCH, width), -100, dtype=torch.long)
        for j, (full, prompt) in enumerate(batch):
            ids[j, :len(full)] = torch.tensor(full)
            labels[j, prompt:len(full)] = torch.tensor(full[prompt:])
        tic = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        window_time += time.perf_counter() - tic
        window_tokens += int((labels[:, 1:] != -100).sum())
        losses.append(loss.item())
        if step % REPORT_EVERY == 0:
            rates.append(window_tokens / window_time)
            window_tokens, window_time = 0, 0.0
    Path(out).write_text(json.dumps({"tokens_per_sec": rates, "loss": losses[-1],
                                     "torch": torch.__version__}))


def steady(rates: list[float]) -> float:
    """Median tokens/s after the first report (which includes kernel compilation)."""
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--torch-python", default=sys.executable,
                        help="Python with torch + transformers + peft for the record run [default: this one].")
    parser.add_argument("--torch-worker", nargs=4, metavar=("MODEL", "DATA", "ITERS", "OUT"))
    args = parser.parse_args()
    if args.torch_worker:
        model, data, iters, out = args.torch_worker
        return torch_worker(model, data, int(iters), out)
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        work = Path(tmp)
        model, data = build_inputs(work)
        print(f"tiny Mistral (4 layers, hidden 256), 64 chat rows, LoRA r={RANK} on {len(LINEAR_KEYS)} linear "
              f"layers x all blocks, batch {BATCH}, {args.iters} steps, CPU", flush=True)
        # mlx_lm first: it pays for compiling MLX's CPU kernels if the cache is cold; ours reuses them.
        # Both exclude the first report anyway.
        results = {"mlx_lm.lora": plain_mlx_lm(model, data, work, args.iters),
                   "dantes-mlx train": ours(model, data, work, args.iters)}
        torch_result = torch_peft(model, data, work, args.iters, args.torch_python)
    print(f"\n{'runner':<20}{'tokens/s':>10}{'MLX peak GB':>13}{'max RSS MB':>12}{'wall s':>8}{'last loss':>11}")
    for name, r in results.items():
        peak = f"{r['mlx_peak_gb']:.3f}" if r["mlx_peak_gb"] is not None else "-"
        print(f"{name:<20}{steady(r['tokens_per_sec']):>10.0f}{peak:>13}{r['rss_mb']:>12}{r['seconds']:>8.1f}"
              f"{r['loss']:>11.3f}")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores:
        print(f"note: load average {load:.1f} on {cores} cores during the run: figures are noisy")
    ours_rate = steady(results["dantes-mlx train"]["tokens_per_sec"])
    if isinstance(torch_result, str):
        print(f"{'torch+peft (cpu)':<20}{torch_result}")
    else:
        rate = steady(torch_result["tokens_per_sec"])
        print(f"{'torch+peft (cpu)':<20}{rate:>10.0f}{'-':>13}{torch_result['rss_mb']:>12}"
              f"{torch_result['seconds']:>8.1f}{torch_result['loss']:>11.3f}   (torch {torch_result['torch']})")
        print(f"for the record, ours / torch+peft on CPU: {ours_rate / rate:.2f}")
    same = round(results["dantes-mlx train"]["loss"], 3) == results["mlx_lm.lora"]["loss"]  # mlx_lm prints 3 decimals
    print(f"same last loss as mlx_lm.lora (same computation): {same}")
    print(f"ratio: {ours_rate / steady(results['mlx_lm.lora']['tokens_per_sec']):.2f}")


if __name__ == "__main__":
    main()
