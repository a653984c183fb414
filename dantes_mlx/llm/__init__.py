"""LLM clients behind one small protocol: llama.cpp in process, OpenAI-compatible HTTP, fakes."""

from dantes_mlx.llm.base import ChatResult, LLMClient, make_client

__all__ = ["ChatResult", "LLMClient", "make_client"]
