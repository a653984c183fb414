"""Which engine and system prompt `chat` and `ask` use: the options, else dantes.yaml's adapter, base and persona."""

from __future__ import annotations

from dataclasses import dataclass

from dantes_mlx.chat import engines
from dantes_mlx.chat.engines import Engine
from dantes_mlx.config import CharacterConfig, TrainConfig, section
from dantes_mlx.workspace import Workspace


@dataclass
class Settings:
    """The model to talk to and the system prompt, as the options give them (None: from the project)."""
    persona: str
    default_base: str                 # train.base_model
    model: str | None = None
    adapter_path: str | None = None   # else project.adapters_dir when it holds an adapter (mlx-lm or PEFT)
    base_only: bool = False
    gguf: str | None = None
    lora: str | None = None
    n_ctx: int = 4096
    system: str | None = None         # else character.persona
    no_system: bool = False

    @classmethod
    def from_config(cls, config: dict, **options) -> "Settings":
        return cls(section(CharacterConfig, config).persona, section(TrainConfig, config).base_model, **options)


def open_session(settings: Settings, workspace: Workspace) -> tuple[Engine, str | None]:
    """(engine, system prompt): a GGUF through llama.cpp, else MLX with the adapter (the project's when it
    holds one), its base, else train.base_model."""
    adapter_path, model = settings.adapter_path, settings.model
    if not settings.gguf and not settings.base_only and adapter_path is None:
        default = workspace.adapter()
        adapter_path = default.path if default.has_adapter() else None
    if settings.base_only:
        adapter_path = None
    if not settings.gguf and not model and not adapter_path:
        model = settings.default_base
    engine = engines.load_engine(model=model, adapter_path=adapter_path, gguf=settings.gguf, lora=settings.lora,
                                 **({"n_ctx": settings.n_ctx} if settings.gguf else {}))
    if settings.no_system:
        return engine, None
    return engine, settings.system if settings.system is not None else settings.persona
