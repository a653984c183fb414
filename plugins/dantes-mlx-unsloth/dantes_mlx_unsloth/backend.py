"""The `unsloth` training backend: Unsloth + TRL on CUDA, transformers + peft on any other torch device."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from dantes_mlx_unsloth.settings import BACKEND, check_settings

from dantes_mlx.train.sdk import TrainResult


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class UnslothBackend:
    """Registered as `unsloth` in the `dantes_mlx.backends` entry-point group."""

    name = BACKEND
    priority = 10  # on a CUDA machine, ahead of mlx's own CUDA build

    def available(self) -> tuple[bool, str]:
        missing = [dist for dist in ("torch", "transformers", "peft") if _version(dist) is None]
        if missing:
            return False, f"{', '.join(missing)} not installed (pip install -e plugins/dantes-mlx-unsloth)"
        try:
            import torch
        except ImportError as exc:  # installed but broken (e.g. a CUDA wheel without its libraries)
            return False, f"torch cannot be imported: {exc}"
        from dantes_mlx_unsloth.run import PATHS, choose_path, torch_device

        device = torch_device()
        where = f"CUDA ({torch.cuda.get_device_name(0)})" if device.type == "cuda" else device.type.upper()
        extras = ", ".join(f"{d} {_version(d) or 'not installed'}" for d in ("unsloth", "trl"))
        try:
            path = PATHS[choose_path(device)]
        except Exception as exc:  # a bad $DANTES_UNSLOTH_PATH: usable, train will say what is wrong
            path = str(exc)
        return True, f"{path} on {where}; torch {torch.__version__}, peft {_version('peft')}, {extras}"

    def device(self) -> str:
        """cuda, cpu-torch or mps (mps is never auto-picked: mlx's Metal is the Mac path)."""
        from dantes_mlx_unsloth.run import torch_device

        kind = torch_device().type
        return {"cuda": "cuda", "cpu": "cpu-torch"}.get(kind, kind)

    def check(self, cfg) -> None:
        import torch
        from dantes_mlx_unsloth.run import has

        check_settings(cfg, cuda=torch.cuda.is_available(), bnb=has("bitsandbytes"))

    def train(self, cfg, data_dir: Path, adapter_dir: Path, resume: bool = False) -> TrainResult:
        from dantes_mlx_unsloth.run import TorchRun

        self.check(cfg)
        return TorchRun(cfg, Path(data_dir), Path(adapter_dir), resume).run()
