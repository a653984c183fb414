"""Tolerant parser: salvage {"instruction","response"} pairs from messy LLM text, report the rest by line."""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

INSTRUCTION_KEYS = ("instruction", "question", "prompt")
RESPONSE_KEYS = ("response", "answer", "completion", "output")
_DECODER = json.JSONDecoder(strict=False)  # raw control characters inside strings are tolerated
# A JSON string literal on one line (salvage never lets a cut-off string swallow the next line).
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_SCALAR = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.S)
# Wrapper noise that is not worth a reject: code fences, their language tag, JSON punctuation.
_NOISE = re.compile(r'```[a-zA-Z]*|"[^"\n]*"\s*:|[\s,\[\]{}:]+')


@dataclass
class ParsedPair:
    """One salvaged pair; `complete` is False when its object was cut off or left unclosed."""
    instruction: str
    response: str
    line: int
    complete: bool = True


@dataclass
class ParseReject:
    """Text that held no usable pair, with the line where it starts and why."""
    line: int
    reason: str
    text: str


@dataclass
class ParseResult:
    """Everything the parser found in one text."""
    pairs: list[ParsedPair] = field(default_factory=list)
    rejects: list[ParseReject] = field(default_factory=list)


class _Lines:
    """Maps character offsets to 1-based line numbers."""

    def __init__(self, text: str, first_line: int):
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.first = first_line

    def at(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset) - 1 + self.first


def _pick(obj: dict, keys: tuple[str, ...]):
    for key in keys:
        if isinstance(obj.get(key), str):
            return obj[key]
    return None


def _pairs_in(value, line: int) -> list[ParsedPair]:
    """Pairs inside a decoded JSON value: the object itself, or any list/dict nested in it."""
    found: list[ParsedPair] = []
    if isinstance(value, dict):
        instruction, response = _pick(value, INSTRUCTION_KEYS), _pick(value, RESPONSE_KEYS)
        if instruction is not None and response is not None:
            return [ParsedPair(instruction, response, line)]
        for inner in value.values():
            found += _pairs_in(inner, line)
    elif isinstance(value, list):
        for inner in value:
            found += _pairs_in(inner, line)
    return found


def _decode_string(literal: str) -> str:
    """A JSON string literal, forgiving invalid escapes such as \\' that LLMs write."""
    try:
        return json.loads(literal, strict=False)
    except json.JSONDecodeError:
        return json.loads(re.sub(r'\\(?!["\\/bfnrtu])', "", literal), strict=False)


def _salvage(text: str, start: int) -> tuple[dict, int, str]:
    """Read a flat object from the '{' at `start` as far as it is well formed.

    Returns the complete string fields read, where reading stopped, and why it stopped.
    """
    fields: dict = {}
    pos, key = start + 1, None
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            return fields, pos, "cut off at the end of the text"
        char = text[pos]
        if char == "}":
            return fields, pos + 1, "closed"
        if char == '"':
            match = _STRING.match(text, pos)
            if match is None:
                return fields, len(text) if "\n" not in text[pos:] else text.index("\n", pos), \
                    "cut off inside a string"
            literal, pos = match.group(), match.end()
            if key is None:
                rest = text[pos:].lstrip(" \t\r\n")
                if not rest.startswith(":"):
                    return fields, pos, "a key without a value"
                key, pos = _decode_string(literal), len(text) - len(rest) + 1
            else:
                fields[key], key = _decode_string(literal), None
            continue
        scalar = _SCALAR.match(text, pos)
        if key is not None and scalar:
            key, pos = None, scalar.end()
            continue
        if key is not None and char in "{[":
            return fields, pos, "nested value"
        # A new object or prose where a key was expected: the object was left unclosed here.
        return fields, pos, "left unclosed"


def _salvaged_pair(fields: dict, line: int) -> ParsedPair | None:
    instruction, response = _pick(fields, INSTRUCTION_KEYS), _pick(fields, RESPONSE_KEYS)
    if instruction is None or response is None:
        return None
    return ParsedPair(instruction, response, line, complete=False)


def _stray(text: str, begin: int, end: int, lines: _Lines, result: ParseResult) -> None:
    """Report text between objects unless it is only whitespace, fences or JSON punctuation."""
    chunk = text[begin:end]
    if _NOISE.sub("", chunk):
        offset = begin + len(chunk) - len(chunk.lstrip())
        result.rejects.append(ParseReject(lines.at(offset), "text outside any JSON object",
                                          chunk.strip()[:200]))


def parse_pairs(text: str, first_line: int = 1) -> ParseResult:
    """Every complete pair in `text`, every pair whose two strings survive a cut-off object, and rejects.

    Handles objects glued on one line, `{"pairs": [...]}` wrappers, code fences, prose around the
    JSON, <think> blocks, trailing commas, a truncated last object and objects left unclosed.
    """
    text = _THINK.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)
    lines, result = _Lines(text, first_line), ParseResult()
    pos = done = 0
    while (brace := text.find("{", pos)) >= 0:
        line = lines.at(brace)
        try:
            value, end = _DECODER.raw_decode(text, brace)
        except json.JSONDecodeError:
            value, end = None, -1
        if end >= 0:
            found = _pairs_in(value, line)
            _stray(text, done, brace, lines, result)
            if not found:
                result.rejects.append(ParseReject(line, "JSON object without instruction/response",
                                                  text[brace:end][:200]))
            result.pairs += found
            pos = done = end
            continue
        fields, stop, why = _salvage(text, brace)
        pair = _salvaged_pair(fields, line)
        if pair is not None:
            _stray(text, done, brace, lines, result)
            result.pairs.append(pair)
            pos = done = stop
        elif why == "nested value":
            pos = brace + 1  # a broken wrapper such as {"pairs": [ ...: look inside it
        else:
            _stray(text, done, brace, lines, result)
            missing = "response" if _pick(fields, INSTRUCTION_KEYS) is not None else "instruction"
            result.rejects.append(ParseReject(line, f"incomplete object ({why}, no complete {missing})",
                                              text[brace:stop][:200]))
            pos = done = max(stop, brace + 1)
    _stray(text, done, len(text), lines, result)
    return result


def parse_file(path) -> ParseResult:
    """parse_pairs over a whole file, line numbers counted from its first line."""
    return parse_pairs(Path(path).read_text(encoding="utf-8", errors="replace"))
