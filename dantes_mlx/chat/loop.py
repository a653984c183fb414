"""The chat loop: history, /reset, /system, /exit, and dropping the oldest exchanges that no longer fit."""

from __future__ import annotations

from typing import Callable, Iterable

from dantes_mlx.chat.engines import Engine
from dantes_mlx.errors import DantesError, InputError

HELP = "commands: /reset (forget the conversation), /system TEXT (new system prompt), /exit"


def build_messages(system: str | None, history: list[dict], user: str) -> list[dict]:
    """system (if any) + past turns + the new user turn."""
    head = [{"role": "system", "content": system}] if system else []
    return head + history + [{"role": "user", "content": user}]


def fit_context(engine: Engine, system: str | None, history: list[dict], user: str,
                max_tokens: int) -> tuple[list[dict], int]:
    """The messages to send and how many of the oldest exchanges had to go so that the prompt and a reply of
    max_tokens fit the engine's context (the system prompt and the new message always stay).
    InputError when the new message alone does not fit."""
    limit, count = getattr(engine, "context_length", None), getattr(engine, "prompt_length", None)
    kept = list(history)
    while True:
        messages = build_messages(system, kept, user)
        n = count(messages) if limit and count else None
        if n is None or n + max_tokens <= limit:
            return messages, (len(history) - len(kept)) // 2
        if not kept:
            raise InputError(f"the message does not fit the context: {n} prompt tokens + {max_tokens} for the "
                             f"reply > {limit}", path="chat", fix="shorten the message or lower --max-tokens")
        kept = kept[2:]


def chat_loop(engine: Engine, lines: Iterable[str], write: Callable[[str], None], system: str | None = None,
              prompt: str = "> ", **sampling) -> list[dict]:
    """Read user lines, stream replies, keep the history; /reset, /system TEXT, /exit. Returns the history."""
    history: list[dict] = []
    write(prompt)
    for raw in lines:
        line = raw.strip()
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            history.clear()
            write("(conversation reset)\n")
        elif line == "/system" or line.startswith("/system "):
            system = line[len("/system"):].strip() or None
            history.clear()
            write(f"(system prompt {'set' if system else 'removed'}; conversation reset)\n")
        elif line.startswith("/"):
            write(f"unknown command {line.split()[0]}; {HELP}\n")
        elif line:
            reply = _reply(engine, system, history, line, write, sampling)
            if reply is not None:
                history += [{"role": "user", "content": line}, {"role": "assistant", "content": reply}]
        write(prompt)
    write("\n")
    return history


def _reply(engine: Engine, system: str | None, history: list[dict], line: str, write: Callable[[str], None],
           sampling: dict) -> str | None:
    """Stream one reply (dropping the oldest turns that no longer fit); None when it failed or was interrupted."""
    try:
        messages, dropped = fit_context(engine, system, history, line, sampling.get("max_tokens", 256))
    except InputError as exc:
        write(f"({exc.detail})\n")
        return None
    if dropped:
        del history[:2 * dropped]
        write(f"({dropped} oldest exchange{'s' * (dropped > 1)} dropped: the conversation no longer fits the "
              f"{engine.context_length}-token context)\n")
    pieces, stream = [], engine.stream(messages, **sampling)
    try:
        for piece in stream:
            pieces.append(piece)
            write(piece)
    except KeyboardInterrupt:  # Ctrl-C stops the reply, not the chat (as in llama.cpp's interactive mode)
        write("\n(reply interrupted; this exchange is forgotten)\n")
        return None
    except DantesError as exc:
        write(f"\n({exc.detail})\n")
        return None
    finally:
        if hasattr(stream, "close"):
            stream.close()
    write("\n")
    return "".join(pieces).strip()
