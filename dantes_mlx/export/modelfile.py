"""The Ollama Modelfile: writing it (Mistral v0.3 template, stops, persona, licence), parsing it, `ollama create`.

`parse_modelfile` follows Ollama's own grammar (parser/parser.go) and its parameter checks
(api.FormatParams), so the tests can prove that every line we write is one Ollama accepts.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from dantes_mlx.config import CharacterConfig, ExportConfig, ProjectConfig
from dantes_mlx.errors import ConfigError, InputError, ModelError
from dantes_mlx.export.gguf import quant_name
from dantes_mlx.models.hub import load_tokenizer

# Ollama's library template for Mistral v0.3 (tools included), with one change: an assistant turn
# starts with a space, as in Mistral's own chat template (`[/INST] answer</s>`), which is what the
# model saw in training. The system prompt goes before the LAST user message, as Mistral does.
MISTRAL_TEMPLATE = """{{- if .Messages }}
{{- range $index, $_ := .Messages }}
{{- if eq .Role "user" }}
{{- if and (eq (len (slice $.Messages $index)) 1) $.Tools }}[AVAILABLE_TOOLS] {{ $.Tools }}[/AVAILABLE_TOOLS]
{{- end }}[INST] {{ if and $.System (eq (len (slice $.Messages $index)) 1) }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .Content }} {{ .Content }}
{{- else if .ToolCalls }}[TOOL_CALLS] [
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{- end }}]
{{- end }}</s>
{{- else if eq .Role "tool" }}[TOOL_RESULTS] {"content": {{ .Content }}} [/TOOL_RESULTS]
{{- end }}
{{- end }}
{{- else }}[INST] {{ if .System }}{{ .System }}

{{ end }}{{ .Prompt }}[/INST]
{{- end }}{{ .Response }}
{{- if .Response }}</s>
{{- end }}"""
STOP_TOKENS = ("[INST]", "[/INST]", "</s>")

# ChatML (SmolLM2, Qwen 2/2.5, many BPE bases), as Ollama's library templates for those models write it: the
# system prompt first, each turn between <|im_start|>ROLE and <|im_end|>, then the assistant's open turn.
CHATML_TEMPLATE = """{{- if .Messages }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}
{{- end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"""
CHATML_STOPS = ("<|im_end|>", "<|im_start|>")


@dataclass(frozen=True)
class ChatFormat:
    """A chat format Ollama can be given: its TEMPLATE, its stop strings, and how it writes a chat (checked against
    the base model's own chat template, which training used)."""
    name: str
    template: str
    stops: tuple[str, ...]


MISTRAL = ChatFormat("Mistral v0.3", MISTRAL_TEMPLATE, STOP_TOKENS)
CHATML = ChatFormat("ChatML", CHATML_TEMPLATE, CHATML_STOPS)

MISTRAL_LICENSE = (
    "Base model: Mistral-7B-Instruct-v0.3 by Mistral AI, released under the Apache License,\n"
    "Version 2.0 (https://www.apache.org/licenses/LICENSE-2.0). The fine-tuned weights are a\n"
    "derivative of it and are distributed under the same licence.")
BOOK_NOTICE = ("Training text: {books} (https://www.gutenberg.org), in the public domain;\n"
               "the question/answer pairs generated from it add no rights.")
EXAMPLE_HEADER = ("Example Modelfile written by `dantes-mlx export` (Mistral-7B-Instruct-v0.3 + the Dantès\n"
                  "adapter, q4_k_m). `dantes-mlx export -o export` writes the real one next to the GGUF in\n"
                  "export/; from the repository root this one works too:\n"
                  "  ollama create dantes -f Modelfile && ollama run dantes\n"
                  "Regenerate it with: python -m dantes_mlx.export.modelfile > Modelfile")

COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser",
            "parameter", "message", "requires")
ROLES = ("system", "user", "assistant")
# Ollama's api.Options (json name -> Go kind); deprecated ones are accepted with a warning.
PARAMETER_TYPES = {
    "num_keep": int, "seed": int, "num_predict": int, "top_k": int, "top_p": float, "min_p": float,
    "typical_p": float, "repeat_last_n": int, "temperature": float, "repeat_penalty": float,
    "presence_penalty": float, "frequency_penalty": float, "stop": list, "num_ctx": int,
    "num_batch": int, "num_gpu": int, "main_gpu": int, "use_mmap": bool, "num_thread": int,
}
DEPRECATED_PARAMETERS = ("penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only",
                         "use_mlock", "mirostat", "mirostat_tau", "mirostat_eta")
_INSTRUCTIONS = (set(COMMANDS) - {"from", "parameter"}) | {"model"}
# Ollama 0.34.1 and later refuse any Modelfile holding ADAPTER (ollama PR #14969, Sept. 2026).
ADAPTER_REFUSED_SINCE = (0, 34, 1)
ADAPTER_NOTE = ("ADAPTER is accepted by Ollama up to 0.34.0 only: 0.34.1 and later refuse any Modelfile that "
                "holds it (ollama PR #14969).\nWith those, use ./Modelfile (the fused GGUF) instead.")
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*(:[A-Za-z0-9._-]+)?$")


@dataclass
class Command:
    """One Modelfile instruction as Ollama reads it (name 'model' for FROM; MESSAGE args 'role: text')."""

    name: str
    args: str
    line: int = 0


# ---------------------------------------------------------------- writing
def _printable(value: str, what: str) -> str:
    """Ollama drops non-printable characters: other Unicode spaces become ' ', controls are refused."""
    out = []
    for ch in value:
        if ch in "\n\t" or ch.isprintable():
            out.append(ch)
        elif unicodedata.category(ch) == "Zs":  # e.g. the no-break spaces of French typography
            out.append(" ")
        elif ch != "\r":
            raise ConfigError(f"{what} holds the control character U+{ord(ch):04X}, which Ollama drops",
                              fix=f"remove it from the {what}")
    return "".join(out)


def quote(value: str, what: str, *, always: bool = False) -> str:
    """A Modelfile value Ollama reads back unchanged: bare when safe, else in triple quotes."""
    value = _printable(value, what)
    if '"""' in value:
        raise ConfigError(f'{what} contains """, which cannot be quoted in a Modelfile',
                          fix=f'rewrite the {what} without three double quotes in a row')
    needs = always or not value or "\n" in value or value != value.strip() or value.startswith('"')
    return f'"""{value}"""' if needs else value


def _parameter_value(name: str, value) -> str:
    kind = PARAMETER_TYPES.get(name)
    if kind is None:
        raise ConfigError(f"unknown Ollama parameter {name!r}", fix=f"use one of {', '.join(PARAMETER_TYPES)}")
    if kind is bool:
        return "true" if value else "false"
    try:
        whole = not isinstance(value, bool) and float(value).is_integer()
    except (TypeError, ValueError):
        whole = False
    if kind is int and not whole:
        raise ConfigError(f"Ollama parameter {name} must be an integer, not {value!r}", fix="use an integer")
    return str(int(value)) if kind is int else quote(str(value), f"parameter {name}")


def check_modelfile_values(*, system: str | None = None, parameters: Mapping | None = None,
                           messages: Iterable[Mapping] = ()) -> None:
    """ConfigError now for a persona, PARAMETER or MESSAGE a Modelfile cannot hold (e.g. one with \"\"\"),
    before any export work."""
    build_modelfile("./model.gguf", system=system, parameters=parameters, messages=messages)


def build_modelfile(source: str, *, adapter: str | None = None, system: str | None = None,
                    parameters: Mapping | None = None, messages: Iterable[Mapping] = (),
                    license_text: str | None = None, template: str = MISTRAL_TEMPLATE,
                    stop: Iterable[str] = STOP_TOKENS, header: str | None = None) -> str:
    """The Modelfile text: FROM (GGUF path or library model), ADAPTER, TEMPLATE, stops, sampling, SYSTEM,
    MESSAGE examples, LICENSE. Checked by `parse_modelfile` before it is returned."""
    lines = [f"# {row}".rstrip() for row in (header or "").splitlines()]
    lines.append(f"FROM {quote(source, 'FROM path')}")
    if adapter:
        lines.append(f"ADAPTER {quote(adapter, 'ADAPTER path')}")
    lines.append(f"TEMPLATE {quote(template, 'template', always=True)}")
    lines += [f"PARAMETER stop {quote(token, 'stop token')}" for token in stop]
    for name, value in (parameters or {}).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        lines += [f"PARAMETER {name} {_parameter_value(name, v)}" for v in values]
    if system:
        lines.append(f"SYSTEM {quote(system, 'system prompt (character.persona)', always=True)}")
    for message in messages:
        role = message.get("role")
        if role not in ROLES:
            raise ConfigError(f"MESSAGE role {role!r} is not one Ollama accepts", fix=f"use one of {', '.join(ROLES)}")
        lines.append(f"MESSAGE {role} {quote(str(message.get('content', '')), 'message', always=True)}")
    if license_text:
        lines.append(f"LICENSE {quote(license_text, 'licence', always=True)}")
    text = "\n".join(lines) + "\n"
    parse_modelfile(text)
    return text


# A chat that exercises what the TEMPLATE decides: system placement, replayed history, answer spacing.
_SAMPLE_CHAT = [{"role": "system", "content": "Tu es Dantès."}, {"role": "user", "content": "Qui êtes-vous ?"},
                {"role": "assistant", "content": "Un marin."}, {"role": "user", "content": "Et ensuite ?"}]


def chatml_rendering(messages: Iterable[Mapping]) -> str:
    """The prompt CHATML_TEMPLATE makes Ollama send for a chat that ends with a user turn."""
    messages = list(messages)
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    out = [f"<|im_start|>system\n{system}<|im_end|>\n"] if system else []
    out += [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages if m["role"] != "system"]
    return "".join(out)


def ollama_rendering(messages: Iterable[Mapping], fmt: ChatFormat = MISTRAL) -> str:
    """The prompt the format's TEMPLATE makes Ollama send for a chat (Ollama adds BOS itself when tokenizing)."""
    if fmt is CHATML:
        return chatml_rendering(messages)
    messages = list(messages)
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    out = []
    for i, m in enumerate(messages):
        if m["role"] == "user":
            prefix = f"{system}\n\n" if system and i == len(messages) - 1 else ""
            out.append(f"[INST] {prefix}{m['content']}[/INST]")
        elif m["role"] == "assistant":
            out.append(f" {m['content']}</s>")
    return "".join(out)


def chat_format(model_dir: str | Path) -> tuple[ChatFormat, str | None]:
    """The Modelfile's chat format for a base: the one whose rendering matches the base's own chat template (what
    training saw), and None; else Mistral v0.3's and a warning saying how they differ (no tokenizer to load:
    Mistral's, nothing to compare)."""
    tokenizer, _ = load_tokenizer(str(model_dir))
    if tokenizer is None:
        return MISTRAL, None
    try:
        trained = tokenizer.apply_chat_template(_SAMPLE_CHAT, tokenize=False)
    except Exception as exc:  # no chat template, or one that refuses a system message (Mistral v0.1/v0.2)
        trained = f"<refused: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}>"
    for fmt in (MISTRAL, CHATML):
        if trained in (sent := ollama_rendering(_SAMPLE_CHAT, fmt), (tokenizer.bos_token or "") + sent):
            return fmt, None
    sent = ollama_rendering(_SAMPLE_CHAT)
    return MISTRAL, (f"warning: the base model's chat template writes a chat as {trained!r}, neither Mistral v0.3's "
                     f"nor ChatML; the Modelfile's TEMPLATE (Mistral v0.3's) makes Ollama send {sent!r}, so Ollama "
                     "would prompt the model unlike training: edit TEMPLATE and PARAMETER stop in the Modelfiles to "
                     "the base's format")


def template_mismatch(model_dir: str | Path) -> str | None:
    """The warning of chat_format: None when a format the Modelfile can be given matches the base's template."""
    return chat_format(model_dir)[1]


def default_license(base_model: str, books: Iterable[str] = ()) -> str:
    """LICENSE text: Apache 2.0 for a Mistral base, the base's own licence otherwise; the book is public domain."""
    ids = [f"#{b}" for b in books]
    names = f"Project Gutenberg ebook{'s' if len(ids) > 1 else ''} {', '.join(ids)}" if ids else "a Project Gutenberg book"
    if "mistral" in str(base_model).lower():
        base = MISTRAL_LICENSE
    else:
        base = f"Base model: {base_model}; see its own licence, which the fine-tuned weights inherit."
    return base + "\n" + BOOK_NOTICE.format(books=names)


def example_modelfile() -> str:
    """The repository's example Modelfile: the default config's Mistral export (see the root `Modelfile`)."""
    export, project = ExportConfig(), ProjectConfig()
    return build_modelfile(f"./{export.out_dir}/{export.ollama_name}-{quant_name(export.quantization)}.gguf",
                           system=CharacterConfig().persona, parameters=export.ollama_parameters,
                           messages=export.ollama_messages,
                           license_text=default_license("mistralai/Mistral-7B-Instruct-v0.3", project.books),
                           header=EXAMPLE_HEADER)


# ---------------------------------------------------------------- parsing (Ollama's grammar)
def _unquote(value: str) -> tuple[str, bool]:
    if value.startswith('"""'):
        return (value[3:-3], True) if len(value) >= 6 and value.endswith('"""') else ("", False)
    if value.startswith('"'):
        return (value[1:-1], True) if len(value) >= 2 and value.endswith('"') else ("", False)
    return value, True


def _step(ch: str, state: str) -> tuple[str, str, str | None]:
    """(next state, rune kept, error) for one character, as Ollama's parseRuneForState."""
    space, newline = ch in " \t", ch in "\r\n"
    if state == "nil":
        return ("comment", "", None) if ch == "#" else ("nil", "", None) if space or newline else ("name", ch, None)
    if state == "name":
        return ("name", ch, None) if ch.isascii() and ch.isalpha() else ("value", "", None) if space else \
            ("nil", "", "command must be one of " + ", ".join(f'"{c}"' for c in COMMANDS))
    if state == "value":
        return ("nil", ch, None) if space or newline else ("value", ch, None)
    if state in ("parameter", "message"):
        ok = ch.isascii() and (ch.isalpha() or (state == "parameter" and (ch.isdigit() or ch == "_")))
        what = "PARAMETER needs a name, then a value" if state == "parameter" else \
            "MESSAGE needs a role (system, user, assistant), then a value"
        return (state, ch, None) if ok else ("value", "", None) if space else ("nil", "", what)
    return ("nil", "", None) if newline else ("comment", "", None)  # comment


def parse_modelfile(text: str, path: str | Path | None = None, *, check_values: bool = True) -> list[Command]:
    """Parse a Modelfile the way `ollama create` does; InputError (file:line) on what Ollama refuses.

    With `check_values`, also the checks Ollama runs when it builds the request: parameter names and
    types, MESSAGE roles, a FROM line.
    """
    where = path or "Modelfile"
    commands: list[Command] = []
    state, buf, line, start, name, role = "nil", [], 1, 1, "", ""
    for ch in text.lstrip("\ufeff"):
        if ch in "\r\n":
            line += 1
        nxt, kept, error = _step(ch, state)
        if error:
            raise InputError(error, path=where, line=line, fix="see https://docs.ollama.com/modelfile")
        if nxt != state:
            word = "".join(buf)
            if state == "name":
                low = word.lower()
                if low not in COMMANDS:
                    raise InputError(f"unknown instruction {word!r}", path=where, line=line,
                                     fix=f"use one of {', '.join(c.upper() for c in COMMANDS)}")
                name, start = ("model" if low == "from" else low), line
                nxt = {"parameter": "parameter", "message": "message"}.get(low, nxt)
            elif state == "parameter":
                name = word
            elif state == "message":
                if word not in ROLES:
                    raise InputError(f"MESSAGE role {word!r} is not one of {', '.join(ROLES)}", path=where,
                                     line=line, fix="write MESSAGE user ... or MESSAGE assistant ...")
                role = word
            elif state == "value":
                value, ok = _unquote(word.strip())
                if not ok or ch in " \t":
                    buf.append(ch)
                    continue
                commands.append(Command(name, f"{role}: {value}" if role else value, start))
                role = ""
            buf, state = [], nxt
        if kept and kept.isprintable():
            buf.append(kept)
    if state == "value":
        value, ok = _unquote("".join(buf).strip())
        if not ok:
            raise InputError("unterminated quoted value at the end of the file", path=where, line=start,
                             fix='close the value with " or """')
        commands.append(Command(name, f"{role}: {value}" if role else value, start))
    elif state not in ("nil", "comment"):
        raise InputError("instruction without a value at the end of the file", path=where, line=line,
                         fix="give the last instruction its value")
    if check_values:
        _check_commands(commands, where)
    return commands


def _check_parameter(command: Command, where) -> None:
    kind = PARAMETER_TYPES.get(command.name)
    if kind is None:
        if command.name in DEPRECATED_PARAMETERS:
            return  # Ollama prints a warning and ignores it
        raise InputError(f"unknown parameter '{command.name}'", path=where, line=command.line,
                         fix=f"use one of {', '.join(PARAMETER_TYPES)}")
    value = command.args
    valid = {int: re.fullmatch(r"[+-]?\d+", value), bool: value in ("1", "t", "T", "TRUE", "true", "True",
                                                                   "0", "f", "F", "FALSE", "false", "False"),
             list: True, float: re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|Inf|NaN)", value)}
    if not valid[kind]:
        raise InputError(f"invalid {kind.__name__} value {value!r} for parameter {command.name}", path=where,
                         line=command.line, fix=f"write a {kind.__name__}")


def _check_commands(commands: list[Command], where) -> None:
    if not any(c.name == "model" for c in commands):
        raise InputError("no FROM line", path=where, fix="start the Modelfile with FROM <gguf path or model>")
    for command in commands:
        if command.name not in _INSTRUCTIONS:
            _check_parameter(command, where)


def instructions(commands: list[Command]) -> dict[str, list[str]]:
    """Parsed commands grouped by name (FROM is 'model'; PARAMETERs by their own name)."""
    out: dict[str, list[str]] = {}
    for command in commands:
        out.setdefault(command.name, []).append(command.args)
    return out


# ---------------------------------------------------------------- ollama create
def create_commands(name: str, modelfile: str | Path) -> list[list[str]]:
    """The commands a user runs by hand: `ollama create NAME -f Modelfile`, then `ollama run NAME`."""
    return [["ollama", "create", name, "-f", str(modelfile)], ["ollama", "run", name]]


def check_model_name(name: str) -> None:
    """Refuse a name `ollama create` would refuse (or read as an option)."""
    if not _MODEL_NAME.match(name):
        raise ConfigError(f"{name!r} is not a valid Ollama model name (export.ollama_name, --name)",
                          fix="use letters, digits, '.', '_', '-' (e.g. dantes or dantes:q4_k_m)")


def parse_ollama_version(text: str) -> list[tuple[int, int, int]]:
    """Every version `ollama --version` prints: the server's ("ollama version is X") and, when they differ
    or no server answers, the client's ("Warning: client version is Y"); pre-release suffixes dropped."""
    return [tuple(int(part) for part in match.groups()) for match in _VERSION.finditer(text)]


def ollama_versions(exe: str, timeout: float = 30) -> list[tuple[int, int, int]]:
    """The versions `exe --version` reports ([] when it cannot be run or says none)."""
    try:
        proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_ollama_version(proc.stdout + "\n" + proc.stderr)


def check_adapter_route(exe: str, modelfile: Path, name: str) -> None:
    """Refuse to run `ollama create` on a Modelfile with ADAPTER when this Ollama (client or server) is
    0.34.1 or later, which would refuse it; say which Modelfile to use instead."""
    commands = parse_modelfile(modelfile.read_text(encoding="utf-8"), modelfile, check_values=False)
    if not any(c.name == "adapter" for c in commands):
        return
    refusing = [v for v in ollama_versions(exe) if v >= ADAPTER_REFUSED_SINCE]
    if refusing:
        version = ".".join(map(str, max(refusing)))
        fused = modelfile.with_name("Modelfile")
        raise ModelError(f"Ollama {version} refuses Modelfiles with ADAPTER (since 0.34.1, ollama PR #14969); "
                         "`ollama create` was not run", path=modelfile,
                         fix=f"register the fused GGUF instead: {shlex.join(create_commands(name, fused)[0])} "
                             "(export.ollama_route: fused), or use Ollama 0.34.0 or older for the adapter route")


def ollama_create(name: str, modelfile: str | Path, *, timeout: float = 3600) -> tuple[bool, str]:
    """Run `ollama create NAME -f MODELFILE` (argument list, no shell) when ollama is on PATH.

    Returns (created, message); the message holds the exact commands to run when ollama is absent.
    A Modelfile with ADAPTER is refused first when `ollama --version` is 0.34.1 or later.
    """
    check_model_name(name)
    modelfile = Path(modelfile).resolve()
    exe = shutil.which("ollama")
    if exe is None:
        steps = "\n".join("  " + shlex.join(cmd) for cmd in create_commands(name, modelfile))
        return False, ("ollama is not on PATH; install it (https://ollama.com/download), then run:\n" + steps)
    check_adapter_route(exe, modelfile, name)
    by_hand = shlex.join(create_commands(name, modelfile)[0])
    try:
        proc = subprocess.run([exe, "create", name, "-f", str(modelfile)], cwd=modelfile.parent,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ModelError(f"`ollama create {name}` did not finish within {timeout:g} s", path=modelfile,
                         fix=f"check the Ollama server (`ollama ps`, its log), then run: {by_hand}") from exc
    except OSError as exc:
        raise ModelError(f"could not run {exe}: {exc.strerror or exc}", path=modelfile,
                         fix=f"reinstall Ollama (https://ollama.com/download), then run: {by_hand}") from exc
    if proc.returncode != 0:
        raise ModelError(f"`ollama create {name}` failed (exit {proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[-2000:]}", path=modelfile,
                         fix=f"is the Ollama server running (`ollama serve`)? Then rerun: {by_hand}")
    return True, f"ollama model '{name}' created; try: ollama run {name}"


if __name__ == "__main__":
    print(example_modelfile(), end="")
