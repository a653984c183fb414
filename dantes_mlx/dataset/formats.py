"""Read training rows in any common format and convert them to and from mlx-lm's chat/completions/text."""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dantes_mlx.errors import ConfigError, InputError

OUTPUT_FORMATS = ("chat", "completions", "text")
# Input format name -> what a user recognises it by (used in error messages).
INPUT_FORMATS = {
    "pairs": "dantes-mlx pairs {instruction, response, source_id}",
    "sharegpt": "ShareGPT {conversations: [{from, value}]}",
    "chat": "OpenAI/Mistral chat {messages: [{role, content}]}",
    "alpaca": "Alpaca/LightningAI {instruction, input, output}",
    "completions": "prompt/completion {prompt, completion}",
    "trl": "TRL conversational {prompt: [messages], completion: [messages]}",
    "text": "plain {text}",
}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                  "system": "system"}
CHAT_ROLES = ("system", "user", "assistant")
# mlx-lm's `tools` rows: message keys its ChatDataset hands to the chat template as written (with the row's `tools`).
TOOL_MESSAGE_KEYS = {"assistant": ("tool_calls",), "tool": ("tool_call_id", "name")}
CSV_DELIMITERS = (",", ";", "\t")
# C0/C1 control characters other than tab and newline: invisible, and never wanted in training text.
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
INST_TURN = re.compile(r"\[INST\](.*?)\[/INST\](.*?)(?=\[INST\]|\Z)", re.S)
LLAMA2_SYS = re.compile(r"^\s*<<SYS>>(.*?)<</SYS>>\s*", re.S)
# Keys of generated rows carried to the training rows (mlx-lm ignores them): eval finds out-of-character questions
# by `ooc`, the leak check follows every citation of a conversation through `source_ids`.
TAG_KEYS = ("ooc", "source_ids")


@dataclass
class Example:
    """One training conversation, whatever format it came from, with where it came from."""
    messages: list[dict]
    path: str
    line: int
    kind: str
    source_id: str | None = None
    label: str | None = None
    fields: dict = field(default_factory=dict)
    text: str | None = None  # plain-text rows that carry no user/assistant turns

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def turns(self) -> list[dict]:
        """The messages without a leading system message."""
        return self.messages[1:] if self.messages and self.messages[0]["role"] == "system" else self.messages


def clean_text(value: str) -> tuple[str, bool]:
    """NFC-normalise, drop control characters and trim; returns (text, whether anything was removed)."""
    text = unicodedata.normalize("NFC", value)
    cleaned = CONTROL_CHARS.sub("", text)
    return cleaned.strip(), cleaned != text


def detect_format(record: Any) -> str | None:
    """The input format of one record, or None when it matches none of INPUT_FORMATS."""
    if not isinstance(record, dict):
        return None
    if "conversations" in record:
        return "sharegpt"
    if "messages" in record:
        return "chat"
    if "instruction" in record and "response" in record:
        return "pairs"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "prompt" in record and "completion" in record:
        return "trl" if isinstance(record["prompt"], list) else "completions"
    if "text" in record:
        return "text"
    return None


def unwrap_inst(text: str) -> list[dict] | None:
    """Messages from text with Mistral/Llama-2 markup baked in (`<s>[INST] q [/INST] a</s>`), else None."""
    if "[INST]" not in text or "[/INST]" not in text:
        return None
    body = text.replace("<s>", "").replace("</s>", "")
    messages: list[dict] = []
    for n, match in enumerate(INST_TURN.finditer(body)):
        user, answer = match.group(1).strip(), match.group(2).strip()
        system = LLAMA2_SYS.match(user)
        if system and n == 0:
            messages.append({"role": "system", "content": system.group(1).strip()})
            user = user[system.end():].strip()
        messages.append({"role": "user", "content": user})
        if answer:
            messages.append({"role": "assistant", "content": answer})
    return messages or None


def _content(value: Any, where: str) -> str:
    """Message content as a string; OpenAI-style lists of text parts are joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(p.get("text", "") for p in value)
    raise ValueError(f"{where} content must be a string, got {type(value).__name__}")


def _chat_messages(items: Any, role_key: str, content_key: str, roles: dict) -> list[dict]:
    """Messages as {role, content}; with a `tool` role in `roles`, mlx-lm's tool keys are kept as written
    and an assistant turn holding tool_calls may have no content (absent or null, left so)."""
    if not isinstance(items, list):
        raise ValueError(f"expected a list of messages, got {type(items).__name__}")
    out = []
    for n, item in enumerate(items):
        calls = "tool" in roles and isinstance(item, dict) and bool(item.get("tool_calls"))
        if not isinstance(item, dict) or role_key not in item or (content_key not in item and not calls):
            raise ValueError(f"message {n} needs '{role_key}' and '{content_key}' keys")
        role = roles.get(str(item[role_key]).lower())
        if role is None:
            raise ValueError(f"message {n} has unknown {role_key} '{item[role_key]}' (valid: {', '.join(roles)})")
        message = {"role": role}
        if content_key in item:
            content = item[content_key]
            message["content"] = None if content is None and calls else _content(content, f"message {n}")
        if "tool" in roles:
            message.update({k: item[k] for k in TOOL_MESSAGE_KEYS.get(role, ()) if k in item})
        out.append(message)
    return out


def _prompt_messages(prompt: str, completion: str) -> list[dict]:
    """Prompt/completion to messages, unwrapping `[INST]` markup that older guides bake into the prompt."""
    unwrapped = unwrap_inst(prompt)
    if unwrapped and unwrapped[-1]["role"] == "user":
        return unwrapped + [{"role": "assistant", "content": completion.replace("</s>", "")}]
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def to_messages(record: dict, kind: str) -> tuple[list[dict], str | None]:
    """(messages, plain text) of a record of the given input format; raises ValueError on bad shape."""
    if kind == "sharegpt":
        return _chat_messages(record["conversations"], "from", "value", SHAREGPT_ROLES), None
    if kind == "chat":
        return _chat_messages(record["messages"], "role", "content", {r: r for r in CHAT_ROLES + ("tool",)}), None
    if kind == "pairs":
        return [{"role": "user", "content": _content(record["instruction"], "instruction")},
                {"role": "assistant", "content": _content(record["response"], "response")}], None
    if kind == "alpaca":
        user = _content(record["instruction"], "instruction")
        extra = record.get("input") or ""
        user = f"{user}\n\n{_content(extra, 'input')}" if str(extra).strip() else user
        system = [{"role": "system", "content": record["system"]}] if record.get("system") else []
        return system + [{"role": "user", "content": user},
                         {"role": "assistant", "content": _content(record["output"], "output")}], None
    if kind == "completions":
        return _prompt_messages(_content(record["prompt"], "prompt"),
                                _content(record["completion"], "completion")), None
    if kind == "trl":
        roles = {r: r for r in CHAT_ROLES}
        return (_chat_messages(record["prompt"], "role", "content", roles)
                + _chat_messages(record["completion"], "role", "content", roles)), None
    text = _content(record["text"], "text")
    return unwrap_inst(text) or [], text


def make_example(record: dict, kind: str, path: str, line: int) -> tuple[Example, bool]:
    """An Example from one record; returns (example, whether control characters were removed)."""
    try:
        messages, text = to_messages(record, kind)
    except (ValueError, TypeError) as exc:
        raise InputError(f"bad {INPUT_FORMATS[kind]} row: {exc}", path=path, line=line,
                         fix="repair or delete that row") from exc
    dirty = False
    for message in messages:
        if isinstance(message.get("content"), str):  # a tool-calling assistant turn may have none
            message["content"], changed = clean_text(message["content"])
            dirty |= changed
    if text is not None and not messages:
        text, dirty = clean_text(text)
    source = record.get("source_id")
    label = record.get("label")
    return Example(messages=messages, path=path, line=line, kind=kind, text=text if not messages else None,
                   source_id=None if source in (None, "") else str(source),
                   label=None if label in (None, "") else str(label), fields=record), dirty


def _decode_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of each non-blank line; invalid UTF-8 raises InputError with the line."""
    out = []
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"invalid UTF-8 at byte {exc.start} of the line", path=path, line=lineno,
                             fix="re-save the file as UTF-8") from exc
        if text.strip():
            out.append((lineno, text))
    return out


def decode_text(path: Path) -> str:
    """A whole file as text: UTF-8 (a BOM is dropped), newlines as \\n; elsewise InputError naming the line."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # Excel on Windows saves "CSV" as cp1252, where 'œ' and '€' are not latin-1: say which codec to convert from.
        raise InputError(f"invalid UTF-8 at byte {exc.start}", path=path, line=raw[:exc.start].count(b"\n") + 1,
                         fix="re-save the file as UTF-8 (Excel: CSV UTF-8), or convert it: "
                             "`iconv -f cp1252 -t utf-8 IN > OUT`") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_csv(path: str | Path) -> list[tuple[int, dict]]:
    """(first line, record) per CSV row; the separator (',', ';' as French Excel writes, or tab) is read from
    the header line; a short row's missing cells are empty strings."""
    path = Path(path)
    text = decode_text(path)
    header = text.split("\n", 1)[0]
    delimiter = max(CSV_DELIMITERS, key=header.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    names = [name.strip() for name in next(reader, [])]
    records = []
    while True:
        start = reader.line_num + 1
        cells = next(reader, None)
        if cells is None:
            return records
        if any(cell.strip() for cell in cells):
            records.append((start, {name: cells[i] if i < len(cells) else "" for i, name in enumerate(names)}))


def read_records(path: str | Path) -> list[tuple[int, dict]]:
    """(line or record number, record) from a .jsonl, .json (a list, or one key holding a list) or .csv file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("input file not found", path=path, fix="check the path")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path)
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            line = getattr(exc, "lineno", None)
            raise InputError(f"invalid JSON: {exc}", path=path, line=line, fix="repair the file") from exc
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise InputError("expected a JSON list of rows (or an object with one list of rows)", path=path,
                                 fix="save the rows as a JSON list or as JSONL")
            data = lists[0]
        if not isinstance(data, list):
            raise InputError("expected a JSON list of rows", path=path, fix="save the rows as a JSON list or JSONL")
        return list(enumerate(data, 1))
    records = []
    for lineno, line in _decode_lines(path):
        try:
            records.append((lineno, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON ({exc.msg}, column {exc.colno})", path=path, line=lineno,
                             fix="repair or delete that line") from exc
    return records


def read_examples(path: str | Path) -> tuple[list[Example], str, int]:
    """Examples of one file, its single input format and how many rows had control characters removed."""
    path = Path(path)
    examples, kind, first_line, dirty = [], None, 0, 0
    for line, record in read_records(path):
        found = detect_format(record)
        if found is None:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise InputError(f"row format not recognised (keys: {keys})", path=path, line=line,
                             fix="use one of: " + "; ".join(INPUT_FORMATS.values()))
        if kind is None:
            kind, first_line = found, line
        elif found != kind:
            raise InputError(f"this row is {INPUT_FORMATS[found]} but the file started as {INPUT_FORMATS[kind]} "
                             f"(line {first_line}); one file must hold one format", path=path, line=line,
                             fix="convert the rows to one format or split them into separate files")
        example, changed = make_example(record, found, str(path), line)
        examples.append(example)
        dirty += changed
    if not examples:
        raise InputError("no rows", path=path, fix="check that this is the right file")
    return examples, kind, dirty


def message_text(message: dict) -> str:
    """The words of a message for dedupe, grouping and labels: its content, then its tool calls as JSON."""
    content = message.get("content")
    parts = [content] if isinstance(content, str) and content else []
    if message.get("tool_calls"):
        parts.append(json.dumps(message["tool_calls"], ensure_ascii=False, sort_keys=True))
    return "\n".join(parts)


def uses_tools(example: Example) -> bool:
    """True for mlx-lm's `tools` rows: a `tools` list, assistant tool_calls or `tool` messages."""
    return bool(example.fields.get("tools")) or any(m["role"] == "tool" or m.get("tool_calls")
                                                    for m in example.messages)


def render_text(messages: list[dict], tokenizer=None) -> str:
    """A conversation as one training text: the tokenizer's chat template, else Mistral's [INST] layout."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        bos = getattr(tokenizer, "bos_token", None)
        return text[len(bos):] if bos and text.startswith(bos) else text  # mlx-lm's encode adds BOS again
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    parts = []
    for n, message in enumerate(turns):
        if message["role"] == "user":
            content = f"{system}\n\n{message['content']}" if system and n == len(turns) - 2 else message["content"]
            parts.append(f"[INST] {content} [/INST]")
        else:
            parts.append(f" {message['content']}</s>" if n < len(turns) - 1 else f" {message['content']}")
    return "".join(parts)


def template_drops_system(tokenizer) -> bool:
    """True when the chat template loses a system message in a conversation that ends with the answer.

    Mistral v0.3's template writes the system prompt only before the LAST user message when that message
    is the last one (inference); in a training row, which ends with the assistant, it vanishes.
    """
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return False
    probe = [{"role": "system", "content": "SYSTEMPROBE"}, {"role": "user", "content": "u"},
             {"role": "assistant", "content": "a"}]
    return "SYSTEMPROBE" not in tokenizer.apply_chat_template(probe, tokenize=False)


def inline_system(messages: list[dict]) -> list[dict]:
    """Move a leading system message in front of the last user turn, where Mistral's template puts it
    at inference ("[INST] system\n\nquestion[/INST]"), so training sees the same tokens."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    last_user = max(i for i, m in enumerate(rest) if m["role"] == "user")
    rest[last_user]["content"] = f"{system}\n\n{rest[last_user]['content']}"
    return rest


def to_output_row(example: Example, fmt: str, system: str | None, tokenizer=None,
                  system_inline: bool = False) -> dict:
    """One row in mlx-lm's `fmt` with the provenance keys mlx-lm ignores (source_id, label).

    `system_inline` folds the system prompt into the last user turn (see `template_drops_system`).
    """
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"unknown output format '{fmt}'", fix=f"valid formats: {', '.join(OUTPUT_FORMATS)}")
    if fmt != "chat" and uses_tools(example):
        raise InputError(f"tool-calling rows (tool_calls, tool messages, a tools list) only fit mlx-lm's chat "
                         f"format, not {fmt}", path=example.path, line=example.line, fix="use --format chat")
    messages = [dict(m) for m in example.messages]
    if system and (not messages or messages[0]["role"] != "system"):
        messages.insert(0, {"role": "system", "content": system})
    if system_inline and messages:
        messages = inline_system(messages)
    if fmt == "text":
        row = {"text": example.text if example.text is not None else render_text(messages, tokenizer)}
    elif not example.messages:
        raise InputError("plain text rows have no user/assistant turns to put in a chat or completions row",
                         path=example.path, line=example.line, fix="use --format text")
    elif fmt == "chat":
        row = {"messages": messages}
        if example.fields.get("tools") is not None:
            row["tools"] = example.fields["tools"]  # mlx-lm passes it to apply_chat_template(tools=...)
    else:
        turns = example.turns()
        if len(turns) != 2 or example.messages[0]["role"] == "system":
            raise InputError("only single-turn rows without a system message fit mlx-lm's completions format",
                             path=example.path, line=example.line, fix="use --format chat")
        row = {"prompt": turns[0]["content"], "completion": turns[1]["content"]}
    row["source_id"] = example.source_id
    if example.label is not None:
        row["label"] = example.label
    row.update({key: example.fields[key] for key in TAG_KEYS if example.fields.get(key) not in (None, "", [])})
    return row


def conversation_problems(messages: Any) -> list[str]:
    """What keeps a message list from being a valid training conversation (empty list: valid).

    The rules fine-tuning services apply: an optional leading system message, then user and assistant
    turns alternating from a user turn, ending with the assistant, no empty content. mlx-lm's `tools`
    rows also pass: an assistant turn may hold `tool_calls` instead of content, answered by `tool` messages.
    """
    if not isinstance(messages, list) or not messages:
        return ["'messages' must be a non-empty list"]
    problems = []
    expected, previous = "user", None
    for n, message in enumerate(messages):
        calls = isinstance(message, dict) and message.get("role") == "assistant" and bool(message.get("tool_calls"))
        if not isinstance(message, dict) or "role" not in message or ("content" not in message and not calls):
            problems.append(f"message {n} needs 'role' and 'content'")
            continue
        role, content = message["role"], message.get("content")
        if role not in CHAT_ROLES + ("tool",):
            problems.append(f"message {n} has unknown role '{role}' (valid: {', '.join(CHAT_ROLES)}, tool)")
            continue
        if calls and content in (None, ""):
            pass
        elif not isinstance(content, str):
            problems.append(f"message {n} ({role}) content must be a string")
        elif not content.strip():
            problems.append(f"empty {role} content at message {n}")
        if role == "system":
            if n != 0:
                problems.append(f"system message at position {n}: only a leading system message is allowed")
            continue
        if role == "tool":
            if previous not in ("tool_calls", "tool"):
                problems.append(f"tool message at {n} does not follow an assistant turn with tool_calls")
            expected, previous = "assistant", "tool"
            continue
        if role != expected:
            problems.append(f"two {role} turns in a row at message {n}" if n and messages[n - 1].get("role") == role
                            else f"message {n} is {role}, expected {expected}")
        expected, previous = ("assistant" if role == "user" else "user"), ("tool_calls" if calls else role)
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if "assistant" not in roles:
        problems.append("missing assistant turn: the conversation has no answer to learn")
    elif roles[-1] != "assistant":
        problems.append(f"missing assistant turn: the conversation ends with a {roles[-1]} message")
    return problems
