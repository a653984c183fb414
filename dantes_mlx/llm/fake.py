"""In-process fake LLMs for tests: replay canned replies, record every call."""

from __future__ import annotations

import json
from collections import deque
from typing import Callable, Iterable

from dantes_mlx.llm.base import ChatResult


class FakeLLM:
    """Replays canned replies in order (a str, a dict dumped as JSON, or a callable(messages))."""

    def __init__(self, replies: Iterable = (), model_id: str = "fake", default=None):
        self.model_id = model_id
        self.replies = deque(replies)
        self.default = default
        self.calls: list[dict] = []

    def chat(self, messages: list[dict], json_schema: dict | None = None, **sampling) -> ChatResult:
        self.calls.append({"messages": messages, "json_schema": json_schema, "sampling": sampling})
        if self.replies:
            reply = self.replies.popleft()
        elif self.default is not None:
            reply = self.default
        else:
            raise AssertionError(f"FakeLLM ran out of replies after {len(self.calls) - 1} calls")
        if callable(reply):
            reply = reply(messages)
        text = reply if isinstance(reply, str) else json.dumps(reply, ensure_ascii=False)
        prompt = sum(len(m.get("content", "").split()) for m in messages)
        return ChatResult(text=text, prompt_tokens=prompt, evaluated_tokens=prompt,
                          completion_tokens=len(text.split()))


def fake_from_function(fn: Callable[[list[dict]], str], model_id: str = "fake-fn") -> FakeLLM:
    """A FakeLLM that answers every call with fn(messages)."""
    return FakeLLM(model_id=model_id, default=fn)
