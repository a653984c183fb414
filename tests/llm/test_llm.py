"""LLM clients: OpenAI-compatible HTTP against a fake server on 127.0.0.1, llama.cpp on the tiny GGUF.

In-process, no network: `pytest tests/llm/test_llm.py -q`. The llama.cpp tests use the tiny random
GGUF built by the session fixture `tiny_gguf` (tests/conftest.py).
"""

from __future__ import annotations

import json
import logging
import time
from types import SimpleNamespace

import pytest

from dantes_mlx.config import LLMConfig
from dantes_mlx.errors import ConfigError, ModelError
from dantes_mlx.llm import batch
from dantes_mlx.llm.clients import make_client
from dantes_mlx.llm.fake import FakeLLM
from dantes_mlx.llm.llamacpp import LlamaCppClient, build_messages, resolve_model_path
from dantes_mlx.llm.openai_compat import OpenAICompatClient, chat_url
from dantes_mlx.llm.reasoning import inside_open_think, reasoning_finished, reasoning_style, split_reasoning
from fake_openai import FakeServer, completion

SECRET = "sk-test-very-secret-4242"
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["kind", "ok"],
          "properties": {"kind": {"enum": ["parole", "pensée", "écrit"]}, "ok": {"type": "boolean"}}}


@pytest.fixture
def serve():
    servers = []

    def start(behave):
        servers.append(FakeServer(behave))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def client_for(server, **kw):
    kw = {"retries": 2, "backoff": 0.01, "timeout": 5.0, "reasoning_effort": "", **kw}
    return OpenAICompatClient(server.url, "test-model", **kw)


def user(text):
    return [{"role": "user", "content": text}]


# -- OpenAI-compatible client ---------------------------------------------------------------------------
def test_chat_returns_text_usage_and_sends_sampling(serve):
    usage = completion("Bonjour.", prompt_tokens=40, completion_tokens=3)
    usage["usage"]["prompt_tokens_details"] = {"cached_tokens": 32}
    server = serve(lambda body, n: (200, usage, 0))
    result = client_for(server, temperature=0.3, max_tokens=99, seed=7).chat(user("Salut"), top_p=0.5)
    assert (result.text, result.prompt_tokens, result.evaluated_tokens, result.completion_tokens) == \
        ("Bonjour.", 40, 8, 3)
    assert result.finish_reason == "stop"
    body = server.requests[0]
    assert body["model"] == "test-model" and body["messages"] == user("Salut") and body["stream"] is False
    assert (body["temperature"], body["max_tokens"], body["seed"], body["top_p"]) == (0.3, 99, 7, 0.5)
    assert "response_format" not in body and "reasoning_effort" not in body


def test_schema_and_reasoning_hint_in_request_body(serve):
    server = serve(lambda body, n: (200, completion('{"kind": "parole", "ok": true}'), 0))
    client = client_for(server, reasoning_effort="low")
    result = client.chat(user("x"), json_schema=SCHEMA)
    assert json.loads(result.text) == {"kind": "parole", "ok": True}
    body = server.requests[0]
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "answer", "strict": True, "schema": SCHEMA}}
    assert body["reasoning_effort"] == "low"
    assert body["chat_template_kwargs"] == {"reasoning_effort": "low"}


def test_reasoning_effort_none_switches_thinking_off_as_in_process(serve):
    server = serve(lambda body, n: (200, completion("ok"), 0))
    client_for(server, reasoning_effort="none").chat(user("x"))
    body = server.requests[0]  # Qwen3-like templates on llama-server/vLLM read enable_thinking, Ollama the effort
    assert body["reasoning_effort"] == "none"
    assert body["chat_template_kwargs"] == {"reasoning_effort": "none", "enable_thinking": False}


def test_retries_a_500_then_succeeds(serve, caplog):
    server = serve(lambda body, n: (500, {"error": "boom"}, 0) if n == 1 else (200, completion("ok"), 0))
    with caplog.at_level(logging.WARNING):
        assert client_for(server).chat(user("x")).text == "ok"
    assert len(server.requests) == 2
    assert "HTTP 500" in caplog.text and "retry 1/2" in caplog.text


def test_429_honours_retry_after_then_gives_up_with_a_fix(serve):
    server = serve(lambda body, n: (429, {"error": "slow down"}, 0, {"Retry-After": "0"}))
    client = client_for(server, retries=2, backoff=30.0)  # Retry-After: 0 overrides the long backoff
    started = time.monotonic()
    with pytest.raises(ModelError) as info:
        client.chat(user("x"))
    assert time.monotonic() - started < 5
    assert len(server.requests) == 3
    assert "HTTP 429" in str(info.value) and "llm.concurrency" in str(info.value)


def test_client_errors_are_not_retried(serve):
    server = serve(lambda body, n: (401, {"error": "bad key"}, 0))
    with pytest.raises(ModelError) as info:
        client_for(server, api_key_env="DANTES_TEST_KEY").chat(user("x"))
    assert len(server.requests) == 1
    assert "HTTP 401" in str(info.value) and "$DANTES_TEST_KEY" in str(info.value)


def test_wrong_path_is_a_404_with_a_fix(serve):
    server = serve(lambda body, n: (200, completion("never"), 0))
    client = OpenAICompatClient(server.url.replace("/v1", "/v2"), retries=3, backoff=0.01, reasoning_effort="")
    with pytest.raises(ModelError, match="usually ends in /v1"):
        client.chat(user("x"))
    assert len(server.requests) == 1


def test_timeout_is_retried_then_reported(serve):
    server = serve(lambda body, n: (200, completion("late"), 2.5 if n == 1 else 0))
    assert client_for(server, timeout=1.0, retries=1).chat(user("x")).text == "late"
    slow = serve(lambda body, n: (200, completion("late"), 1.5))
    with pytest.raises(ModelError) as info:
        client_for(slow, timeout=0.3, retries=1).chat(user("x"))
    assert "2 attempt(s)" in str(info.value) and "llm.timeout" in str(info.value)


def test_unreachable_server_names_url_and_fix():
    client = OpenAICompatClient("http://127.0.0.1:9/v1", retries=1, backoff=0.01, reasoning_effort="")
    with pytest.raises(ModelError) as info:
        client.chat(user("x"))
    assert "127.0.0.1:9/v1/chat/completions" in str(info.value) and "start the server" in str(info.value)


def test_json_schema_rejected_falls_back_to_json_object_and_remembers(serve):
    def behave(body, n):
        if body.get("response_format", {}).get("type") == "json_schema":
            return 400, {"error": {"message": "response_format type json_schema is not supported"}}, 0
        return 200, completion('{"kind": "écrit", "ok": false}'), 0

    server = serve(behave)
    client = client_for(server)
    assert json.loads(client.chat(user("a"), json_schema=SCHEMA).text)["kind"] == "écrit"
    client.chat(user("b"), json_schema=SCHEMA)
    assert [r["response_format"]["type"] for r in server.requests] == ["json_schema", "json_object", "json_object"]
    assert server.requests[-1]["response_format"]["schema"] == SCHEMA
    assert client.response_format_mode == "json_object+schema"


def test_json_object_with_schema_refused_falls_back_to_bare_json_object(serve):
    def behave(body, n):  # OpenAI-like: strict schema refused, and no extra key in response_format
        if body["response_format"] != {"type": "json_object"}:
            return 400, {"error": {"message": "Invalid schema for response_format 'answer'"}}, 0
        return 200, completion("{}"), 0

    server = serve(behave)
    client = client_for(server)
    client.chat(user("a"), json_schema=SCHEMA)
    assert len(server.requests) == 3 and client.response_format_mode == "json_object"


# What llama-cpp-python's server (and llama-server before it knew json_schema, ik_llama.cpp) answer: a 500.
LLAMA_CPP_PYTHON_500 = {"error": {"message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', "
                                  "'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", "
                                  "'input': 'json_schema'}", "type": "internal_server_error"}}


def test_json_schema_refused_with_a_500_falls_back_at_once_keeping_the_schema(serve):
    def behave(body, n):
        if body["response_format"]["type"] == "json_schema":
            return 500, LLAMA_CPP_PYTHON_500, 0
        return 200, completion('{"kind": "parole", "ok": true}'), 0

    server = serve(behave)
    client = client_for(server, retries=3, backoff=30.0)  # a retry would take seconds: there must be none
    started = time.monotonic()
    assert json.loads(client.chat(user("a"), json_schema=SCHEMA).text)["ok"] is True
    assert time.monotonic() - started < 5 and len(server.requests) == 2
    # llama.cpp's own form: json_object + schema still forces the schema (a bare json_object does not)
    assert server.requests[1]["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert client.response_format_mode == "json_object+schema"


def test_a_500_naming_no_optional_field_is_still_retried_then_reported(serve):
    server = serve(lambda body, n: (500, {"error": {"message": "CUDA out of memory"}}, 0))
    client = client_for(server, retries=2)
    with pytest.raises(ModelError, match="CUDA out of memory"):
        client.chat(user("a"), json_schema=SCHEMA)
    assert len(server.requests) == 3 and client.response_format_mode == "json_schema"


def test_no_format_support_at_all_falls_back_to_plain(serve):
    def behave(body, n):
        if "response_format" in body:
            return 400, {"error": "unknown field response_format"}, 0
        return 200, completion("{}"), 0

    server = serve(behave)
    client = client_for(server)
    client.chat(user("a"), json_schema=SCHEMA)
    assert client.response_format_mode == "none" and len(server.requests) == 4
    assert "response_format" not in server.requests[-1]


def test_unrelated_400_is_raised_not_hidden(serve):
    server = serve(lambda body, n: (400, {"error": "context length exceeded"}, 0))
    client = client_for(server)
    with pytest.raises(ModelError, match="context length exceeded"):
        client.chat(user("a"), json_schema=SCHEMA)
    assert len(server.requests) == 1 and client.response_format_mode == "json_schema"


def test_reasoning_hint_dropped_when_model_cannot_think(serve):
    def behave(body, n):
        if "reasoning_effort" in body:
            return 400, {"error": '"gemma3:27b" does not support thinking'}, 0
        return 200, completion("ok"), 0

    server = serve(behave)
    client = client_for(server, reasoning_effort="low")
    client.chat(user("a"))
    client.chat(user("b"))
    assert ["reasoning_effort" in r for r in server.requests] == [True, False, False]


def test_reasoning_content_is_stripped_and_counted(serve):
    reply = completion("<think>en ligne</think>\n{\"ok\": true}", completion_tokens=50,
                       reasoning_content="Il faut du JSON.")
    reply["usage"]["completion_tokens_details"] = {"reasoning_tokens": 30}
    reply["timings"] = {"prompt_n": 12, "cache_n": 88}
    server = serve(lambda body, n: (200, reply, 0))
    result = client_for(server).chat(user("x"))
    assert result.text == '{"ok": true}'
    assert "Il faut du JSON." in result.reasoning and "en ligne" in result.reasoning
    assert result.reasoning_tokens == 30 and result.evaluated_tokens == 12


def test_reasoning_tokens_estimated_when_not_reported(serve):
    reply = completion("Réponse.", completion_tokens=20, reasoning="x" * 24)  # Ollama's field name
    server = serve(lambda body, n: (200, reply, 0))
    result = client_for(server).chat(user("x"))
    assert result.reasoning == "x" * 24 and result.reasoning_tokens == 15  # 24 / (24 + 8) of 20


def test_non_json_answer_is_a_clear_error(serve):
    server = serve(lambda body, n: (200, "<html>proxy</html>", 0))
    with pytest.raises(ModelError, match="not JSON"):
        client_for(server).chat(user("x"))


def test_without_server_model_the_served_model_names_the_cache(serve, caplog):
    """llama-server serves one model and lists it: that id keys cached answers, so loading another model in
    the server is never answered from the previous one's cache; no listing: "default", with a warning."""
    server = serve(lambda body, n: (200, completion("ok"), 0))
    server.models = ["/models/mistral-7b.Q4_K_M.gguf"]
    client = OpenAICompatClient(server.url, "", retries=0, reasoning_effort="")
    client.map_chat([user("a"), user("b")], concurrency=2)
    assert client.model_id == "/models/mistral-7b.Q4_K_M.gguf" and server.model_listings == 1
    assert {r["model"] for r in server.requests} == {"/models/mistral-7b.Q4_K_M.gguf"}
    server.models = ["/models/qwen2.5-14b.Q4_K_M.gguf"]
    assert OpenAICompatClient(server.url, "").model_id == "/models/qwen2.5-14b.Q4_K_M.gguf"
    assert OpenAICompatClient(server.url, "named").model_id == "named" and server.model_listings == 2
    server.models = None
    with caplog.at_level("WARNING"):
        assert OpenAICompatClient(server.url, "").model_id == "default"
    assert "llm.server_model" in caplog.text


def test_concurrency_overlaps_up_to_the_limit(serve):
    server = serve(lambda body, n: (200, completion(body["messages"][0]["content"]), 0.5))
    client = client_for(server, concurrency=4)
    results = client.map_chat([user(f"q{i}") for i in range(8)])
    assert [r.text for r in results] == [f"q{i}" for i in range(8)]
    assert server.max_in_flight == 4


def test_concurrent_refusals_fall_back_once_and_warn_once(serve, caplog):
    def behave(body, n):
        if body.get("response_format", {}).get("type") == "json_schema":
            return 500, LLAMA_CPP_PYTHON_500, 0.2  # slow enough for all four to be refused
        return 200, completion('{"kind": "parole", "ok": true}'), 0

    server = serve(behave)
    client = client_for(server, concurrency=4)
    with caplog.at_level(logging.WARNING):
        results = client.map_chat([{"messages": user(f"q{i}"), "json_schema": SCHEMA} for i in range(8)])
    assert all(json.loads(r.text)["ok"] for r in results)
    assert client.response_format_mode == "json_object+schema"
    assert caplog.text.count("rejected response_format") == 1


def test_map_chat_keeps_input_order_while_iter_chat_streams_as_finished(serve):
    def behave(body, n):
        i = int(body["messages"][0]["content"])
        return 200, completion(f"echo {i}"), 0.05 * (6 - i)  # the first request is the slowest

    server = serve(behave)
    client = client_for(server)
    requests = [{"messages": user(str(i)), "temperature": 0.0} for i in range(6)]
    assert [r.text for r in client.map_chat(requests, concurrency=3)] == [f"echo {i}" for i in range(6)]
    order = [index for index, _ in client.iter_chat(requests, concurrency=6)]
    assert sorted(order) == list(range(6)) and order[0] != 0
    assert all(r["temperature"] == 0.0 for r in server.requests)


def test_map_chat_return_exceptions_keeps_going(serve):
    def behave(body, n):
        bad = body["messages"][0]["content"] == "bad"
        return (404, {"error": "nope"}, 0) if bad else (200, completion("fine"), 0)

    server = serve(behave)
    results = client_for(server).map_chat([user("ok"), user("bad"), user("ok")], concurrency=2,
                                          return_exceptions=True)
    assert results[0].text == results[2].text == "fine" and isinstance(results[1], ModelError)
    with pytest.raises(ModelError):
        client_for(server).map_chat([user("bad")] * 3, concurrency=2)


def test_api_key_is_sent_but_never_logged_or_raised(serve, monkeypatch, caplog):
    monkeypatch.setenv("DANTES_TEST_KEY", SECRET)

    def behave(body, n):  # a hostile server that echoes the Authorization header back
        echo = {"error": f"bad request, you sent {server.headers[-1].get('Authorization')}"}
        return (500, echo, 0) if n < 3 else (400, echo, 0)

    server = serve(behave)
    client = client_for(server, api_key_env="DANTES_TEST_KEY", retries=2)
    with caplog.at_level(logging.DEBUG), pytest.raises(ModelError) as info:
        client.chat(user("x"))
    assert all(h["Authorization"] == f"Bearer {SECRET}" for h in server.headers)
    assert SECRET in json.dumps(server.headers)  # it was really sent...
    assert SECRET not in str(info.value) and SECRET not in caplog.text  # ...and never shown


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_shown(serve, caplog):
    import base64

    from dantes_mlx.llm.base import redact

    server = serve(lambda body, n: (500, {"error": f"overloaded, you asked {body['model']}"}, 0) if n < 3
                   else (200, completion("ok"), 0))
    url = server.url.replace("http://", "http://dantes:s3cr%C3%A9t@") + "?api_key=k-42&x=1"
    client = OpenAICompatClient(url, "m", retries=0, backoff=0.0, reasoning_effort="")
    with caplog.at_level(logging.DEBUG), pytest.raises(ModelError) as info:
        client.chat(user("x"))
    retried = OpenAICompatClient(url, "m", retries=2, backoff=0.0, reasoning_effort="")
    with caplog.at_level(logging.DEBUG):
        assert retried.chat(user("x")).text == "ok"  # the retry lines are logged (and scrubbed)
    token = base64.b64encode("dantes:s3crét".encode()).decode()
    assert server.headers[0]["Authorization"] == f"Basic {token}"
    assert "retry 1/2" in caplog.text
    for shown in (str(info.value), caplog.text, client.url):
        assert "s3cr" not in shown and "k-42" not in shown and token not in shown and "dantes:" not in shown
    assert client.url == server.url + "/chat/completions?api_key=***&x=1"
    assert redact("see https://u:p@h/v1?token=abc&b=2 and sk-1", ["sk-1"]) == "see https://***@h/v1?token=***&b=2 and ***"


@pytest.mark.parametrize("url, warned", [
    ("http://llm.example.org:8080/v1", True), ("https://llm.example.org/v1", False),
    ("http://127.0.0.1:8080/v1", False), ("http://localhost:11434/v1", False),
])
def test_a_key_sent_in_clear_to_another_machine_is_warned_about_by_name(url, warned, monkeypatch, caplog):
    from dantes_mlx.llm.openai_compat import OpenAICompatClient

    monkeypatch.setenv("DANTES_TEST_KEY", SECRET)
    with caplog.at_level(logging.WARNING):
        OpenAICompatClient(url, api_key_env="DANTES_TEST_KEY")
    assert ("unencrypted" in caplog.text and "$DANTES_TEST_KEY" in caplog.text) is warned
    assert SECRET not in caplog.text
    caplog.clear()
    monkeypatch.delenv("DANTES_TEST_KEY")
    OpenAICompatClient(url, api_key_env="DANTES_TEST_KEY")  # no key, nothing to warn about
    assert "unencrypted" not in caplog.text


@pytest.mark.parametrize("make_body", [  # the key starts a few characters before where the message is cut
    lambda key: "<html>Bearer ".ljust(192, "x") + f"{key}</html>",  # a proxy page echoing headers (cut: 200)
    lambda key: {"echo": "Bearer ".ljust(282, "y") + key},           # JSON without a completion (cut: 300)
])
def test_api_key_cut_at_the_message_limit_is_not_shown_either(serve, monkeypatch, make_body):
    monkeypatch.setenv("DANTES_TEST_KEY", SECRET)
    server = serve(lambda body, n: (200, make_body(SECRET), 0))
    with pytest.raises(ModelError) as info:
        client_for(server, api_key_env="DANTES_TEST_KEY").chat(user("x"))
    assert SECRET[:6] not in str(info.value)


def test_unknown_sampling_option_lists_valid_ones(serve):
    server = serve(lambda body, n: (200, completion("x"), 0))
    with pytest.raises(ConfigError, match="temperature"):
        client_for(server).chat(user("x"), temprature=0.2)
    assert not server.requests


def test_from_config_and_make_client(serve):
    server = serve(lambda body, n: (200, completion("x"), 0))
    cfg = LLMConfig(url=server.url + "/", server_model="qwen2.5:14b", concurrency=3, timeout=9.0,
                    retries=5, reasoning_effort="high", retry_backoff=0.25)
    client = make_client(cfg)
    assert isinstance(client, OpenAICompatClient)
    assert (client.url, client.model_id, client.concurrency, client.timeout, client.retries, client.backoff) == \
        (server.url + "/chat/completions", "qwen2.5:14b", 3, 9.0, 5, 0.25)
    assert chat_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"
    with pytest.raises(ConfigError, match="not an http"):
        chat_url("localhost:8080")


# -- batching with any client -----------------------------------------------------------------------------
def test_batch_works_with_the_fake_llm():
    fake = FakeLLM(default=lambda messages: messages[-1]["content"].upper())
    results = batch.map_chat(fake, [user("a"), {"messages": user("b"), "json_schema": SCHEMA}], concurrency=2)
    assert [r.text for r in results] == ["A", "B"]
    assert sorted(c["json_schema"] is None for c in fake.calls) == [False, True]


def test_ctrl_c_with_requests_in_flight_exits_at_once():
    """A server answering in minutes must not hold Ctrl-C (or the end of the process) until llm.timeout."""
    import subprocess
    import sys
    import textwrap
    import time

    code = textwrap.dedent("""
        import os, signal, threading, time
        from dantes_mlx.llm import batch
        from dantes_mlx.llm.base import ChatResult

        class Slow:
            model_id = "slow"
            def chat(self, messages, json_schema=None, **sampling):
                time.sleep(30)
                return ChatResult(text="late")

        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()  # a real Ctrl-C
        try:
            list(batch.iter_chat(Slow(), [[{"role": "user", "content": str(i)}] for i in range(8)], concurrency=4))
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    began = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "interrupted", out.stderr
    assert time.monotonic() - began < 15, "the process waited for the requests in flight"


def test_concurrent_failure_is_raised_and_stops_feeding():
    calls = []

    def reply(messages):
        calls.append(messages[-1]["content"])
        if messages[-1]["content"] == "2":
            raise RuntimeError("boom")
        return "ok"

    fake = FakeLLM(default=reply)
    with pytest.raises(RuntimeError, match="boom"):
        list(batch.iter_chat(fake, [user(str(i)) for i in range(50)], concurrency=3))
    assert len(calls) < 10  # at most what was in flight when it failed, not the 50
    results = batch.map_chat(fake, [user(str(i)) for i in range(6)], concurrency=3, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["ChatResult"] * 2 + ["RuntimeError"] + ["ChatResult"] * 3


# -- reasoning output -----------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, answer, reasoning", [
    ("<|channel|>analysis<|message|>Need JSON.<|end|><|start|>assistant<|channel|>final<|message|>{\"a\": 1}"
     "<|return|>", '{"a": 1}', "Need JSON."),
    ("<|channel|>analysis<|message|>Court.<|end|><|start|>assistant<|channel|>final <|constrain|>json"
     "<|message|>{}", "{}", "Court."),
    ("analysisNeed JSON.assistantfinal{\"a\": 1}", '{"a": 1}', "Need JSON."),  # specials detokenized away
    ("analysisNeed JSON.assistantfinal json{\"a\": 1}", '{"a": 1}', "Need JSON."),  # ...with <|constrain|>json
    ("<think>Hmm.</think>\n\nRéponse.", "Réponse.", "Hmm."),
    ("Le modèle pense.</think>Réponse.", "Réponse.", "Le modèle pense."),  # <think> was in the prompt
    ("<think>coupé au milieu", "", "coupé au milieu"),
    ("Une réponse simple.", "Une réponse simple.", ""),
    ("<|channel|>analysis<|message|>Only thinking, cut", "", "Only thinking, cut"),
    ("Sans canal.<|end|><|start|>assistant<|channel|>final<|message|>Oui.", "Oui.", "Sans canal."),
])
def test_split_reasoning(raw, answer, reasoning):
    assert split_reasoning(raw) == (answer, reasoning)


@pytest.mark.parametrize("generated, finished", [
    ("<|channel|>analysis<|message|>Court.<|end|><|start|>assistant<|channel|>final<|message|>", True),
    # what gpt-oss writes when it answers in JSON: the final channel with a constraint
    ("<|channel|>analysis<|message|>Court.<|end|><|start|>assistant<|channel|>final <|constrain|>json<|message|>",
     True),
    ("<|channel|>analysis<|message|>Court.<|end|><|start|>assistant<|channel|>final <|constrain|>json", False),
    ("<|channel|>analysis<|message|>Le canal final<|message|> n'est pas là.", False),
])
def test_harmony_reasoning_finished_at_any_final_header(generated, finished):
    assert reasoning_finished("harmony", generated) is finished


def test_reasoning_style_and_open_think():
    assert reasoning_style("{{ '<|start|>assistant<|channel|>final<|message|>' }}") == "harmony"
    assert reasoning_style("{% if x %}<think>\n{% endif %}") == "think"
    assert reasoning_style("[INST] {{ m }} [/INST]") is None
    assert inside_open_think("<|im_start|>assistant\n<think>\n")
    assert not inside_open_think("<think>\n\n</think>\n\n")


def test_build_messages_puts_instructions_first_and_data_last():
    assert build_messages("Règles fixes.", "Texte variable.") == [
        {"role": "system", "content": "Règles fixes."}, {"role": "user", "content": "Texte variable."}]
    data = "Un long passage du livre qui varie d'un appel à l'autre."
    with pytest.raises(ValueError, match="embedded"):
        build_messages(f"Règles. Voici le texte : {data} Réponds.", data)
    with pytest.raises(ValueError, match="empty"):
        build_messages("  ", data)


# -- GGUF model resolution --------------------------------------------------------------------------------
def test_resolve_local_path_and_bad_specs(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model_path(str(gguf)) == gguf
    with pytest.raises(ModelError, match="folder"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(ModelError, match="not found"):
        resolve_model_path(str(tmp_path / "missing.gguf"))
    with pytest.raises(ConfigError, match="HF_REPO:FILE.gguf"):
        resolve_model_path("mistral-7b")


def test_resolve_hub_spec_downloads(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, cache_dir=None, **kw):
        calls.append((repo_id, filename, cache_dir))
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    path = resolve_model_path("bartowski/Qwen2.5-7B-Instruct-GGUF:Qwen2.5-7B-Instruct-Q4_K_M.gguf", tmp_path)
    assert path == tmp_path / "Qwen2.5-7B-Instruct-Q4_K_M.gguf"
    assert calls == [("bartowski/Qwen2.5-7B-Instruct-GGUF", "Qwen2.5-7B-Instruct-Q4_K_M.gguf", tmp_path)]


def _raise(exc):
    def download(*args, **kw):
        raise exc
    return download


def _hub_error(cls, message):
    import httpx2

    return cls(message, response=httpx2.Response(403, request=httpx2.Request("GET", "https://huggingface.co/x")))


@pytest.mark.parametrize("make_error, expected", [
    (lambda e: e.LocalEntryNotFoundError("no connection"), "offline"),
    (lambda e: _hub_error(e.GatedRepoError, "gated"), "accept the licence"),
    (lambda e: _hub_error(e.RepositoryNotFoundError, "404"), "not found on the Hugging Face Hub"),
    (lambda e: e.EntryNotFoundError("404"), "use one of: a-Q4_K_M.gguf, b-Q8_0.gguf"),
    (lambda e: OSError("No space left on device"), "No space left"),
])
def test_hub_errors_say_what_to_do(monkeypatch, make_error, expected):
    import huggingface_hub
    from huggingface_hub import errors

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _raise(make_error(errors)))
    monkeypatch.setattr(huggingface_hub, "list_repo_files",
                        lambda repo: ["README.md", "a-Q4_K_M.gguf", "b-Q8_0.gguf"])
    with pytest.raises(ModelError) as info:
        resolve_model_path("org/model-GGUF:missing.gguf")
    assert expected in str(info.value) and "org/model-GGUF:missing.gguf" in str(info.value)


# -- llama.cpp in process, on the tiny random GGUF --------------------------------------------------------
THINK_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %}{{ m['content'] }}"
    "{{ eos_token }}{% endif %}{% endfor %}{% if add_generation_prompt %}(effort {{ reasoning_effort }})"
    "<think>\n{% endif %}")


def llamacpp_client_class():
    from dantes_mlx.llm.llamacpp import LlamaCppClient

    return LlamaCppClient


@pytest.fixture(scope="module")
def tiny_llama(tiny_gguf):
    client = llamacpp_client_class()(str(tiny_gguf), n_ctx=1024, n_threads=2, n_gpu_layers=0, seed=0,
                            temperature=1.0, max_tokens=64)
    yield client
    client.close()


@pytest.mark.slow
def test_llamacpp_schema_forced_output_is_valid_json(tiny_llama):
    for seed in range(3):
        result = tiny_llama.chat(build_messages("Réponds en JSON.", f"Question {seed}"), json_schema=SCHEMA,
                                 seed=seed)
        answer = json.loads(result.text)
        assert set(answer) == {"kind", "ok"} and answer["kind"] in {"parole", "pensée", "écrit"}
        assert isinstance(answer["ok"], bool) and result.finish_reason == "stop"
        assert result.completion_tokens > 0 and result.reasoning == ""


@pytest.mark.slow
def test_llamacpp_prefix_reuse_evaluates_only_the_data(tiny_llama):
    instructions = " ".join(["Tu extrais les paroles du personnage, mot pour mot, sans rien inventer."] * 12)
    first = tiny_llama.chat(build_messages(instructions, "Premier passage du livre."), max_tokens=4)
    second = tiny_llama.chat(build_messages(instructions, "Un tout autre passage."), max_tokens=4)
    shared = len(tiny_llama._llm.tokenize(instructions.encode(), add_bos=False))
    assert first.evaluated_tokens <= first.prompt_tokens
    assert second.evaluated_tokens < second.prompt_tokens - shared + 5  # only the data and the template tail
    assert second.evaluated_tokens > 0
    again = tiny_llama.chat(build_messages(instructions, "Un tout autre passage."), max_tokens=4)
    assert again.evaluated_tokens <= 2  # the same prompt: nothing (or one replayed token) to evaluate


@pytest.mark.slow
def test_llamacpp_calls_are_serialised_across_threads(tiny_llama):
    requests = [{"messages": build_messages("JSON.", f"n°{i}"), "json_schema": SCHEMA, "seed": i}
                for i in range(4)]
    results = batch.map_chat(tiny_llama, requests, concurrency=4)
    assert all(set(json.loads(r.text)) == {"kind", "ok"} for r in results)


# Bounded strings: a random model would otherwise write until max_tokens.
QUOTE_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["citation", "kind"],
                "properties": {"citation": {"type": "string", "maxLength": 12},
                               "kind": {"enum": ["parole", "pensée", "écrit"]}}}


def stock_tokens(client, messages, json_schema=None, limit=40, **options):
    """What llama-cpp-python's `Llama.generate` gives (the grammar in its sampler chain): the reference."""
    llm = client._llm
    prompt = llm.tokenize(client.render(messages).encode(), add_bos=False, special=True)
    llm.set_seed(options.get("seed", 0))
    grammar = client._grammar(json_schema) if json_schema else None
    out = []
    generator = llm.generate(prompt, temp=options.get("temperature", 0.0), top_p=0.95, top_k=40, min_p=0.05,
                             repeat_penalty=1.0, grammar=grammar)
    for token in generator:
        if client._is_eog(token) or len(out) >= limit:
            break
        out.append(token)
    generator.close()
    return out


def our_tokens(client, messages, json_schema=None, limit=40, **options):
    prompt = client._llm.tokenize(client.render(messages).encode(), add_bos=False, special=True)
    grammar = client._grammar(json_schema) if json_schema else None
    return client._run(prompt, grammar, limit, {"temperature": 0.0, "seed": 0, **options})[0]


@pytest.mark.slow
def test_llamacpp_sampled_answers_are_always_schema_valid(tiny_llama):
    """Temperature sampling: a draw the grammar refuses is redrawn from the grammar's tokens, never kept."""
    redraws = tiny_llama.grammar_redraws
    for temperature in (0.8, 1.5):
        for seed in range(6):
            result = tiny_llama.chat(build_messages("Réponds en JSON.", f"Passage {seed}"), json_schema=QUOTE_SCHEMA,
                                     temperature=temperature, seed=seed, max_tokens=64)
            answer = json.loads(result.text)
            assert set(answer) == {"citation", "kind"} and answer["kind"] in {"parole", "pensée", "écrit"}
            assert isinstance(answer["citation"], str) and len(answer["citation"]) <= 12
            assert not any(ord(c) < 0x20 for c in answer["citation"])  # strict JSON strings
            assert result.finish_reason == "stop"
    assert tiny_llama.grammar_redraws > redraws  # the random model's draws were refused: the fallback ran


@pytest.mark.slow
def test_llamacpp_same_seed_same_answer_and_max_tokens_cut(tiny_llama):
    messages = build_messages("Réponds en JSON.", "Un passage.")
    first, again = (tiny_llama.chat(messages, json_schema=QUOTE_SCHEMA, temperature=1.0, seed=7) for _ in "ab")
    assert first.text == again.text
    cut = tiny_llama.chat(messages, json_schema=SCHEMA, temperature=1.0, seed=7, max_tokens=3)
    assert (cut.finish_reason, cut.completion_tokens) == ("length", 3)  # as before: a cut answer says so
    assert cut.text.startswith("{")


@pytest.mark.slow
@pytest.mark.parametrize("json_schema", [SCHEMA, QUOTE_SCHEMA, None])
def test_llamacpp_greedy_tokens_match_llama_cpp_python(tiny_llama, json_schema):
    """Greedy: the best token overall, when the grammar allows it, is the best allowed one: same tokens."""
    for data in ("Premier passage.", "Un autre passage, plus long, du même livre."):
        messages = build_messages("Réponds en JSON.", data)
        assert our_tokens(tiny_llama, messages, json_schema) == stock_tokens(tiny_llama, messages, json_schema)


@pytest.mark.slow
def test_llamacpp_free_sampling_matches_llama_cpp_python(tiny_llama):
    """Without a schema the sampler chain is llama-cpp-python's: temperature, top-k/p, min-p and seed alike."""
    messages = build_messages("Écris.", "Un passage.")
    for seed in (1, 2):
        options = {"temperature": 0.9, "seed": seed}
        assert our_tokens(tiny_llama, messages, None, **options) == stock_tokens(tiny_llama, messages, None,
                                                                                  **options)


@pytest.mark.slow
def test_token_sampler_asks_the_grammar_about_one_token(tiny_llama):
    from dantes_mlx.llm.sampling import TokenSampler

    llm = tiny_llama._llm
    piece = {llm.detokenize([t]): t for t in range(llm.n_vocab())}
    sampler = TokenSampler(tiny_llama._lib, llm, {"temperature": 0.0}, tiny_llama._grammar(SCHEMA))
    try:
        assert sampler.allows(piece[b"{"]) and not sampler.allows(piece[b"a"])
        assert not sampler.allows(llm.token_eos())  # the object is not complete
        sampler.accept(piece[b"{"])
        assert sampler.allows(piece[b'"']) and not sampler.allows(piece[b"{"])
    finally:
        sampler.close()
    broken = type(tiny_llama._grammar(SCHEMA)).from_string('root ::= "{" (', verbose=False)
    with pytest.raises(ConfigError, match="cannot parse the grammar"):
        TokenSampler(tiny_llama._lib, llm, {"temperature": 0.0}, broken)


@pytest.mark.slow
def test_llamacpp_reasoning_is_capped_stripped_and_counted(tiny_gguf, tmp_path):
    LlamaCppClient = llamacpp_client_class()
    template = tmp_path / "think.jinja"
    template.write_text(THINK_TEMPLATE, encoding="utf-8")
    client = LlamaCppClient(str(tiny_gguf), n_ctx=512, n_threads=2, n_gpu_layers=0, temperature=1.0,
                            max_tokens=80, reasoning_effort="low", reasoning_budget=6, chat_template=str(template))
    try:
        assert client.style == "think"
        assert "(effort low)<think>" in client.render(build_messages("Règles.", "Données."))
        result = client.chat(build_messages("Règles.", "Données."), json_schema=SCHEMA)
        assert set(json.loads(result.text)) == {"kind", "ok"}
        assert "<think>" not in result.text and "</think>" not in result.reasoning
        assert 0 < result.reasoning_tokens <= 6 and result.reasoning
        assert result.completion_tokens > result.reasoning_tokens
    finally:
        client.close()


HARMONY_TEMPLATE = (
    "{{ bos_token }}<|start|>system<|message|>Reasoning: {{ reasoning_effort }}<|end|>{% for m in messages %}"
    "<|start|>{{ m['role'] }}<|message|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|start|>assistant{% endif %}")
QWEN3_LIKE_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}")


@pytest.mark.slow
@pytest.mark.parametrize("template, effort, style, rendered, reasons", [
    (HARMONY_TEMPLATE, "low", "harmony", "Reasoning: low", True),     # budget spent, final channel forced
    (QWEN3_LIKE_TEMPLATE, "low", "think", "[/INST]", False),          # did not open <think>: answered directly
    (QWEN3_LIKE_TEMPLATE, "none", "think", "</think>", False),        # thinking switched off in the template
])
def test_llamacpp_reasoning_styles(tiny_gguf, tmp_path, template, effort, style, rendered, reasons):
    LlamaCppClient = llamacpp_client_class()
    path = tmp_path / "template.jinja"
    path.write_text(template, encoding="utf-8")
    client = LlamaCppClient(str(tiny_gguf), n_ctx=512, n_threads=2, n_gpu_layers=0, temperature=1.0,
                            max_tokens=80, reasoning_effort=effort, reasoning_budget=5, chat_template=str(path))
    try:
        assert client.style == style and rendered in client.render(build_messages("Règles.", "Données."))
        result = client.chat(build_messages("Règles.", "Données."), json_schema=SCHEMA, seed=3)
        assert set(json.loads(result.text)) == {"kind", "ok"}
        assert "<|channel|>" not in result.text and "<think>" not in result.text
        assert bool(result.reasoning) == reasons
        assert result.reasoning_tokens == (5 if reasons else 0)
    finally:
        client.close()


def test_two_gguf_files_of_one_name_are_two_models(tmp_path):
    """Cached LLM answers are keyed by model_id: same file name, other weights, other id; a copy, same id."""
    from dantes_mlx.llm.llamacpp import model_identity

    for folder, fill in (("a", b"\x01"), ("b", b"\x02"), ("c", b"\x01")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "ggml-model-Q4_K_M.gguf").write_bytes(b"GGUF" + fill * 3_000_000)
    a, b, c = (model_identity(tmp_path / f / "ggml-model-Q4_K_M.gguf") for f in "abc")
    assert a.startswith("ggml-model-Q4_K_M.gguf#") and a != b and a == c


@pytest.mark.slow
def test_llamacpp_from_config_and_errors(tiny_gguf, tmp_path):
    LlamaCppClient = llamacpp_client_class()
    client = make_client(LLMConfig(model=str(tiny_gguf), n_ctx=256, n_threads=1, n_gpu_layers=0, max_tokens=8))
    try:
        assert isinstance(client, LlamaCppClient) and client.n_ctx == 256
        # llm.n_threads bounds the prompt's threads too (llama-cpp-python's default would be every core)
        assert (client._llm.context_params.n_threads, client._llm.context_params.n_threads_batch) == (1, 1)
        assert client.model_id.startswith(tiny_gguf.name + "#")
        with pytest.raises(ModelError, match="raise llm.n_ctx"):
            client.chat(user("mot " * 400))
    finally:
        client.close()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError, match="could not load"):
        LlamaCppClient(str(broken), n_ctx=64)


@pytest.mark.slow
def test_llamacpp_batch_sizes_from_config_and_counted_across_batches(tiny_gguf):
    LlamaCppClient = llamacpp_client_class()
    cfg = LLMConfig(model=str(tiny_gguf), n_ctx=1024, n_threads=1, n_gpu_layers=0, n_batch=64, n_ubatch=16)
    client = make_client(cfg)
    try:
        assert (client.n_batch, client.n_ubatch) == (64, 16)
        assert client._llm.context_params.n_batch == 64
        long = client.chat(user("Le navire entra dans le port de Marseille. " * 30), max_tokens=2)
        assert long.prompt_tokens > 3 * 64  # decoded in several batches, counted as one prompt
        assert long.evaluated_tokens == long.prompt_tokens
    finally:
        client.close()
    assert LLMConfig().n_batch == 2048 and LLMConfig().n_ubatch == 512
    small = LlamaCppClient(str(tiny_gguf), n_ctx=256, n_threads=1, n_gpu_layers=0)
    try:
        assert (small.n_batch, small.n_ubatch) == (256, 256)  # both capped at the context
    finally:
        small.close()
    with pytest.raises(ConfigError, match="n_batch"):
        LlamaCppClient(str(tiny_gguf), n_ctx=256, n_ubatch=0)


def test_the_grammar_keeps_the_schemas_property_order():
    """llama.cpp writes an object's properties in the order the grammar lists them: the schema's (the prompt's
    example), not the alphabet's (extract wrote `citation` before `contexte` when the key was sorted)."""
    pytest.importorskip("llama_cpp", reason="the grammar converter is llama-cpp-python's")
    seen = []
    grammar = SimpleNamespace(from_string=lambda text, verbose=False: seen.append(text) or text)
    client = LlamaCppClient.__new__(LlamaCppClient)
    client._lib, client._grammars = SimpleNamespace(LlamaGrammar=grammar), {}
    schema = {"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "string"}},
              "required": ["zeta", "alpha"], "additionalProperties": False}
    client._grammar(schema)
    root = next(line for line in seen[0].splitlines() if line.startswith("root ::="))
    assert root.index("zeta") < root.index("alpha")
