"""Helpers several test packages share (tests/ is on sys.path through conftest.py): a random mlx-lm adapter folder,
French texts that stress a tokenizer. In-memory or tmp files, no network."""

from __future__ import annotations

import importlib.util
import json
import sys
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


# What peft 0.21's save_pretrained writes in adapter_config.json for a LoRA/DoRA on a causal LM (every key).
PEFT_CONFIG = {
    "alora_invocation_tokens": None, "alpha_pattern": {}, "arrow_config": None, "auto_mapping": None,
    "base_model_name_or_path": None, "bias": "none", "corda_config": None, "ensure_weight_tying": False,
    "eva_config": None, "exclude_modules": None, "fan_in_fan_out": False, "inference_mode": True,
    "init_lora_weights": True, "kasa_config": None, "layer_replication": None, "layers_pattern": None,
    "layers_to_transform": None, "loftq_config": {}, "lora_alpha": 8, "lora_bias": False, "lora_dropout": 0.0,
    "lora_ga_config": None, "megatron_config": None, "megatron_core": "megatron.core", "modules_to_save": None,
    "monteclora_config": None, "peft_type": "LORA", "peft_version": "0.21.2", "qalora_group_size": 16, "r": 4,
    "rank_pattern": {}, "revision": None, "target_modules": [], "target_parameters": None, "task_type": "CAUSAL_LM",
    "trainable_token_indices": None, "use_bdlora": None, "use_dora": False, "use_qalora": False,
    "use_rslora": False, "velora_config": None,
}


def peft_from_mlx(mlx_dir: Path, out: Path, *, rslora: bool = False, **config) -> Path:
    """The PEFT folder peft's save_pretrained would write for the same adapter as an mlx-lm folder, computed here
    with numpy alone (not with dantes_mlx): keys `base_model.model.model.layers.N.<module>.lora_A.weight` (r, in) and
    `lora_B.weight` (out, r), DoRA's `lora_magnitude_vector`, lora_alpha = scale x r (x sqrt(r) with rsLoRA)."""
    from safetensors.numpy import load_file, save_file

    mlx_config = json.loads((mlx_dir / "adapter_config.json").read_text())
    params, dora = mlx_config["lora_parameters"], mlx_config["fine_tune_type"] == "dora"
    tensors = {}
    for key, value in load_file(str(mlx_dir / "adapters.safetensors")).items():
        name, leaf = key.rsplit(".", 1)
        new = {"lora_a": "lora_A.weight", "lora_b": "lora_B.weight", "m": "lora_magnitude_vector"}[leaf]
        tensors[f"base_model.model.{name}.{new}"] = value.T.copy() if leaf != "m" else value
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    rank = params["rank"]
    alpha = params["scale"] * (rank ** 0.5 if rslora else rank)
    settings = {**PEFT_CONFIG, "r": rank, "lora_alpha": alpha, "use_dora": dora, "use_rslora": rslora,
                "target_modules": sorted({k.split(".")[-1] for k in params["keys"]}),
                "base_model_name_or_path": mlx_config["model"], **config}
    (out / "adapter_config.json").write_text(json.dumps(settings, indent=2))
    return out


def load_bench(name: str):
    """The module bench/<name>.py (bench/ is no package), registered in sys.modules under its name."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
