"""The parity gate over an export's GGUFs: the trained model's logits computed once, each file checked, one verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from dantes_mlx.errors import ModelError, ParityError
from dantes_mlx.export.parity import ParityReport, Reference, check_parity, thresholds_for


class CachedReference:
    """A Reference whose logits are computed once and shared by every check, so the trained model is
    freed before llama.cpp loads the first GGUF (a 7B reference and a 7B GGUF never share memory)."""

    def __init__(self, reference: Reference):
        self.reference, self._logits = reference, {}
        self.name = getattr(reference, "name", "the trained model")

    @property
    def rope_thetas(self) -> dict:
        return getattr(self.reference, "rope_thetas", {})

    def render(self, messages):
        return self.reference.render(messages)

    def encode(self, text: str) -> list[int]:
        return self.reference.encode(text)

    def logits(self, token_ids: list[int]):
        key = tuple(token_ids)
        if key not in self._logits:
            self._logits[key] = self.reference.logits(token_ids)
        return self._logits[key]

    def release(self) -> None:
        if hasattr(self.reference, "release"):
            self.reference.release()


def parity_gate(reference: Reference, checks: Sequence[tuple[str, Path, Path | None, str]],
                prompts: Sequence, base: Reference | None = None) -> dict[str, ParityReport]:
    """Run check_parity for each (label, gguf, lora, quantization), with the base model when given (a
    CachedReference computes its logits once); a file llama.cpp refuses to load (e.g. LoRA matrices
    not transposed) is a failed check, not a crash."""
    reports = {}
    for label, gguf_path, lora_path, quantization in checks:
        try:
            reports[label] = check_parity(reference, gguf_path, lora_path, prompts=prompts,
                                          quantization=quantization, enforce=False, base=base,
                                          release_reference=isinstance(reference, CachedReference))
        except (ModelError, ParityError) as exc:
            inf = float("inf")
            reports[label] = ParityReport(quantization, str(gguf_path), str(lora_path) if lora_path else None,
                                          thresholds_for(quantization), [], False, 0.0, 0.0, inf, inf, False,
                                          [f"llama.cpp could not run it: {exc.detail}"])
    return reports


def gate_verdict(reports: Mapping[str, ParityReport], manifest: Path) -> None:
    """Raise ParityError with every failed check's figures when one fails."""
    failed = {label: r for label, r in reports.items() if not r.passed}
    if failed:
        detail = "\n".join(f"[{label}] {r.summary()}" for label, r in failed.items())
        raise ParityError(f"the exported files do not predict like the trained model:\n{detail}", path=manifest,
                          fix="do not ship them (nothing was registered with Ollama); if only the quantized "
                              "file fails, try --quantization q5_k_m or q8_0")
