"""The parity gate: does an exported GGUF, run by llama.cpp, predict like the trained model?

On fixed chat-templated French prompts it checks that llama.cpp tokenizes the text into the same
ids as the training tokenizer, that the next-token choice agrees at every position, and that the
mean KL divergence between the two next-token distributions stays under a per-quantization bound.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from dantes_mlx.errors import ConfigError, MissingDependency, ModelError, ParityError

Messages = list[dict]

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


# f16/f32 must match to numerical noise; quantized files only "close", so the bounds are loose
# (a random tiny model is more sensitive to quantization than a trained 7B model).
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


class Reference(Protocol):
    """The trained model the GGUF is compared with (MLX here; a plugin may pass a torch one)."""

    def render(self, messages: Messages) -> str:
        """The chat-templated text of a conversation, special tokens written out."""

    def encode(self, text: str) -> list[int]:
        """Token ids of templated text, adding no special token the text does not hold."""

    def logits(self, token_ids: list[int]) -> np.ndarray:
        """Next-token logits at every position: float array of shape (len(token_ids), vocab)."""


class MLXReference:
    """A Reference backed by mlx_lm: base model folder or repo, plus an optional LoRA adapter."""

    def __init__(self, model_dir: str | Path, adapter_dir: str | Path | None = None):
        import mlx_lm

        self.name = str(model_dir) + (f" + {adapter_dir}" if adapter_dir else "")
        self.model, self.tokenizer = mlx_lm.load(
            str(model_dir), adapter_path=str(adapter_dir) if adapter_dir else None)

    def render(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def logits(self, token_ids: list[int]) -> np.ndarray:
        import mlx.core as mx

        if self.model is None:
            raise RuntimeError("this MLXReference was released; load a new one")
        out = self.model(mx.array([token_ids]))[0].astype(mx.float32)
        return np.array(out)

    def release(self) -> None:
        """Free the model's memory (tokenizer and chat template stay usable)."""
        import mlx.core as mx

        self.model = None
        mx.clear_cache()


# Plugins register a Reference class here under their backend's name (e.g. `unsloth`), constructed as
# Cls(model_dir, adapter_dir); adapters that backend trained are then compared in its own framework.
REFERENCE_GROUP = "dantes_mlx.references"


def trained_by(adapter_dir: str | Path | None) -> str | None:
    """The training backend recorded in an adapter folder's train_config.yaml (derived.backend), if any."""
    import yaml

    path = Path(adapter_dir) / "train_config.yaml" if adapter_dir else None
    if path is None or not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return None
    return (data.get("derived") or {}).get("backend") if isinstance(data, dict) else None


def make_reference(model: str | Path, adapter: str | Path | None = None,
                   mlx_adapter: str | Path | None = None) -> Reference:
    """The reference model for `adapter`: the plugin Reference of the backend that trained it when that
    plugin is installed, else MLX (on `mlx_adapter`, an mlx-lm copy, when given; a PEFT adapter is
    converted on the fly)."""
    import importlib.metadata

    backend = trained_by(adapter)
    for ep in importlib.metadata.entry_points(group=REFERENCE_GROUP):
        if backend and ep.name == backend:
            return ep.load()(model, adapter)
    if mlx_adapter is None and adapter is not None and not (Path(adapter) / "adapters.safetensors").is_file():
        import tempfile

        from dantes_mlx.export.peft import load_adapter, write_mlx_adapter
        from dantes_mlx.train import resolve_model

        peft = load_adapter(adapter)
        config = json.loads((resolve_model(str(model)) / "config.json").read_text(encoding="utf-8"))
        with tempfile.TemporaryDirectory() as tmp:  # mlx_lm.load reads it at once
            reference = MLXReference(model, write_mlx_adapter(peft, tmp, config["num_hidden_layers"]))
        reference.name = f"{model} + {adapter}"
        return reference
    return MLXReference(model, mlx_adapter or adapter)


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

    def summary(self) -> str:
        """A few lines for the terminal."""
        verdict = "PASSED" if self.passed else "FAILED"
        t = self.thresholds
        lines = [f"parity {verdict} ({self.quantization}): tokens identical "
                 f"{sum(r.tokens_match for r in self.rows)}/{len(self.rows)} prompts, "
                 f"top-1 {self.top1:.1%} (strict {self.top1_strict:.1%}, need {t.min_top1:.0%}), "
                 f"mean KL {self.kl_mean:.2e} (max {self.kl_max:.2e}, need < {t.max_kl:.2g})"]
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


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def compare_logits(ref: np.ndarray, got: np.ndarray, tie_tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per position: top-1 agreement with near-ties excused, strict top-1 agreement, KL(ref||got)."""
    p, q = _log_softmax(ref), _log_softmax(got)
    choice = got.argmax(axis=-1)
    strict = choice == ref.argmax(axis=-1)
    chosen = np.take_along_axis(ref, choice[:, None], axis=-1)[:, 0]
    agree = strict | (chosen >= ref.max(axis=-1) - tie_tol)
    kl = (np.exp(p) * (p - q)).sum(axis=-1)
    return agree, strict, np.maximum(kl, 0.0)


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


def check_parity(reference: Reference, gguf_path: str | Path, lora_path: str | Path | None = None,
                 prompts: Sequence | None = None, quantization: str | None = None,
                 enforce: bool = True, runner: GGUFRunner | None = None,
                 release_reference: bool = False) -> ParityReport:
    """Compare `reference` with the GGUF (+ optional GGUF LoRA) run by llama.cpp.

    `prompts`: conversations (lists of messages), plain user questions, or (name, messages) pairs;
    default: the module's fixed French prompts. `quantization` defaults to the GGUF's file type.
    Raises ParityError when `enforce` and the GGUF fails; otherwise returns the report either way.
    `release_reference` frees the reference model (MLXReference.release) once its logits are known.
    """
    from dantes_mlx.export.gguf import quant_name

    quantization = quant_name(quantization or gguf_quantization(gguf_path))
    limits = thresholds_for(quantization)
    named = _named(prompts if prompts is not None else default_prompts())
    rendered = [(name, reference.render(messages)) for name, messages in named]
    ref_ids = [reference.encode(text) for _, text in rendered]
    # All reference logits first: with release_reference the MLX model is freed before llama.cpp
    # loads the GGUF, so a 7B reference and a 7B GGUF never sit in memory together.
    ref_all = [reference.logits(ids) for ids in ref_ids]
    if release_reference and hasattr(reference, "release"):
        reference.release()
    if runner is None:
        runner = GGUFRunner(gguf_path, lora_path, n_ctx=max(512, max(map(len, ref_ids)) + 16))
    rows, agree_all, strict_all, kl_all, failures = [], [], [], [], []
    for (name, text), ids, ref_logits in zip(rendered, ref_ids, ref_all):
        got_ids = runner.encode(text)
        got_logits = runner.logits(ids)
        if ref_logits.shape != got_logits.shape:
            raise ParityError(f"vocabulary sizes differ: reference {ref_logits.shape[-1]}, GGUF "
                              f"{got_logits.shape[-1]}", path=gguf_path,
                              fix="export the GGUF from the same model as the reference")
        agree, strict, kl = compare_logits(ref_logits, got_logits, limits.tie_tol)
        agree_all.append(agree), strict_all.append(strict), kl_all.append(kl)
        match = got_ids == ids
        rows.append(PromptParity(name, len(ids), match, float(agree.mean()), float(strict.mean()),
                                 float(kl.mean()), float(kl.max()),
                                 "" if match else _mismatch(ids, got_ids, runner)))
    agree, strict, kl = (np.concatenate(a) for a in (agree_all, strict_all, kl_all))
    if not all(r.tokens_match for r in rows):
        bad = [r.name for r in rows if not r.tokens_match]
        failures.append(f"llama.cpp tokenizes {', '.join(bad)} differently from the training tokenizer "
                        "(check the GGUF's token scores, types and add_space_prefix)")
    if agree.mean() < limits.min_top1:
        failures.append(f"top-1 agreement {agree.mean():.1%} < {limits.min_top1:.0%}")
    if kl.mean() > limits.max_kl:
        failures.append(f"mean KL {kl.mean():.2e} > {limits.max_kl:.2g}")
    report = ParityReport(quantization, str(gguf_path), str(lora_path) if lora_path else None, limits,
                          rows, all(r.tokens_match for r in rows), float(agree.mean()),
                          float(strict.mean()), float(kl.mean()), float(kl.max()), not failures,
                          failures)
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
    """The `dantes-mlx parity` stage: the trained model (+ adapter) against a GGUF (+ GGUF LoRA)."""
    from dantes_mlx.train import resolve_model

    prompts = load_prompts(prompts_file) if prompts_file else default_prompts(system)
    model = resolve_model(str(model))  # a Hub id not in the cache offline: a ModelError, not a traceback
    return check_parity(make_reference(model, adapter), gguf_path, lora_path, prompts=prompts,
                        quantization=quantization, enforce=enforce, release_reference=True)
