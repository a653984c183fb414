"""Weight files checked before mlx or transformers load them: a truncated or damaged safetensors file is named."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from dantes_mlx.errors import ModelError

MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on the JSON header


def check_weights(path: str | Path, fix: str = "") -> None:
    """Every .safetensors file of a model or adapter folder (or the file itself) is whole: its header reads and
    the tensors it lists end within the file. ModelError naming the file otherwise."""
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path] if path.is_file() else []
    for file in files:
        check_safetensors(file, fix)


def check_safetensors(path: Path, fix: str = "") -> None:
    """One safetensors file: 8-byte header length, JSON header, data offsets within the file."""
    fix = fix or "copy or download it again (an interrupted download or copy leaves a file cut short)"
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if length < 2 or length > min(MAX_HEADER_BYTES, size - 8):
            raise ModelError(f"not a whole safetensors file ({size:,} bytes; no readable header)", path=path, fix=fix)
        try:
            header = json.loads(fh.read(length))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise ModelError(f"not a whole safetensors file ({size:,} bytes; its header is damaged)", path=path,
                             fix=fix) from None
    if 8 + length + end > size:
        raise ModelError(f"truncated: {size:,} bytes, but its tensors need {8 + length + end:,}", path=path, fix=fix)
