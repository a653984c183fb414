"""LLM clients behind one small protocol (llama.cpp in process, OpenAI-compatible HTTP, fakes), one Prompt type."""

from dantes_mlx.llm.base import ChatResult, LLMClient
from dantes_mlx.llm.clients import make_client

__all__ = ["ChatResult", "LLMClient", "make_client"]
