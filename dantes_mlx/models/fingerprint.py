"""A cheap content fingerprint of a model folder: which base an adapter was trained on."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_SAMPLE_BYTES = 1 << 16
# config.json keys that change when a model is only re-saved, not when its weights change.
_CONFIG_NOISE = ("_name_or_path", "transformers_version")


def model_fingerprint(model_dir: str | Path) -> dict:
    """A cheap content hash of a model folder: config.json (key order and re-save noise aside) and, per weight
    file, its safetensors header and 64 KiB at the start, middle and end of its data (< 1 MiB read for a 7B)."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    digest = hashlib.sha256(json.dumps({k: v for k, v in config.items() if k not in _CONFIG_NOISE},
                                       sort_keys=True).encode())
    index = model_dir / "model.safetensors.index.json"
    names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())) if index.is_file() \
        else sorted(p.name for p in model_dir.glob("*.safetensors") if not p.name.startswith("consolidated"))
    for name in names:  # consolidated*.safetensors: Mistral's duplicate of the same weights in another layout
        with open(model_dir / name, "rb") as fh:
            header = int.from_bytes(fh.read(8), "little")
            digest.update(name.encode() + fh.read(header))
            end = fh.seek(0, os.SEEK_END)
            for offset in (8 + header, (8 + header + end - _SAMPLE_BYTES) // 2, end - _SAMPLE_BYTES):
                fh.seek(max(offset, 8 + header))
                digest.update(fh.read(_SAMPLE_BYTES))
    return {"sha256": digest.hexdigest(), "weight_files": names}
