"""Reasoning-model output: split `<think>` blocks and gpt-oss harmony channels from the answer."""

from __future__ import annotations

import re

# gpt-oss "harmony" format:
#   <|channel|>analysis<|message|>...<|end|><|start|>assistant<|channel|>final<|message|>...
HARMONY_FINAL = "<|channel|>final<|message|>"
HARMONY_FORCE_FINAL = "<|end|><|start|>assistant" + HARMONY_FINAL
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
THINK_FORCE_CLOSE = "\n" + THINK_CLOSE + "\n\n"

_HARMONY_SEGMENT = re.compile(
    r"<\|channel\|>(\w+)(?:(?!<\|message\|>).)*?<\|message\|>(.*?)(?=<\|end\|>|<\|return\|>|<\|call\|>"
    r"|<\|start\|>|<\|channel\|>|$)", re.S)
_HARMONY_TOKEN = re.compile(r"<\|start\|>(?:assistant|user|system|developer)?"
                            r"|<\|(?:end|return|call|channel|message|constrain)\|>")
# The final channel's header; for a JSON answer gpt-oss writes "<|channel|>final <|constrain|>json<|message|>".
_HARMONY_FINAL_HEADER = re.compile(r"<\|channel\|>final(?:(?!<\|message\|>|<\|end\|>|<\|channel\|>).)*"
                                   r"<\|message\|>", re.S)
# The same format detokenized without special tokens (what some servers return): "analysis...assistantfinal..."
# ("assistantfinal json{...}" when the final channel was constrained).
_HARMONY_FLAT = re.compile(r"\A\s*analysis(.*?)assistant\s*final(?:\s*(?i:json)(?=\s*[\[{]))?(.*)\Z", re.S)
_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.S)


def reasoning_style(chat_template: str) -> str | None:
    """'harmony' (gpt-oss), 'think' (Qwen3, DeepSeek-R1...) or None, from a model's chat template."""
    if "<|channel|>" in chat_template or "<|message|>" in chat_template:
        return "harmony"
    if THINK_OPEN in chat_template or THINK_CLOSE in chat_template:
        return "think"
    return None


def split_reasoning(text: str) -> tuple[str, str]:
    """(answer, reasoning) of a raw completion; text without reasoning markers is all answer."""
    if "<|channel|>" in text or "<|message|>" in text:
        return _split_harmony(text)
    flat = _HARMONY_FLAT.match(text)
    if flat:
        return flat.group(2).strip(), flat.group(1).strip()
    return _split_think(text)


def _split_harmony(text: str) -> tuple[str, str]:
    answer, reasoning = [], []
    lead = _HARMONY_TOKEN.sub("", text.split("<|channel|>", 1)[0]).strip()
    if lead and "<|channel|>" in text:  # text before any channel (a cut or odd start) is not the answer
        reasoning.append(lead)
    for channel, body in _HARMONY_SEGMENT.findall(text):
        (answer if channel == "final" else reasoning).append(body.strip())
    if not answer and not reasoning:  # markers but no channel: keep the text, minus the markers
        return _HARMONY_TOKEN.sub("", text).strip(), ""
    return "\n".join(a for a in answer if a), "\n\n".join(r for r in reasoning if r)


def _split_think(text: str) -> tuple[str, str]:
    reasoning = [m.strip() for m in _THINK_BLOCK.findall(text)]
    rest = _THINK_BLOCK.sub("", text)
    if THINK_CLOSE in rest:  # the template opened <think> in the prompt: reasoning runs up to </think>
        head, _, rest = rest.rpartition(THINK_CLOSE)
        reasoning.insert(0, head.replace(THINK_CLOSE, "").strip())
    if THINK_OPEN in rest:  # unclosed (truncated) reasoning: everything after <think> is reasoning
        rest, _, tail = rest.partition(THINK_OPEN)
        reasoning.append(tail.strip())
    return rest.strip(), "\n\n".join(r for r in reasoning if r)


def inside_open_think(prompt: str) -> bool:
    """True when a rendered prompt ends inside an unclosed <think> block (e.g. DeepSeek-R1 templates)."""
    return prompt.rfind(THINK_OPEN) > prompt.rfind(THINK_CLOSE)


def reasoning_finished(style: str, generated: str) -> bool:
    """True once a reasoning model's raw output has reached its final answer."""
    if style == "harmony":
        return _HARMONY_FINAL_HEADER.search(generated) is not None
    return THINK_CLOSE in generated


def force_final_marker(style: str) -> str:
    """Text that closes the reasoning and opens the answer when the reasoning budget runs out."""
    return HARMONY_FORCE_FINAL if style == "harmony" else THINK_FORCE_CLOSE
