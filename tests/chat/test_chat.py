"""chat / ask: the chat loop with a fake engine, then real generation on the tiny model (MLX and GGUF).

In-process, no network. Run: /work/venv/bin/python -m pytest tests/chat/test_chat.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import peft_from_mlx

from dantes_mlx.chat.engines import load_engine
from dantes_mlx.chat.loop import build_messages, chat_loop
from dantes_mlx.cli import main
from dantes_mlx.errors import InputError

PERSONA = "Tu es Edmond Dantès."
ANSWER = "Je suis Edmond Dantès, marin de Marseille."
QA = [("Qui êtes-vous ?", ANSWER), ("D'où venez-vous ?", "Je viens du château d'If, où j'ai souffert.")]


class EchoEngine:
    """Streams back a description of what it was sent, word by word, and records every call."""

    name = "echo"

    def __init__(self):
        self.calls = []

    def stream(self, messages, **sampling):
        self.calls.append((messages, sampling))
        roles = "/".join(m["role"] for m in messages)
        for word in f"{roles} {messages[-1]['content']}".split():
            yield word + " "

    def generate(self, messages, **sampling):
        return "".join(self.stream(messages, **sampling))


def test_chat_loop_history_reset_system_exit():
    engine, out = EchoEngine(), []
    lines = ["Bonjour", "Et ensuite ?", "/reset", "Encore", "/system Sois bref.", "Qui ?", "/bogus",
             "/exit", "never read"]
    history = chat_loop(engine, iter(lines), out.append, system=PERSONA, temp=0.0, max_tokens=8)
    sent = [messages for messages, _ in engine.calls]
    assert [m["role"] for m in sent[1]] == ["system", "user", "assistant", "user"]  # history kept
    assert [m["role"] for m in sent[2]] == ["system", "user"]                      # /reset forgot it
    assert sent[3][0] == {"role": "system", "content": "Sois bref."}               # /system replaced it
    assert len(sent) == 4 and engine.calls[0][1] == {"temp": 0.0, "max_tokens": 8}
    assert history == [{"role": "user", "content": "Qui ?"}, {"role": "assistant", "content": "system/user Qui ?"}]
    text = "".join(out)
    assert "(conversation reset)" in text and "unknown command /bogus" in text
    assert build_messages(None, [], "x") == [{"role": "user", "content": "x"}]


def test_engine_options_errors(tmp_path):
    with pytest.raises(InputError, match="needs --gguf"):
        load_engine(model="m", lora=tmp_path / "x.gguf")
    with pytest.raises(InputError, match="adapter_config.json"):
        load_engine(adapter_path=tmp_path)
    result = CliRunner().invoke(main, ["ask", "Bonjour", "--gguf", str(tmp_path / "missing.gguf")])
    assert result.exit_code == 1 and "not found" in result.output


# ---------------------------------------------------------------- real models
@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA that memorised two answers (persona folded into the user turn, as prepare writes it)."""
    from dantes_mlx.config import TrainConfig
    from dantes_mlx.train.stage import train

    data = tmp_path_factory.mktemp("chatdata")
    with open(data / "train.jsonl", "w", encoding="utf-8") as fh:
        for i in range(8):
            q, a = QA[i % 2]
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"{PERSONA}\n\n{q}"},
                                              {"role": "assistant", "content": a}]}, ensure_ascii=False) + "\n")
    out = tmp_path_factory.mktemp("chatlora") / "adapters"
    cfg = TrainConfig(backend="mlx", base_model=str(tiny_model_dir), num_layers=-1, iters=25, learning_rate=2e-3,
                      batch_size=4, warmup_steps=0, dropout=0.0, lr_schedule="constant", steps_per_report=25,
                      save_every=25, target_modules=["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"])
    train(cfg, data, out)
    return out


def _ask(*args):
    result = CliRunner().invoke(main, ["ask", *args, "--temp", "0", "--max-tokens", "24", "--system", PERSONA])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.slow
def test_ask_with_adapter_answers_what_it_learnt(adapter, tiny_model_dir):
    tuned = _ask("Qui êtes-vous ?", "--adapter-path", str(adapter))
    assert ANSWER in tuned
    assert tuned == _ask("Qui êtes-vous ?", "--adapter-path", str(adapter))  # greedy: deterministic
    base = _ask("Qui êtes-vous ?", "--model", str(tiny_model_dir), "--base-only")
    assert ANSWER not in base and base.strip()


@pytest.mark.slow
def test_ask_and_chat_take_a_peft_adapter_and_answer_as_the_mlx_one(adapter, tmp_path, monkeypatch):
    """The torch backend writes PEFT adapters: ask and chat load them (converted once) like mlx-lm's."""
    monkeypatch.setenv("DANTES_MLX_CACHE", str(tmp_path / "cache"))
    peft = peft_from_mlx(adapter, tmp_path / "peft")
    tuned = _ask("Qui êtes-vous ?", "--adapter-path", str(peft))
    assert ANSWER in tuned and tuned == _ask("Qui êtes-vous ?", "--adapter-path", str(adapter))
    config = tmp_path / "dantes.yaml"  # the project's adapter folder holds the PEFT adapter: chat's default
    config.write_text(f"project:\n  adapters_dir: {peft}\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["chat", "--config", str(config), "--temp", "0", "--max-tokens", "24",
                                       "--system", PERSONA], input="D'où venez-vous ?\n/exit\n")
    assert result.exit_code == 0, result.output
    assert "château d'If" in result.stdout and len(list((tmp_path / "cache/mlx-adapters").iterdir())) == 1


@pytest.mark.slow
def test_chat_repl_on_tiny_model(adapter):
    lines = f"Qui êtes-vous ?\n/system {PERSONA}\nQui êtes-vous ?\n/reset\nD'où venez-vous ?\n/exit\n"
    result = CliRunner().invoke(main, ["chat", "--adapter-path", str(adapter), "--temp", "0", "--max-tokens", "24",
                                       "--no-system"], input=lines)
    assert result.exit_code == 0, result.output
    replies = [line for line in result.stdout.split("> ") if line.strip() and not line.startswith("(")]
    assert ANSWER not in replies[0]           # no persona yet: not the learnt prompt
    assert ANSWER in replies[1]               # /system set the persona the adapter learnt with
    assert "château d'If" in replies[2]       # after /reset, still the persona
    assert "(conversation reset)" in result.output


@pytest.mark.slow
def test_ask_through_gguf(tiny_gguf, tiny_model_dir):
    from dantes_mlx.chat.engines import LlamaCppEngine, MLXEngine

    first = _ask("Qui êtes-vous ?", "--gguf", str(tiny_gguf))
    assert first.strip() and first == _ask("Qui êtes-vous ?", "--gguf", str(tiny_gguf))
    # Same greedy continuation from llama.cpp (f16 GGUF) as from MLX on the same base, for a few tokens.
    messages = build_messages(PERSONA, [], "Qui êtes-vous ?")
    gguf_text = LlamaCppEngine(tiny_gguf, n_ctx=512).generate(messages, temp=0.0, max_tokens=6)
    mlx_text = MLXEngine(str(tiny_model_dir)).generate(messages, temp=0.0, max_tokens=6)
    # Not stripped here: llama.cpp's first SentencePiece token ("▁Je") must not leave a leading space.
    assert gguf_text[:8] == mlx_text[:8] and not first.startswith(" ")


class FakeLlama:
    """llama_cpp.Llama's streamed chat completion, replaying the given text pieces."""

    def __init__(self, pieces):
        self.pieces = pieces

    def create_chat_completion(self, **kwargs):
        yield {"choices": [{"delta": {"role": "assistant"}}]}
        for piece in self.pieces:
            yield {"choices": [{"delta": {"content": piece}}]}


@pytest.mark.parametrize("pieces, expected", [
    ([" Je", " suis", " Edmond."], ["Je", " suis", " Edmond."]),  # SentencePiece's "▁" on the first token
    (["  Je", " suis"], [" Je", " suis"]),                          # exactly one space, not all whitespace
    ([" ", " Je"], [" Je"]),                                        # a lone "▁" first token
    (["Je", " suis  ", " x"], ["Je", " suis  ", " x"]),             # nothing else touched
])
def test_gguf_answers_lose_the_first_tokens_leading_space(pieces, expected):
    from dantes_mlx.chat.engines import LlamaCppEngine

    engine = LlamaCppEngine.__new__(LlamaCppEngine)  # the stream logic alone; a real GGUF in the slow test
    engine.llm, engine.context_length = FakeLlama(pieces), None
    messages = build_messages(None, [], "Qui êtes-vous ?")
    assert list(engine.stream(messages)) == expected
    assert engine.generate(messages) == "".join(expected)


@pytest.mark.slow
def test_ask_with_a_gguf_llama_cpp_refuses_as_lora_errors_instead_of_crashing(tiny_gguf):
    import subprocess
    import sys

    # A model GGUF is no LoRA: llama.cpp refuses it, and llama-cpp-python used to go on and segfault.
    proc = subprocess.run([sys.executable, "-m", "dantes_mlx", "ask", "Bonjour", "--gguf", str(tiny_gguf),
                           "--lora", str(tiny_gguf), "--max-tokens", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "could not load this GGUF LoRA adapter" in proc.stderr and str(tiny_gguf) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_conflicting_flags_are_a_usage_error_not_a_silent_choice(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"not read: the flags are refused first")
    for extra, flags in ((["--base-only", "--adapter-path", str(tmp_path)], "--base-only and --adapter-path"),
                         (["--gguf", str(gguf), "--adapter-path", str(tmp_path)], "--gguf and --adapter-path"),
                         (["--system", "Tu es Dantès.", "--no-system", "--gguf", str(gguf)],
                          "--system and --no-system")):
        for command in (["ask", "Bonjour"], ["chat"]):
            result = CliRunner().invoke(main, command + extra, input="/exit\n")
            assert result.exit_code == 2 and flags in result.output, (command, extra, result.output)


# ---------------------------------------------------------------- interrupts, long conversations, sampling
class InterruptedEngine(EchoEngine):
    """Echoes, except that the first reply is cut by Ctrl-C after two pieces."""

    def stream(self, messages, **sampling):
        pieces = super().stream(messages, **sampling)
        yield next(pieces)
        if len(self.calls) == 1:
            yield next(pieces)
            raise KeyboardInterrupt
        yield from pieces


def test_ctrl_c_during_a_reply_stops_it_and_keeps_the_chat():
    engine, out = InterruptedEngine(), []
    history = chat_loop(engine, iter(["Raconte longuement.", "Qui ?", "/exit"]), out.append, system=PERSONA)
    text = "".join(out)
    assert "(reply interrupted" in text
    assert history == [{"role": "user", "content": "Qui ?"}, {"role": "assistant", "content": "system/user Qui ?"}]
    assert [m["role"] for m in engine.calls[1][0]] == ["system", "user"]  # the cut exchange is not sent again


class CountingEngine(EchoEngine):
    """Echoes, with a context of `context_length` tokens where every word is one token."""

    def __init__(self, context_length: int):
        super().__init__()
        self.context_length = context_length

    def prompt_length(self, messages):
        return sum(len(m["content"].split()) + 1 for m in messages)


def test_a_conversation_past_the_context_drops_its_oldest_exchanges():
    engine, out = CountingEngine(context_length=40), []
    lines = [f"question numéro {i} assez longue" for i in range(6)] + ["/exit"]
    history = chat_loop(engine, iter(lines), out.append, system=PERSONA, max_tokens=10)
    for messages, _ in engine.calls:
        assert engine.prompt_length(messages) + 10 <= 40
        assert messages[0] == {"role": "system", "content": PERSONA} and messages[-1]["role"] == "user"
    assert engine.calls[-1][0][-1]["content"] == "question numéro 5 assez longue"
    assert len(engine.calls[-1][0]) > 2                 # still some history, only the oldest went
    assert history[0]["content"] != lines[0] and "oldest" in "".join(out)


def test_a_message_longer_than_the_context_is_refused_and_the_chat_goes_on():
    engine, out = CountingEngine(context_length=12), []
    history = chat_loop(engine, iter([" ".join(["mot"] * 30), "Qui ?", "/exit"]), out.append, max_tokens=4)
    assert "does not fit" in "".join(out)
    assert len(engine.calls) == 1 and history[-1]["content"] == "user Qui ?"


def test_gguf_sampling_is_only_temp_and_top_p_like_mlx():
    """llama-cpp-python adds top_k=40 and min_p=0.05 unless told otherwise; MLX's sampler applies neither."""
    from dantes_mlx.chat.engines import LlamaCppEngine

    engine = LlamaCppEngine.__new__(LlamaCppEngine)
    engine.llm, engine.context_length = RecordingLlama(["Je"]), None
    engine.generate(build_messages(None, [], "Qui ?"), temp=0.7, top_p=0.9, max_tokens=5, seed=3)
    sent = engine.llm.kwargs
    assert (sent["temperature"], sent["top_p"], sent["seed"], sent["max_tokens"]) == (0.7, 0.9, 3, 5)
    assert sent["top_k"] == 0 and sent["min_p"] == 0.0 and sent.get("repeat_penalty", 1.0) == 1.0


class RecordingLlama(FakeLlama):
    def create_chat_completion(self, **kwargs):
        self.kwargs = kwargs
        return super().create_chat_completion(**kwargs)


def test_ask_reads_the_question_from_stdin(monkeypatch):
    import dantes_mlx.chat.engines

    engine = EchoEngine()
    monkeypatch.setattr(dantes_mlx.chat.engines, "load_engine", lambda **kwargs: engine)
    for args in (["ask", "-"], ["ask"]):
        result = CliRunner().invoke(main, [*args, "--no-system", "--model", "m"],
                                    input="Qui êtes-vous ?\nEt d'où venez-vous ?\n")
        assert result.exit_code == 0, result.output
        assert engine.calls[-1][0] == [{"role": "user", "content": "Qui êtes-vous ?\nEt d'où venez-vous ?"}]
    result = CliRunner().invoke(main, ["ask", "-", "--no-system", "--model", "m"], input="  \n")
    assert result.exit_code == 2 and "no question" in result.output


@pytest.mark.slow
def test_gguf_and_mlx_send_the_same_prompt_tokens_for_a_conversation(tiny_gguf, tiny_model_dir):
    from dantes_mlx.chat.engines import LlamaCppEngine, MLXEngine

    history = [{"role": "user", "content": "Qui êtes-vous ?"}, {"role": "assistant", "content": ANSWER},
               {"role": "user", "content": "Et Mercédès ?"}, {"role": "assistant", "content": "  Elle m'attend.  "}]
    gguf, mlx = LlamaCppEngine(tiny_gguf, n_ctx=512), MLXEngine(str(tiny_model_dir))
    for system in (PERSONA, None):
        messages = build_messages(system, history, "« L'aimez-vous ? »")
        ids = mlx.prompt_ids(messages)
        assert gguf.prompt_ids(messages) == ids
        # the system prompt sits in the last [INST], as in Mistral v0.3's template
        text = mlx.tokenizer.decode(ids)
        assert (text.count(PERSONA) == 1 and text.index(PERSONA) > text.rindex("[INST]")) if system else True
        assert gguf.prompt_length(messages) == len(ids)
    assert gguf.context_length == 512 and mlx.context_length == 2048


@pytest.mark.slow
def test_a_long_gguf_chat_keeps_going_past_the_context(tiny_gguf):
    from dantes_mlx.chat.engines import LlamaCppEngine

    engine, out = LlamaCppEngine(tiny_gguf, n_ctx=256), []
    lines = ["Qui êtes-vous et que faites-vous à Marseille ce jour-là ?"] * 8
    history = chat_loop(engine, iter(lines), out.append, system=PERSONA, temp=0.7, top_p=0.9, max_tokens=60, seed=0)
    assert history and "oldest" in "".join(out)
    with pytest.raises(InputError, match="context"):
        engine.generate(build_messages(None, [], "Qui êtes-vous ? " * 80), max_tokens=4)


def test_ask_n_ctx_sets_the_gguf_context(tiny_gguf):
    """--n-ctx reaches llama.cpp: a question that fits 4096 tokens is refused, naming the context, at 256."""
    question = "Qui êtes-vous ? " * 80
    assert _ask(question, "--gguf", str(tiny_gguf)).strip()
    result = CliRunner().invoke(main, ["ask", question, "--gguf", str(tiny_gguf), "--n-ctx", "256",
                                       "--max-tokens", "4", "--system", PERSONA])
    assert result.exit_code == 1 and "256" in result.output and "context" in result.output, result.output
