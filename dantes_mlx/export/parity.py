"""The parity gate: does an exported GGUF, run by llama.cpp, predict like the trained model?

On fixed chat-templated French prompts it checks that llama.cpp tokenizes the text into the same
ids as the training tokenizer, that the next-token choice agrees at every position, that the
mean KL divergence between the two next-token distributions stays under a per-quantization bound,
that the GGUF's RoPE base is the model's, and (given the base model too) that the GGUF carries the
fine-tune rather than looking like the base (finetune_check.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from dantes_mlx.errors import ConfigError, MissingDependency, ModelError, ParityError
from dantes_mlx.export.finetune_check import FineTuneCheck, finetune_check, kl_divergence, rope_mismatch
from dantes_mlx.export.reference import (REFERENCE_GROUP, LazyReference, Messages, MLXReference,  # noqa: F401
                                         Reference, make_base_reference, make_reference, trained_by)


DEFAULT_SYSTEM = "Tu es Edmond Dantès, le comte de Monte-Cristo. Réponds en français."
# Accents, both apostrophes, digits, guillemets, dashes, a multi-turn exchange, a system prompt.
DEFAULT_PROMPTS: list[tuple[str, Messages]] = [
    ("question", [{"role": "user", "content": "Qui êtes-vous, monsieur le comte ?"}]),
    ("souvenir", [{"role": "user", "content": "Racontez-moi votre arrivée au château d'If, "
                                              "le 28 février 1815."}]),
    ("systeme", [{"role": "system", "content": DEFAULT_SYSTEM},
                 {"role": "user", "content": "Que pensez-vous de la vengeance ? Est-elle juste ?"}]),
    ("dialogue", [{"role": "user", "content": "Bonjour ! Vous souvenez-vous de Mercédès ?"},
                  {"role": "assistant", "content": "-- Comment l’oublierais-je, madame ? "
                                                   "« Attendre et espérer », voilà tout."},
                  {"role": "user", "content": "Et l'abbé Faria, que vous a-t-il appris ?"}]),
    ("chiffres", [{"role": "user", "content": "Combien font 13 millions de francs en 1838 ? "
                                              "Répondez en 2 phrases, s’il vous plaît."}]),
]


@dataclass(frozen=True)
class Thresholds:
    """What a GGUF of one quantization must reach to pass."""

    min_top1: float  # share of positions where the next-token choice agrees (near-ties excused)
    max_kl: float  # mean KL(reference || gguf) over all positions, in nats
    tie_tol: float = 0.05  # reference logits closer than this to the best one count as ties


# f16/f32 must match to numerical noise; quantized files only "close", so the bounds are loose: they
# catch gross errors (the real SmolLM2-135M measured q8_0 KL 0.012, q4_k_m 0.14; the random tiny model
# up to 0.17), and finetune_check tells a GGUF with the fine-tune from one without.
THRESHOLDS: dict[str, Thresholds] = {
    "f32": Thresholds(1.0, 1e-4, 0.01), "f16": Thresholds(1.0, 1e-3), "bf16": Thresholds(1.0, 5e-3, 0.1),
    "q8_0": Thresholds(0.85, 0.02, 0.1), "q6_k": Thresholds(0.8, 0.05, 0.1),
    "q5_k_m": Thresholds(0.7, 0.15, 0.1), "q5_k_s": Thresholds(0.7, 0.15, 0.1),
    "q5_0": Thresholds(0.7, 0.15, 0.1), "q5_1": Thresholds(0.7, 0.15, 0.1),
    "q4_k_m": Thresholds(0.6, 0.35, 0.1), "q4_k_s": Thresholds(0.6, 0.35, 0.1),
    "q4_0": Thresholds(0.6, 0.35, 0.1), "q4_1": Thresholds(0.6, 0.35, 0.1),
    "iq4_nl": Thresholds(0.6, 0.35, 0.1), "iq4_xs": Thresholds(0.6, 0.35, 0.1),
    "q3_k_l": Thresholds(0.4, 1.0, 0.1), "q3_k_m": Thresholds(0.4, 1.0, 0.1),
    "q3_k_s": Thresholds(0.4, 1.0, 0.1), "q2_k": Thresholds(0.3, 1.5, 0.1),
}


class GGUFRunner:
    """llama.cpp (llama-cpp-python) over a GGUF, optionally with a GGUF LoRA adapter applied."""

    def __init__(self, gguf_path: str | Path, lora_path: str | Path | None = None,
                 n_ctx: int = 2048, lora_scale: float = 1.0, n_gpu_layers: int = -1):
        try:
            import llama_cpp
        except ImportError as exc:
            raise MissingDependency("llama_cpp", "the parity gate", "llama-cpp-python") from exc
        for path in (gguf_path, lora_path):
            if path is not None and not Path(path).is_file():
                raise ModelError("GGUF file not found", path=path, fix="run `dantes-mlx export` first")
        try:
            self.llm = llama_cpp.Llama(str(gguf_path), lora_path=str(lora_path) if lora_path else None,
                                       lora_scale=lora_scale, logits_all=True, n_ctx=n_ctx,
                                       n_gpu_layers=n_gpu_layers,
                                       n_batch=min(n_ctx, 512), seed=0, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp could not load it: {exc}", path=lora_path or gguf_path,
                             fix="re-export it; the file may be truncated or from another model") from exc
        # llama-cpp-python misses a refused adapter (its NULL pointer is not None) and then crashes on eval.
        if lora_path is not None and not getattr(self.llm, "_lora_adapter", True):
            self.llm.close()
            raise ModelError("llama.cpp could not load the LoRA adapter (tensor shapes do not fit the base: "
                             "A/B not transposed, or an adapter for another model)", path=lora_path,
                             fix="re-export the adapter with `dantes-mlx export` for this base model")

    @property
    def n_vocab(self) -> int:
        return self.llm.n_vocab()

    @property
    def rope_theta(self) -> float:
        """The GGUF's rope.freq_base (llama.cpp's default 10000 when the file has none)."""
        meta = self.llm.metadata
        return float(meta.get(f"{meta.get('general.architecture', 'llama')}.rope.freq_base", 10000.0))

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def piece(self, token_id: int) -> str:
        return self.llm.detokenize([token_id], special=True).decode("utf-8", "backslashreplace")

    def logits(self, token_ids: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(token_ids)
        return np.array(self.llm.scores[: len(token_ids)], dtype=np.float32)


@dataclass
class PromptParity:
    """Parity figures of one prompt."""

    name: str
    n_tokens: int
    tokens_match: bool
    top1: float
    top1_strict: float
    kl_mean: float
    kl_max: float
    mismatch: str = ""  # where the tokenizations first differ, when they do


@dataclass
class ParityReport:
    """Per-prompt rows, pooled figures, the thresholds used and the verdict."""

    quantization: str
    gguf: str
    lora: str | None
    thresholds: Thresholds
    rows: list[PromptParity]
    tokens_match: bool
    top1: float
    top1_strict: float
    kl_mean: float
    kl_max: float
    passed: bool
    failures: list[str] = field(default_factory=list)
    finetune: FineTuneCheck | None = None  # with the base model given: does the GGUF carry the fine-tune?
    rope_theta: float | None = None  # the GGUF's RoPE base

    def summary(self) -> str:
        """A few lines for the terminal."""
        verdict = "PASSED" if self.passed else "FAILED"
        t = self.thresholds
        lines = [f"parity {verdict} ({self.quantization}): tokens identical "
                 f"{sum(r.tokens_match for r in self.rows)}/{len(self.rows)} prompts, "
                 f"top-1 {self.top1:.1%} (strict {self.top1_strict:.1%}, need {t.min_top1:.0%}), "
                 f"mean KL {self.kl_mean:.2e} (max {self.kl_max:.2e}, need < {t.max_kl:.2g})"]
        if self.finetune is not None:
            lines.append("  " + self.finetune.line())
        for row in self.rows:
            lines.append(f"  {row.name:<10} {row.n_tokens:>4} tok  ids {'ok' if row.tokens_match else 'DIFFER'}"
                         f"  top-1 {row.top1:6.1%}  KL {row.kl_mean:.2e}  {row.mismatch}".rstrip())
        lines += [f"  - {failure}" for failure in self.failures]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def thresholds_for(quantization: str) -> Thresholds:
    """The pass bounds of a quantization name (f16, q8_0, q4_k_m...)."""
    from dantes_mlx.export.gguf import quant_name

    key = quant_name(quantization)
    if key not in THRESHOLDS:
        raise ConfigError(f"no parity thresholds for quantization {quantization!r}",
                          fix=f"use one of {', '.join(THRESHOLDS)}")
    return THRESHOLDS[key]


def gguf_quantization(gguf_path: str | Path) -> str:
    """The quantization name recorded in a GGUF's general.file_type (f16, q4_k_m...)."""
    import gguf

    from dantes_mlx.export.gguf import QUANT_TYPES

    if not Path(gguf_path).is_file():
        raise ModelError("GGUF file not found", path=gguf_path, fix="run `dantes-mlx export` first")
    try:
        reader = gguf.GGUFReader(str(gguf_path))
    except (ValueError, OSError) as exc:
        raise ModelError(f"not a readable GGUF file ({exc})", path=gguf_path,
                         fix="re-export it; the file may be truncated") from exc
    ftype = reader.fields.get("general.file_type")
    if ftype is None:
        raise ModelError("the GGUF has no general.file_type", path=gguf_path,
                         fix="pass the quantization explicitly (--quantization)")
    value = int(ftype.parts[ftype.data[0]][0])
    names = {v: k for k, v in QUANT_TYPES.items()}
    if value not in names:
        raise ModelError(f"unknown general.file_type {value}", path=gguf_path,
                         fix="pass the quantization explicitly (--quantization)")
    return names[value]


def compare_logits(ref: np.ndarray, got: np.ndarray, tie_tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per position: top-1 agreement with near-ties excused, strict top-1 agreement, KL(ref||got)."""
    choice = got.argmax(axis=-1)
    strict = choice == ref.argmax(axis=-1)
    chosen = np.take_along_axis(ref, choice[:, None], axis=-1)[:, 0]
    agree = strict | (chosen >= ref.max(axis=-1) - tie_tol)
    return agree, strict, kl_divergence(ref, got)


def _mismatch(ref_ids: list[int], got_ids: list[int], runner: GGUFRunner) -> str:
    i = next((k for k, (a, b) in enumerate(zip(ref_ids, got_ids)) if a != b), min(len(ref_ids), len(got_ids)))
    ref_piece = repr(runner.piece(ref_ids[i])) if i < len(ref_ids) else "end"
    got_piece = repr(runner.piece(got_ids[i])) if i < len(got_ids) else "end"
    return (f"first difference at token {i}: reference {ref_ids[i] if i < len(ref_ids) else '-'} "
            f"{ref_piece}, llama.cpp {got_ids[i] if i < len(got_ids) else '-'} {got_piece} "
            f"({len(ref_ids)} vs {len(got_ids)} tokens)")


def default_prompts(system: str | None = None) -> list[tuple[str, Messages]]:
    """The fixed French prompts; `system` (e.g. the persona) replaces the built-in system prompt."""
    if system is None:
        return [(name, [dict(m) for m in msgs]) for name, msgs in DEFAULT_PROMPTS]
    return [(name, [{**m, "content": system} if m["role"] == "system" else dict(m) for m in msgs])
            for name, msgs in DEFAULT_PROMPTS]


def _named(prompts: Sequence) -> list[tuple[str, Messages]]:
    out = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if isinstance(prompt, tuple):
            out.append(prompt)
        else:
            out.append((f"prompt{i + 1}", list(prompt)))
    return out


def _logits_of(model, ids_list: list[list[int]], release: bool) -> list[np.ndarray]:
    """Logits of every prompt, then (with `release`) the model freed, so that a 7B reference, a 7B base
    and a 7B GGUF never sit in memory together."""
    out = [model.logits(ids) for ids in ids_list]
    if release and hasattr(model, "release"):
        model.release()
    return out


def _bound_failures(rows: list[PromptParity], agree, kl, limits: Thresholds) -> list[str]:
    failures = []
    if not all(r.tokens_match for r in rows):
        bad = [r.name for r in rows if not r.tokens_match]
        failures.append(f"llama.cpp tokenizes {', '.join(bad)} differently from the training tokenizer "
                        "(check the GGUF's token scores, types, merges, pre-tokenizer and add_space_prefix)")
    if agree.mean() < limits.min_top1:
        failures.append(f"top-1 agreement {agree.mean():.1%} < {limits.min_top1:.0%}")
    if kl.mean() > limits.max_kl:
        failures.append(f"mean KL {kl.mean():.2e} > {limits.max_kl:.2g}")
    return failures


def check_parity(reference: Reference, gguf_path: str | Path, lora_path: str | Path | None = None,
                 prompts: Sequence | None = None, quantization: str | None = None,
                 enforce: bool = True, runner: GGUFRunner | None = None,
                 release_reference: bool = False, base: Reference | None = None) -> ParityReport:
    """Compare `reference` with the GGUF (+ optional GGUF LoRA) run by llama.cpp.

    `prompts`: conversations (lists of messages), plain user questions, or (name, messages) pairs;
    default: the module's fixed French prompts. `quantization` defaults to the GGUF's file type.
    `base`: the model before fine-tuning; given, the GGUF must also carry the fine-tune (finetune_check).
    Raises ParityError when `enforce` and the GGUF fails; otherwise returns the report either way.
    `release_reference` frees the reference (and base) model once its logits are known.
    """
    from dantes_mlx.export.gguf import quant_name

    quantization = quant_name(quantization or gguf_quantization(gguf_path))
    limits = thresholds_for(quantization)
    named = _named(prompts if prompts is not None else default_prompts())
    rendered = [(name, reference.render(messages)) for name, messages in named]
    ref_ids = [reference.encode(text) for _, text in rendered]
    ref_all = _logits_of(reference, ref_ids, release_reference)
    base_all = _logits_of(base, ref_ids, release_reference) if base is not None else None
    if runner is None:
        runner = GGUFRunner(gguf_path, lora_path, n_ctx=max(512, max(map(len, ref_ids)) + 16))
    rows, agree_all, strict_all, kl_all, got_all = [], [], [], [], []
    for (name, text), ids, ref_logits in zip(rendered, ref_ids, ref_all):
        got_ids = runner.encode(text)
        got_logits = runner.logits(ids)
        if ref_logits.shape != got_logits.shape:
            raise ParityError(f"vocabulary sizes differ: reference {ref_logits.shape[-1]}, GGUF "
                              f"{got_logits.shape[-1]}", path=gguf_path,
                              fix="export the GGUF from the same model as the reference")
        agree, strict, kl = compare_logits(ref_logits, got_logits, limits.tie_tol)
        agree_all.append(agree), strict_all.append(strict), kl_all.append(kl), got_all.append(got_logits)
        match = got_ids == ids
        rows.append(PromptParity(name, len(ids), match, float(agree.mean()), float(strict.mean()),
                                 float(kl.mean()), float(kl.max()),
                                 "" if match else _mismatch(ids, got_ids, runner)))
    agree, strict, kl = (np.concatenate(a) for a in (agree_all, strict_all, kl_all))
    failures = _bound_failures(rows, agree, kl, limits)
    rope = rope_mismatch(getattr(reference, "rope_thetas", {}) or {}, runner.rope_theta)
    failures += [rope] if rope else []
    check = finetune_check(ref_all, base_all, got_all, float(kl.mean())) if base_all is not None else None
    if check is not None and not check.passed:
        failures.append(check.failure())
    report = ParityReport(quantization, str(gguf_path), str(lora_path) if lora_path else None, limits,
                          rows, all(r.tokens_match for r in rows), float(agree.mean()),
                          float(strict.mean()), float(kl.mean()), float(kl.max()), not failures,
                          failures, check, runner.rope_theta)
    if enforce and not report.passed:
        raise ParityError("the exported GGUF does not predict like the trained model\n" + report.summary(),
                          path=gguf_path, fix="do not ship this file; see the failures above")
    return report


def load_prompts(path: str | Path) -> list[tuple[str, Messages]]:
    """Prompts from a JSONL file: per line a question string, a list of messages, or
    {"name": ..., "messages": [...]}."""
    from dantes_mlx.errors import InputError
    from dantes_mlx.store import read_jsonl

    prompts = []
    for lineno, record in read_jsonl(path):
        if isinstance(record, dict) and isinstance(record.get("messages"), list):
            name, messages = str(record.get("name", f"line{lineno}")), record["messages"]
        elif isinstance(record, list):
            name, messages = f"line{lineno}", record
        elif isinstance(record, str) and record.strip():
            name, messages = f"line{lineno}", [{"role": "user", "content": record}]
        else:
            raise InputError("expected a question string, a list of messages or "
                             '{"messages": [...]}', path=path, line=lineno, fix="rewrite that line")
        if not all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in messages):
            raise InputError("every message needs a role and a content", path=path, line=lineno,
                             fix='write messages as {"role": "user", "content": "..."}')
        prompts.append((name, messages))
    if not prompts:
        raise InputError("no prompts in the file", path=path, fix="write one prompt per line")
    return prompts


def run_parity(model: str | Path, gguf_path: str | Path, *, adapter: str | Path | None = None,
               lora_path: str | Path | None = None, quantization: str | None = None,
               prompts_file: str | Path | None = None, system: str | None = None,
               enforce: bool = True) -> ParityReport:
    """The `dantes-mlx parity` stage: the trained model (+ adapter) against a GGUF (+ GGUF LoRA); with an
    adapter, the base model too, to check that the GGUF carries the fine-tune."""
    from dantes_mlx.train import resolve_model

    prompts = load_prompts(prompts_file) if prompts_file else default_prompts(system)
    model = resolve_model(str(model))  # a Hub id not in the cache offline: a ModelError, not a traceback
    base = LazyReference(lambda: make_base_reference(model, adapter)) if adapter else None
    return check_parity(make_reference(model, adapter), gguf_path, lora_path, prompts=prompts,
                        quantization=quantization, enforce=enforce, release_reference=True, base=base)
