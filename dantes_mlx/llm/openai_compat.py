"""OpenAI-compatible HTTP chat client (llama-server, Ollama /v1, vLLM): retries, fallbacks, concurrency.

Standard library only (urllib): one POST per call to {base}/chat/completions. Transient failures
(connection errors, timeouts, 408/429/5xx) are retried with exponential backoff and full jitter; other
4xx are not. A server that rejects `response_format` json_schema gets llama.cpp's json_object + schema
form (llama-cpp-python's server knows no other), then bare json_object, then no format, and one that
rejects the reasoning-effort hint gets none: each fallback is remembered by the client. A rejection
may come as a 400/422 or, from llama-cpp-python's server and older llama-server, as a 500 naming the
field: that one is not retried.
The API key is read from an environment variable, sent only in the Authorization header, and
scrubbed from every message this module logs or raises; credentials written in llm.url (user:password@, a
key=... parameter) are sent (as HTTP basic auth, or in the query) but never shown: logs and errors name the
URL without them (llm.base.redact).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Iterable, Iterator

from dantes_mlx.errors import ConfigError, ModelError
from dantes_mlx.llm import batch
from dantes_mlx.llm.base import ChatResult, check_sampling, redact
from dantes_mlx.llm.reasoning import split_reasoning

if TYPE_CHECKING:
    from dantes_mlx.config import LLMConfig

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
FORMAT_LADDER = ("json_schema", "json_object+schema", "json_object", "none")
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "schema", "format", "grammar")
_REASONING_WORDS = ("reasoning", "think", "chat_template_kwargs")
# A 5xx naming one of the optional fields we send is a refusal of that field, not a transient failure.
_OPTIONAL_FIELDS = ("response_format", "json_schema", "json_object", "chat_template_kwargs", "reasoning_effort")


class _BadRequest(Exception):
    """A 400/422 answer (or a 5xx naming an optional field): an optional request field may be unsupported."""

    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body


def chat_url(base_url: str) -> str:
    """The chat completions endpoint of a base URL (http://host:port/v1 or the full endpoint)."""
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"llm.url {redact(base_url)!r} is not an http(s) URL", path="dantes.yaml [llm]",
                          fix="use e.g. http://127.0.0.1:8080/v1 (llama-server) or "
                              "http://127.0.0.1:11434/v1 (Ollama)")
    parts = urllib.parse.urlsplit(url)  # a query (?key=...) stays after the path
    path = parts.path.rstrip("/")
    path = path if path.endswith("/chat/completions") else path + "/chat/completions"
    return urllib.parse.urlunsplit(parts._replace(path=path))


def split_credentials(url: str) -> tuple[str, str, list[str]]:
    """(URL without user:password@, its basic-auth header value or "", the secrets to scrub from messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, "", _query_secrets(parts.query)
    user, password = urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or "")
    host = parts.netloc.rsplit("@", 1)[1]
    clean = urllib.parse.urlunsplit(parts._replace(netloc=host))
    token = base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
    return clean, f"Basic {token}", [s for s in (password, token, parts.password) if s] + _query_secrets(parts.query)


def _query_secrets(query: str) -> list[str]:
    """Values of the query parameters redact() hides, so that an echo of them elsewhere is hidden too."""
    shown = redact("?" + query)
    return [v for (k, v), (_, w) in zip(urllib.parse.parse_qsl(query), urllib.parse.parse_qsl(shown[1:]))
            if v and w == "***"]


def warn_clear_key(url: str, api_key_env: str, has_key: bool) -> None:
    """Warn (naming the variable, never the key) when a key would travel unencrypted to another machine."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if has_key and parts.scheme == "http" and host not in ("localhost", "127.0.0.1", "::1") \
            and not host.endswith(".localhost"):
        log.warning("the API key in $%s is sent unencrypted to %s (plain http): use https, or set "
                    "llm.api_key_env to '' if this server needs no key", api_key_env, host)


class OpenAICompatClient:
    """Chat completions over HTTP from any OpenAI-compatible server; thread-safe."""

    def __init__(self, base_url: str, model: str = "", *, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 600.0, retries: int = 3, concurrency: int = 4,
                 temperature: float = 0.7, max_tokens: int = 2048, seed: int | None = 0,
                 reasoning_effort: str = "low", backoff: float = 1.0, backoff_max: float = 60.0,
                 n_ctx: int = 0):
        self._endpoint, self._basic_auth, url_secrets = split_credentials(chat_url(base_url))
        self.n_ctx = n_ctx  # the served model's context as configured (llm.n_ctx); sizes extract's chunks
        self._model = model  # "" : ask the server which model it serves (see model_id)
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env, "") if api_key_env else ""
        self._secrets = [self._api_key, *url_secrets]
        self.url = redact(self._endpoint, self._secrets)  # what logs, errors and stores show
        warn_clear_key(self.url, api_key_env, bool(self._api_key))
        self.timeout, self.retries, self.concurrency = timeout, max(0, retries), max(1, concurrency)
        self.defaults = {"temperature": temperature, "max_tokens": max_tokens}
        if seed is not None:
            self.defaults["seed"] = seed
        self.reasoning_effort = reasoning_effort
        self.backoff, self.backoff_max = backoff, backoff_max
        self._format_level = 0              # index in FORMAT_LADDER, lowered on a 400
        self._send_reasoning_hint = bool(reasoning_effort)
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: "LLMConfig") -> "OpenAICompatClient":
        return cls(cfg.url, cfg.server_model or cfg.model, api_key_env=cfg.api_key_env,
                   timeout=cfg.timeout, retries=cfg.retries, concurrency=cfg.concurrency,
                   temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed,
                   reasoning_effort=cfg.reasoning_effort,
                   backoff=cfg.retry_backoff, n_ctx=cfg.n_ctx)

    @property
    def model_id(self) -> str:
        """The model named in requests and in cache keys: llm.server_model, else the one the server lists at
        /models (llama-server serves one), else "default". Asked once; switching the model a server loads then
        never reuses the previous model's cached answers."""
        if not self._model:
            with self._model_lock:
                if not self._model:
                    self._model = self._served_model() or "default"
        return self._model

    def _auth_headers(self) -> dict:
        """The API key as a bearer token, else the credentials written in llm.url as basic auth."""
        if self._api_key:
            return {"Authorization": f"Bearer {self._api_key}"}
        return {"Authorization": self._basic_auth} if self._basic_auth else {}

    def _served_model(self) -> str:
        endpoint, url = _models_url(self._endpoint), _models_url(self.url)
        try:
            request = urllib.request.Request(endpoint, headers=self._auth_headers())
            with urllib.request.urlopen(request, timeout=10) as response:
                models = [m.get("id") for m in json.loads(response.read()).get("data", []) if isinstance(m, dict)]
        except (OSError, ValueError, AttributeError, http.client.HTTPException) as exc:
            log.warning("%s: could not list the served models (%s); cached answers are keyed 'default': set "
                        "llm.server_model to tell models apart", url, self._scrub(str(exc)))
            return ""
        if len(models) != 1 or not isinstance(models[0], str):
            log.warning("%s lists %d models; set llm.server_model to the one to use (cached answers are keyed "
                        "'default')", url, len(models))
            return ""
        return models[0]

    @property
    def response_format_mode(self) -> str:
        """The structured-output mode this server accepted: json_schema, json_object or none."""
        return FORMAT_LADDER[self._format_level]

    # -- one call -------------------------------------------------------------------------------
    def chat(self, messages: list[dict], json_schema: dict | None = None, **sampling) -> ChatResult:
        """One chat completion; with json_schema the server is asked to force it (see fallbacks)."""
        options = self._options(sampling)
        while True:
            body, format_level, hint = self._body(messages, json_schema, options)
            try:
                return self._result(self._post(body))
            except _BadRequest as exc:
                if not self._fall_back(exc, json_schema is not None, format_level, hint):
                    raise self._http_error(exc.status, exc.body) from None

    def _options(self, sampling: dict) -> dict:
        return {**self.defaults, **check_sampling(sampling)}

    def _body(self, messages, json_schema, options) -> tuple[dict, int, bool]:
        with self._lock:
            format_level, hint = self._format_level, self._send_reasoning_hint
        body = {"model": self.model_id, "messages": messages, "stream": False, **options}
        if json_schema is not None and FORMAT_LADDER[format_level] != "none":
            body["response_format"] = _response_format(FORMAT_LADDER[format_level], json_schema)
        if hint:
            # OpenAI, vLLM and Ollama read `reasoning_effort`; llama-server and vLLM pass template kwargs,
            # where Qwen3-like templates switch thinking off with enable_thinking (as the in-process client).
            body["reasoning_effort"] = self.reasoning_effort
            body["chat_template_kwargs"] = {"reasoning_effort": self.reasoning_effort}
            if self.reasoning_effort == "none":
                body["chat_template_kwargs"]["enable_thinking"] = False
        return body, format_level, hint

    def _fall_back(self, exc: _BadRequest, asked_format: bool, format_level: int, hint: bool) -> bool:
        """Drop the optional field a 400 complains about; False when there is nothing left to drop."""
        text = exc.body.lower()
        with self._lock:
            if hint and any(w in text for w in _REASONING_WORDS):
                if self._send_reasoning_hint:  # concurrent refusals: the first one warns
                    self._send_reasoning_hint = False
                    log.warning("%s rejected the reasoning-effort hint; sending none from now on", self.url)
                return True
            if asked_format and format_level < len(FORMAT_LADDER) - 1 and any(w in text for w in _FORMAT_WORDS):
                if self._format_level <= format_level:
                    self._format_level = format_level + 1
                    log.warning("%s rejected response_format %s; using %s from now on", self.url,
                                FORMAT_LADDER[format_level], FORMAT_LADDER[self._format_level])
                return True
            # another thread already lowered the level: retry with the new one
            return (asked_format and self._format_level > format_level) or (hint and not self._send_reasoning_hint)

    # -- HTTP -----------------------------------------------------------------------------------
    def _post(self, body: dict) -> dict:
        """POST with retries on transient failures; returns the parsed JSON answer."""
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json", **self._auth_headers()}
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self._endpoint, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                return self._parse(raw)
            except urllib.error.HTTPError as exc:
                text = self._scrub(exc.read(4000).decode("utf-8", "replace"))
                if exc.code in (400, 422) or (exc.code >= 500 and any(f in text for f in _OPTIONAL_FIELDS)):
                    raise _BadRequest(exc.code, text) from None
                if exc.code not in RETRY_STATUS or attempt == self.retries:
                    raise self._http_error(exc.code, text) from None
                self._wait(attempt, f"HTTP {exc.code}", exc.headers.get("Retry-After"))
            except (urllib.error.URLError, TimeoutError, socket.timeout, ConnectionError,
                    http.client.HTTPException) as exc:
                reason = self._scrub(str(getattr(exc, "reason", exc)))
                if attempt == self.retries:
                    raise self._unreachable(reason) from None
                self._wait(attempt, reason, None)
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, reason: str, retry_after: str | None) -> None:
        delay = random.uniform(0, min(self.backoff_max, self.backoff * 2 ** attempt))  # full jitter
        if retry_after and retry_after.strip().isdigit():
            delay = min(self.backoff_max, float(retry_after))
        log.warning("%s: %s; retry %d/%d in %.2fs", self.url, reason, attempt + 1, self.retries, delay)
        time.sleep(delay)

    def _parse(self, raw: bytes) -> dict:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            raise ModelError(f"{self.url} answered with something that is not JSON: "
                             f"{self._scrub(raw.decode('utf-8', 'replace'))[:200]!r}",
                             fix="check that llm.url points at an OpenAI-compatible /v1 endpoint") from None
        if not isinstance(data, dict) or "error" in data or not data.get("choices"):
            detail = self._scrub(json.dumps(data, ensure_ascii=False))[:300]  # scrub, then cut: no key prefix
            raise ModelError(f"{self.url} returned no completion: {detail}",
                             fix="check llm.server_model and the server log")
        return data

    def _scrub(self, text: str) -> str:
        return redact(text, self._secrets)

    def _http_error(self, status: int, body: str) -> ModelError:
        fixes = {401: f"set a valid API key in the environment variable ${self.api_key_env}",
                 403: f"check the permissions of the API key in ${self.api_key_env}",
                 404: "check llm.url (usually ends in /v1) and llm.server_model (the name the server knows)",
                 429: "the server is rate limiting: lower llm.concurrency or raise llm.retries"}
        return ModelError(f"{self.url} answered HTTP {status}: {body[:500]}",
                          fix=fixes.get(status, "see the server's message above and its log"))

    def _unreachable(self, reason: str) -> ModelError:
        return ModelError(f"could not get an answer from {self.url} after {self.retries + 1} attempt(s): "
                          f"{reason}", fix="start the server (llama-server, `ollama serve`, vLLM), check "
                          f"llm.url, or raise llm.timeout (now {self.timeout:g}s) for slow models")

    # -- answer ---------------------------------------------------------------------------------
    def _result(self, data: dict) -> ChatResult:
        choice = data["choices"][0]
        message = choice.get("message") or {}
        content = message.get("content") or ""
        answer, inline_reasoning = split_reasoning(content)
        field = message.get("reasoning_content") or message.get("reasoning") or ""
        reasoning = "\n\n".join(r for r in (str(field).strip(), inline_reasoning) if r)
        usage = data.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        return ChatResult(text=answer, prompt_tokens=prompt, evaluated_tokens=_evaluated(data, prompt),
                          completion_tokens=completion, reasoning=reasoning,
                          reasoning_tokens=_reasoning_tokens(usage, completion, reasoning, answer),
                          finish_reason=str(choice.get("finish_reason") or ""))

    # -- many calls -----------------------------------------------------------------------------
    def iter_chat(self, requests: Iterable, concurrency: int | None = None,
                  return_exceptions: bool = False) -> Iterator[tuple[int, ChatResult | Exception]]:
        """(input index, result) as requests finish, at most `concurrency` (default llm.concurrency) at once."""
        return batch.iter_chat(self, requests, concurrency or self.concurrency, return_exceptions)

    def map_chat(self, requests: Iterable, concurrency: int | None = None,
                 return_exceptions: bool = False) -> list[ChatResult | Exception]:
        """Results in input order; requests are dicts {"messages", "json_schema"?, **sampling}."""
        return batch.map_chat(self, requests, concurrency or self.concurrency, return_exceptions)


def _models_url(endpoint: str) -> str:
    """The /models route beside a chat completions endpoint (its query kept)."""
    parts = urllib.parse.urlsplit(endpoint)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.removesuffix("/chat/completions") + "/models"))


def _response_format(mode: str, schema: dict) -> dict:
    """The `response_format` of one FORMAT_LADDER mode (other than none)."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {
            "name": str(schema.get("title") or "answer"), "strict": True, "schema": schema}}
    if mode == "json_object+schema":  # llama-server reads it too; Ollama and vLLM ignore the schema
        return {"type": "json_object", "schema": schema}
    return {"type": "json_object"}


def _evaluated(data: dict, prompt_tokens: int) -> int:
    """Prompt tokens the server really evaluated: llama-server's timings, else OpenAI's cached_tokens."""
    timings = data.get("timings") or {}
    if "prompt_n" in timings:
        return int(timings["prompt_n"])
    cached = ((data.get("usage") or {}).get("prompt_tokens_details") or {}).get("cached_tokens")
    return max(0, prompt_tokens - int(cached)) if cached is not None else prompt_tokens


def _reasoning_tokens(usage: dict, completion: int, reasoning: str, answer: str) -> int:
    """Reported reasoning tokens, else the reasoning's share of the completion by characters."""
    reported = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    if reported is not None:
        return int(reported)
    if not reasoning or not completion:
        return 0
    return round(completion * len(reasoning) / (len(reasoning) + len(answer)))
