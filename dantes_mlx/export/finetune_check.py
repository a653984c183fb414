"""Does a GGUF carry the fine-tune? Its distance to the tuned model against its distance to the base.

Quantization noise can be larger than the whole effect of a small adapter (a q4 SmolLM2 without its
adapter stays inside q4's KL bound), so bounds on KL(tuned || GGUF) alone cannot tell a fine-tuned
GGUF from the base. On the same positions we also measure KL(base || GGUF): the noise enters both,
the fine-tune only one. `share` = (KL(base||GGUF) - KL(tuned||GGUF)) / effect, with effect the
fine-tune's own shift (KL between tuned and base, averaged over both directions), is about 1 when the
GGUF carries the fine-tune and about -1 when it is the base, whatever the quantization.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The GGUF must be closer to the tuned model than to the base by a quarter of the fine-tune's effect. Measured
# with the fine-tune: 0.61-1.07 (SmolLM2 and the tiny model, q4_k_m to f16); without it: -1.16 to -0.66.
MIN_SHARE = 0.25
MIN_EFFECT = 1e-3  # a fine-tune whose effect is under this barely moves predictions: nothing to tell


@dataclass
class FineTuneCheck:
    """How far the fine-tune moved the base, and how much of that move the GGUF shows."""

    effect: float  # the fine-tune's own shift: (KL(tuned || base) + KL(base || tuned)) / 2, mean over positions
    kl_base_gguf: float  # mean KL(base || GGUF)
    share: float  # (kl_base_gguf - KL(tuned || GGUF)) / effect

    @property
    def applies(self) -> bool:
        return self.effect >= MIN_EFFECT

    @property
    def passed(self) -> bool:
        return not self.applies or self.share >= MIN_SHARE

    def line(self) -> str:
        if not self.applies:
            return (f"fine-tune: effect (KL tuned<->base) {self.effect:.2e} < {MIN_EFFECT:g}: the fine-tune barely "
                    "changes predictions, no GGUF can be told from the base (check skipped)")
        return (f"fine-tune: effect (KL tuned<->base) {self.effect:.3g}, KL(base||GGUF) {self.kl_base_gguf:.3g}: "
                f"share {self.share:+.2f} (+1 carries the fine-tune, -1 is the base; need >= {MIN_SHARE:g})")

    def failure(self) -> str:
        return (f"fine-tune share {self.share:+.2f} < {MIN_SHARE:g}: the GGUF is no closer to the fine-tuned model "
                f"than the base is (effect {self.effect:.3g}, KL(base||GGUF) {self.kl_base_gguf:.3g}); "
                "was the adapter left out?")


def kl_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(p || q) per position, in nats, from two (positions, vocab) logit arrays."""
    p, q = _log_softmax(p_logits), _log_softmax(q_logits)
    return np.maximum((np.exp(p) * (p - q)).sum(axis=-1), 0.0)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def finetune_check(tuned: list[np.ndarray], base: list[np.ndarray], gguf: list[np.ndarray],
                   kl_tuned_gguf: float) -> FineTuneCheck:
    """The check over every prompt's positions; `kl_tuned_gguf` is the gate's own mean KL(tuned || GGUF)."""
    effect = float(np.concatenate([(kl_divergence(t, b) + kl_divergence(b, t)) / 2
                                   for t, b in zip(tuned, base)]).mean())
    to_base = float(np.concatenate([kl_divergence(b, g) for b, g in zip(base, gguf)]).mean())
    share = (to_base - kl_tuned_gguf) / effect if effect > 0 else 0.0
    return FineTuneCheck(effect, to_base, float(share))


def rope_mismatch(declared: dict[str, float], gguf_value: float) -> str | None:
    """A failure line when the reference's RoPE base (config.json, the framework running it) differs from
    the GGUF's rope.freq_base, else None."""
    values = dict(declared, GGUF=gguf_value)
    if all(abs(v - gguf_value) <= 1e-6 * max(abs(gguf_value), 1.0) for v in values.values()):
        return None
    listed = ", ".join(f"{k} {v:g}" for k, v in values.items())
    return (f"rope_theta differs: {listed} (a config re-saved by transformers 5 keeps it under "
            "rope_parameters; re-export with this dantes-mlx)")
