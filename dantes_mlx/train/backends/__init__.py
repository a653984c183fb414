"""Training backends: discovery through the `dantes_mlx.backends` entry points, and `auto` selection."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

from dantes_mlx.errors import ConfigError
from dantes_mlx.train.backends.base import AUTO_ORDER, TrainBackend, TrainResult

GROUP = "dantes_mlx.backends"
__all__ = ["AUTO_ORDER", "AUTO_REASONS", "GROUP", "BackendChoice", "BackendInfo", "TrainBackend", "TrainResult",
           "choose_auto", "entry_points", "get_backend", "list_backends"]


@dataclass
class BackendInfo:
    """One installed backend as `dantes-mlx backends` shows it."""
    name: str
    target: str            # "module:Class" from the entry point
    usable: bool
    reason: str
    device: str = ""
    backend: TrainBackend | None = None


def entry_points() -> dict:
    """name -> EntryPoint for every installed backend (the first registration of a name wins)."""
    found: dict = {}
    for ep in importlib.metadata.entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return found


def _inspect(name: str, ep) -> BackendInfo:
    """Load one entry point and ask the backend whether it can run here; never raises."""
    try:
        backend = ep.load()()
    except Exception as exc:  # a broken plugin must not break `backends` or `train --backend mlx`
        return BackendInfo(name, ep.value, False, f"failed to load: {type(exc).__name__}: {exc}")
    try:
        usable, reason = backend.available()
        device = backend.device() if usable else ""
    except Exception as exc:
        return BackendInfo(name, ep.value, False, f"availability check failed: {exc}", backend=backend)
    return BackendInfo(name, ep.value, bool(usable), reason, device, backend)


def list_backends(eps: dict | None = None) -> list[BackendInfo]:
    """Every installed backend with whether it is usable here and why (not)."""
    eps = entry_points() if eps is None else eps
    return [_inspect(name, ep) for name, ep in sorted(eps.items())]


@dataclass
class BackendChoice:
    """The backend a run trains with, why it was chosen (shown in the train summary) and an optional warning."""
    backend: TrainBackend
    reason: str
    warning: str | None = None


# Why `auto` picks a device class, as the train summary shows it.
AUTO_REASONS = {
    "metal": "auto: MLX on Apple Silicon's GPU (Metal), the fast path on a Mac",
    "cuda": "auto: an NVIDIA GPU through CUDA",
    "cpu-torch": ("auto: no GPU here; PyTorch on the CPU, several times faster than MLX's CPU build on Linux "
                  "(bench/train_real_compare.py)"),
    "cpu": "auto: no GPU and no PyTorch backend usable here, so MLX's CPU build (slow)",
}


def _slow_cpu_warning(name: str, infos: list[BackendInfo]) -> str:
    """What to do about training on MLX's CPU build, naming installed backends that could not run and why."""
    unusable = "; ".join(f"{i.name}: {i.reason}" for i in infos if not i.usable)
    return (f"training with backend '{name}' on MLX's CPU build: it works but is slow (MLX is fast on Apple "
            "Silicon's Metal). On Linux, `pip install -e plugins/dantes-mlx-unsloth` adds a PyTorch backend "
            "(CUDA, or CPU through transformers + peft) that `--backend auto` then picks"
            + (f" (installed but not usable here: {unusable})" if unusable else "") + ".")


def choose_auto(infos: list[BackendInfo]) -> BackendChoice:
    """The backend `auto` picks (see AUTO_ORDER), why, and a warning when it is the slow MLX CPU fallback.

    Within a device class a backend's optional `priority` attribute breaks ties (higher first),
    so a CUDA plugin can outrank mlx's own CUDA build.
    """
    usable = [i for i in infos if i.usable and i.backend is not None]
    for device in AUTO_ORDER:
        ranked = sorted((i for i in usable if i.device == device),
                        key=lambda i: -int(getattr(i.backend, "priority", 0)))
        if ranked:
            warning = _slow_cpu_warning(ranked[0].name, infos) if device == "cpu" else None
            detail = "" if device == "cpu" else f" ({ranked[0].reason})"  # the CPU one repeats "slow"
            return BackendChoice(ranked[0].backend, AUTO_REASONS[device] + detail, warning)
    why = "; ".join(f"{i.name}: {i.reason}" for i in infos) or "no backend is installed"
    raise ConfigError(f"no usable training backend ({why})", path="--backend auto",
                      fix="run `dantes-mlx backends` to see what is installed and why it cannot run")


def get_backend(name: str, eps: dict | None = None) -> BackendChoice:
    """The backend called `name` (or the one `auto` picks), why, and an optional warning to show."""
    eps = entry_points() if eps is None else eps
    if name == "auto":
        return choose_auto(list_backends(eps))
    if name not in eps:
        valid = ", ".join(["auto", *sorted(eps)])
        raise ConfigError(f"unknown backend '{name}'", path="--backend",
                          fix=f"valid backends: {valid} (plugins add more: see `dantes-mlx backends`)")
    info = _inspect(name, eps[name])
    if not info.usable:
        raise ConfigError(f"backend '{name}' cannot run here: {info.reason}", path="--backend",
                          fix="run `dantes-mlx backends`, install what is missing, or pick another backend")
    where = f" on {info.device}" if info.device else ""
    return BackendChoice(info.backend, f"named by train.backend or --backend{where} ({info.reason})")
