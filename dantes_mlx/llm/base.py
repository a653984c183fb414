"""The LLMClient protocol shared by every LLM stage, and the factory that picks a client."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol, runtime_checkable

if TYPE_CHECKING:
    from dantes_mlx.config import LLMConfig


@dataclass
class ChatResult:
    """One completion: the text and what it cost in tokens."""
    text: str
    prompt_tokens: int = 0          # tokens in the prompt
    evaluated_tokens: int = 0       # prompt tokens actually evaluated (after prefix-cache reuse)
    completion_tokens: int = 0      # tokens generated (reasoning included)
    reasoning: str = ""             # reasoning text stripped from `text` (reasoning models)
    reasoning_tokens: int = 0
    finish_reason: str = ""         # "stop", "length" (max_tokens hit: the text may be cut), or ""


# Sampling options every client accepts in chat(**sampling); None means "the client's default".
SAMPLING_KEYS = frozenset({"temperature", "max_tokens", "top_p", "top_k", "min_p", "seed", "stop",
                           "presence_penalty", "frequency_penalty", "repeat_penalty"})


def check_sampling(sampling: dict) -> dict:
    """The sampling options that are set, or ConfigError listing the valid names."""
    from dantes_mlx.errors import ConfigError

    unknown = sorted(set(sampling) - SAMPLING_KEYS)
    if unknown:
        raise ConfigError(f"unknown sampling option(s): {', '.join(unknown)}",
                          fix=f"use one of: {', '.join(sorted(SAMPLING_KEYS))}")
    return {k: v for k, v in sampling.items() if v is not None}


def call_sampling(client, sampling: dict | None = None) -> dict:
    """The sampling a call runs with: the client's defaults (llm.temperature, max_tokens, seed) < `sampling`.
    What the LLM stages key their stored answers by."""
    return {**(getattr(client, "defaults", None) or {}), **(sampling or {})}


_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@'\"<>]+@", re.I)
_SECRET_QUERY = re.compile(r"([?&](?:api[_-]?key|key|token|access[_-]?token|auth|password|passwd|secret|sig|"
                           r"signature)=)[^&#\s'\"<>]+", re.I)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without credentials, before it is printed, logged or stored: each of `secrets` (an API key), the
    user:password@ of any URL, and the values of key/token/password-like query parameters."""
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


@runtime_checkable
class LLMClient(Protocol):
    """A chat model: messages in, text (and token counts) out."""

    model_id: str

    def chat(self, messages: list[dict], json_schema: dict | None = None, **sampling) -> ChatResult:
        """One chat completion; with json_schema the output is forced (or asked) to match it."""
        ...


def make_client(cfg: "LLMConfig") -> LLMClient:
    """The client a stage config asks for: an HTTP server when `url` is set, else llama.cpp."""
    from dantes_mlx.errors import ConfigError

    if cfg.url:
        from dantes_mlx.llm.openai_compat import OpenAICompatClient
        return OpenAICompatClient.from_config(cfg)
    if cfg.model:
        from dantes_mlx.llm.llamacpp import LlamaCppClient
        return LlamaCppClient.from_config(cfg)
    raise ConfigError("no generator LLM configured", path="dantes.yaml [llm]",
                      fix="set llm.model (a GGUF path or HF_REPO:FILE.gguf) or llm.url (or pass --model/--url); "
                          "without an LLM: `extract --method rules`, `generate --facts FILE --no-llm`; `--labels` needs none")
