"""The client a stage's llm settings ask for: an OpenAI-compatible server when `url` is set, else llama.cpp."""

from __future__ import annotations

from dantes_mlx.config import LLMConfig
from dantes_mlx.errors import ConfigError
from dantes_mlx.llm.base import LLMClient
from dantes_mlx.llm.llamacpp import LlamaCppClient
from dantes_mlx.llm.openai_compat import OpenAICompatClient


def make_client(cfg: LLMConfig) -> LLMClient:
    """The client a stage config asks for: an HTTP server when `url` is set, else llama.cpp."""
    if cfg.url:
        return OpenAICompatClient.from_config(cfg)
    if cfg.model:
        return LlamaCppClient.from_config(cfg)
    raise ConfigError("no generator LLM configured", path="dantes.yaml [llm]",
                      fix="set llm.model (a GGUF path or HF_REPO:FILE.gguf) or llm.url (or pass --model/--url); "
                          "without an LLM: `extract --method rules`, `generate --facts FILE --no-llm`; `--labels` "
                          "needs none")
