"""Why MLX's Linux CPU build trains slowly: its matmul calls the reference BLAS it bundles; a real OpenBLAS fixes f32.

The `mlx-cpu` wheel links `libmlx.so` against `mlx_cpu.libs/libblas-*.so.3.10.0`, netlib's reference BLAS
(plain Fortran loops, one thread). Preloading an optimised BLAS that exports `cblas_sgemm` (OpenBLAS) makes
MLX's float32 matmul call it instead; bfloat16/float16 matmuls do not go through BLAS and stay slow.

Each variant runs in its own process (LD_PRELOAD must be set before MLX loads); the shapes are the real
model's (SmolLM2-135M: hidden 576, MLP 1536, vocab 49152) for 256 tokens.
Run: python bench/mlx_cpu_blas.py [--openblas /path/to/libopenblas.so.0]   (~1 min, 2 cores)
OpenBLAS on Debian/Ubuntu: `apt-get install libopenblas0-pthread` gives
/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 (found here by default).
The last line is `ratio: X` = MLX float32 GFLOP/s with OpenBLAS preloaded / with the wheel's own BLAS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

OPENBLAS_CANDIDATES = ["/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
                       "/usr/lib/x86_64-linux-gnu/libopenblas.so.0", "/usr/lib64/libopenblas.so.0"]
# (rows, inner, cols): a q_proj, an MLP up_proj and the tied LM head over 256 tokens
SHAPES = [(256, 576, 576), (256, 576, 1536), (256, 576, 49152)]


def gflops(fn, flops: float, min_seconds: float = 0.5) -> float:
    """GFLOP/s of `fn` (one warm-up call, then repeated for at least `min_seconds`)."""
    fn()
    calls, tic = 0, time.perf_counter()
    while time.perf_counter() - tic < min_seconds or calls < 2:
        fn()
        calls += 1
    return flops * calls / (time.perf_counter() - tic) / 1e9


def child(dtypes: list[str]) -> None:
    """Print one JSON line: {library dtype: GFLOP/s over SHAPES}, measured in this process."""
    import mlx.core as mx
    import numpy as np

    out = {}
    for rows, inner, cols in SHAPES:
        a = np.random.rand(rows, inner).astype(np.float32)
        b = np.random.rand(inner, cols).astype(np.float32)
        flops = 2.0 * rows * inner * cols
        out[f"numpy float32 {rows}x{inner}x{cols}"] = gflops(lambda: a @ b, flops)
        for name in dtypes:
            x, y = mx.array(a).astype(getattr(mx, name)), mx.array(b).astype(getattr(mx, name))
            out[f"mlx {name} {rows}x{inner}x{cols}"] = gflops(lambda: mx.eval(x @ y), flops)
    print(json.dumps(out))


def measure(env_extra: dict, dtypes: list[str]) -> dict:
    """Run `child` in a fresh process with `env_extra`; its figures."""
    env = {**os.environ, **env_extra}
    proc = subprocess.run([sys.executable, __file__, "--child", ",".join(dtypes)], env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def preload_env(lib: Path, threads: int) -> dict:
    """Environment that makes MLX's cblas_sgemm resolve to `lib` (its folder also serves its own deps)."""
    return {"LD_PRELOAD": str(lib), "LD_LIBRARY_PATH": f"{lib.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}",
            "OPENBLAS_NUM_THREADS": str(threads)}


def find_openblas(given: str | None) -> Path | None:
    """--openblas, else the first OpenBLAS of OPENBLAS_CANDIDATES that exists."""
    for path in ([given] if given else OPENBLAS_CANDIDATES):
        if path and Path(path).is_file():
            return Path(path)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openblas", help="an OpenBLAS exporting cblas_sgemm [default: Debian's path]")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child.split(","))
    import mlx.core as mx

    libs = Path(mx.__file__).parent / "lib" / "libmlx.so"
    linked = subprocess.run(["ldd", str(libs)], capture_output=True, text=True).stdout
    print("libmlx.so BLAS:", ", ".join(ln.split()[0] for ln in linked.splitlines() if "blas" in ln or "lapack" in ln))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    runs = {"wheel BLAS": measure({}, ["float32", "bfloat16"])}
    lib = find_openblas(args.openblas)
    if lib is None:
        print("no OpenBLAS found: apt-get install libopenblas0-pthread, or pass --openblas PATH")
    else:
        for threads in (1, 2):
            runs[f"OpenBLAS {threads} thr"] = measure(preload_env(lib, threads), ["float32"])
    for name, figures in runs.items():
        if "error" in figures:
            print(f"{name:<16} failed: {figures['error']}")
            continue
        for key, value in figures.items():
            print(f"{name:<16} {key:<34} {value:8.1f} GFLOP/s")
    base = runs["wheel BLAS"]
    best = max((v for name, fig in runs.items() if name != "wheel BLAS" and "error" not in fig
                for k, v in fig.items() if k == "mlx float32 256x576x1536"), default=None)
    if best is None or "error" in base:
        print("ratio: n/a (no OpenBLAS run)")
        return
    print("ratio = MLX float32 GFLOP/s (MLP shape) with OpenBLAS preloaded / with the wheel's reference BLAS")
    print(f"ratio: {best / base['mlx float32 256x576x1536']:.1f}")


if __name__ == "__main__":
    main()
