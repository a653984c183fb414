"""Helpers several test packages share (tests/ is on sys.path through conftest.py): a random mlx-lm adapter folder,
French texts that stress a tokenizer. In-memory or tmp files, no network."""

from __future__ import annotations

import json
from pathlib import Path

ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
FRENCH_TEXTS = [
    "Qui êtes-vous, monsieur le comte ?",
    "L'été 1815, à Marseille — « Où êtes-vous ? » demanda-t-il.",
    "C’est l’abbé Faria : il m’a appris 4 langues vivantes et 2 mortes.",
    "Œuvre, cœur, naïf, maïs, Noël, ÉLÉPHANT, garçon, à bientôt…",
    "Deux  espaces,\ttabulation,\n\nnouvelle ligne ; 13 000 000 francs, 3,5 %.",
    "Émoji 🚢 et caractères rares : ß ø ñ 漢字",
]


def make_mlx_adapter(model_dir: Path, out: Path, *, kind: str = "lora", rank: int = 4, scale: float = 8.0,
                     keys=ATTENTION + ("mlp.down_proj",), num_layers: int = -1, seed: int = 0,
                     b_std: float = 0.02) -> Path:
    """An mlx-lm adapter folder (adapters.safetensors + adapter_config.json) with random nonzero A and B
    (and perturbed DoRA magnitudes), laid out exactly as mlx-lm's trainer saves it; the same for one seed."""
    import mlx.core as mx
    import mlx_lm
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = mlx_lm.load(str(model_dir))
    model.freeze()
    params = {"rank": rank, "scale": scale, "dropout": 0.0, "keys": list(keys)}
    mx.random.seed(seed)  # before the layers are made: mlx-lm draws A at random there
    linear_to_lora_layers(model, num_layers, params, use_dora=kind == "dora")
    weights = {}
    for name, value in tree_flatten(model.trainable_parameters()):
        if name.endswith("lora_b"):
            value = b_std * mx.random.normal(value.shape)
        elif name.endswith(".m"):
            value = value * (1.0 + 0.1 * mx.random.normal(value.shape))
        weights[name] = value
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), weights)
    config = {"model": str(model_dir), "fine_tune_type": kind, "num_layers": num_layers,
              "lora_parameters": params}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out
