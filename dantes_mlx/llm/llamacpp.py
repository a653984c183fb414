"""llama-cpp-python in process: a GGUF from a path or the Hub, JSON forced by grammar, honest token counts.

Prompt layout and prefix reuse: llama.cpp keeps the previous prompt in its KV cache and re-evaluates
only from the first token where the new prompt differs. So every stage puts the fixed instructions
first (system message) and the varying data last (user message) — `build_messages` builds exactly
that — and each call after the first evaluates little more than its data. `ChatResult.evaluated_tokens`
is measured, not guessed: it is the size of the prompt batch llama.cpp actually decoded.

Reasoning models (gpt-oss harmony channels, `<think>` models): the reasoning-effort hint goes to the
chat template, the reasoning runs without grammar for at most `reasoning_budget` tokens (then the
answer is forced open), the JSON grammar applies to the answer only, and the reasoning is returned
apart from the text with its own token count.

Generation runs our own loop over llama.cpp's low-level API (`_run`): `Llama.generate` puts the
grammar in its sampler chain, which checks the whole vocabulary at every step; `sampling.TokenSampler`
draws first and checks only the drawn token (bench/constrained_speed.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from dantes_mlx.errors import ConfigError, ModelError, require
from dantes_mlx.llm import batch
from dantes_mlx.llm.base import ChatResult, check_sampling
from dantes_mlx.llm.reasoning import (force_final_marker, inside_open_think, reasoning_finished,
                                      reasoning_style, split_reasoning, THINK_OPEN)
from dantes_mlx.llm.sampling import TokenSampler

if TYPE_CHECKING:
    from dantes_mlx.config import LLMConfig

log = logging.getLogger(__name__)

HF_SPEC = re.compile(r"(?P<repo>[\w.-]+/[\w.-]+):(?P<file>[^:]+\.gguf)")
_TAIL = 24  # tokens decoded to watch for markers and stop strings


def build_messages(system_instructions: str, data: str) -> list[dict]:
    """[system: the fixed instructions, user: the varying data]: the layout prefix reuse needs."""
    if not system_instructions.strip():
        raise ValueError("build_messages: the system instructions are empty; the fixed prompt goes there")
    if len(data) >= 32 and data in system_instructions:
        raise ValueError("build_messages: the data is embedded in the instructions; pass it as `data` "
                         "so it comes last and the instructions stay a reusable prefix")
    return [{"role": "system", "content": system_instructions}, {"role": "user", "content": data}]


def strict_json_gbnf(schema_json: str) -> str:
    """GBNF for a JSON schema whose strings cannot hold raw control characters.

    llama-cpp-python's converter lets U+0000-U+001F into strings (upstream llama.cpp does not), so
    a weak model could emit JSON that strict parsers refuse.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(schema_json)
    return gbnf.replace('char ::= [^"\\\\]', 'char ::= [^"\\\\\\x7F\\x00-\\x1F]')


# -- model files ---------------------------------------------------------------------------------
def resolve_model_path(spec: str, cache_dir: str | Path | None = None) -> Path:
    """A local GGUF path as is, or 'HF_REPO:FILE.gguf' downloaded (and cached) from the Hugging Face Hub."""
    path = Path(spec).expanduser()
    if path.is_dir():
        raise ModelError("is a folder, not a GGUF file", path=path,
                         fix="give the .gguf file inside it (mlx/HF folders are for training, not llama.cpp)")
    if path.is_file():
        return path
    match = HF_SPEC.fullmatch(spec.strip())
    if match:
        return download_gguf(match["repo"], match["file"], cache_dir)
    if spec.endswith(".gguf"):
        raise ModelError("GGUF file not found", path=path,
                         fix="check the path, or write HF_REPO:FILE.gguf to download it from the Hub")
    raise ConfigError(f"llm.model {spec!r} is neither a GGUF file nor HF_REPO:FILE.gguf", path="dantes.yaml [llm]",
                      fix="e.g. model: bartowski/Qwen2.5-7B-Instruct-GGUF:Qwen2.5-7B-Instruct-Q4_K_M.gguf")


def download_gguf(repo: str, filename: str, cache_dir: str | Path | None = None) -> Path:
    """hf_hub_download one GGUF, turning the Hub's errors into messages that say what to do."""
    hub = require("huggingface_hub", "downloading a GGUF from the Hugging Face Hub", "huggingface_hub")
    from huggingface_hub import errors

    where = f"{repo}:{filename}"
    try:
        return Path(hub.hf_hub_download(repo_id=repo, filename=filename, cache_dir=cache_dir))
    except errors.GatedRepoError:
        raise ModelError(f"{repo} is gated: your account has not been granted access", path=where,
                         fix=f"accept the licence at https://huggingface.co/{repo}, then run "
                             "`hf auth login` or set HF_TOKEN") from None
    except errors.RepositoryNotFoundError:
        raise ModelError(f"repository {repo} not found on the Hugging Face Hub (or it is private)", path=where,
                         fix="check the repo id; for a private repo run `hf auth login` or set HF_TOKEN") from None
    except errors.LocalEntryNotFoundError:
        raise ModelError("not in the local cache and the Hub cannot be reached (offline?)", path=where,
                         fix="connect once to download it, or download the file elsewhere and set "
                             "llm.model to its local path") from None
    except errors.EntryNotFoundError:
        raise ModelError(f"{filename} does not exist in {repo}", path=where,
                         fix=_gguf_choices(hub, repo)) from None
    except OSError as exc:  # network and disk errors (HfHubHTTPError is an OSError too)
        raise ModelError(f"download failed: {exc}", path=where,
                         fix="check the network and disk space, or set llm.model to a local GGUF path") from None


def _gguf_choices(hub, repo: str) -> str:
    try:
        files = [f for f in hub.list_repo_files(repo) if f.endswith(".gguf")]
    except Exception:  # the listing is only a hint; the error above is what matters
        return f"see the file names at https://huggingface.co/{repo}/tree/main"
    return "use one of: " + ", ".join(files[:20]) if files else f"{repo} holds no .gguf file"


def model_identity(path: Path, samples: int = 16, sample_bytes: int = 1 << 16) -> str:
    """A local GGUF's name plus a digest of its size and of samples spread over its bytes: two files both
    called `ggml-model-Q4_K_M.gguf` never share cached answers, and a file is read only ~1 MB for it."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        for n in range(samples):
            fh.seek(size * n // samples)
            digest.update(fh.read(sample_bytes))
    return f"{path.name}#{digest.hexdigest()[:10]}"


# -- the client ----------------------------------------------------------------------------------
class LlamaCppClient:
    """A GGUF model run in process by llama-cpp-python; thread-safe (calls are serialised by a lock)."""

    def __init__(self, model: str, *, n_ctx: int = 8192, n_threads: int = 0, n_gpu_layers: int = -1,
                 n_batch: int = 2048, n_ubatch: int = 512, seed: int = 0, temperature: float = 0.7, max_tokens: int = 2048,
                 reasoning_effort: str = "low", reasoning_budget: int = 512, chat_template: str = "",
                 cache_dir: str | Path | None = None, verbose: bool = False):
        self._lib = require("llama_cpp", "running a GGUF model in process", "llama-cpp-python")
        self.path = resolve_model_path(model, cache_dir)
        self.model_id = model_identity(self.path) if Path(model).expanduser().is_file() else model
        self.defaults = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        self.reasoning_effort, self.reasoning_budget = reasoning_effort, max(1, reasoning_budget)
        if n_batch < 1 or n_ubatch < 1:
            raise ConfigError(f"n_batch={n_batch}, n_ubatch={n_ubatch}: both must be at least 1",
                              path="dantes.yaml [llm]", fix="e.g. n_batch: 2048, n_ubatch: 512")
        try:
            # n_threads covers the prompt too (llama-cpp-python would give it every core: on a busy machine
            # those threads spin-wait on each other: the prompt 2-3x slower, measured on 2 shared cores)
            self._llm = self._lib.Llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=n_threads or None,
                                        n_threads_batch=n_threads or None, n_gpu_layers=n_gpu_layers,
                                        n_batch=n_batch, n_ubatch=n_ubatch, seed=seed, verbose=verbose)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"llama.cpp could not load the model: {exc}", path=self.path,
                             fix="check that the GGUF is complete (re-download it) and that llama-cpp-python "
                                 "is recent enough for its architecture") from None
        self.n_ctx = self._llm.n_ctx()
        self.n_batch, self.n_ubatch = self._llm.n_batch, self._llm.context_params.n_ubatch
        self._template = _read_template(chat_template) or self._llm.metadata.get("tokenizer.chat_template", "")
        self._formatter = self._make_formatter(self._template)
        self.style = reasoning_style(self._template)
        self._grammars: dict[str, object] = {}
        self._lock = threading.Lock()
        self._eval_sizes: list[int] = []
        self.sampled_tokens = self.grammar_redraws = 0  # draws, and those the grammar refused (then redrawn)
        self._wrap_eval()

    @classmethod
    def from_config(cls, cfg: "LLMConfig") -> "LlamaCppClient":
        return cls(cfg.model, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, n_gpu_layers=cfg.n_gpu_layers,
                   n_batch=cfg.n_batch, n_ubatch=cfg.n_ubatch, seed=cfg.seed, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                   reasoning_effort=cfg.reasoning_effort, reasoning_budget=cfg.reasoning_budget,
                   chat_template=cfg.chat_template)

    def _wrap_eval(self) -> None:
        """Record the size of every batch llama.cpp decodes: the first one of a call is the prompt suffix."""
        original = self._llm.eval

        def counting_eval(tokens):
            self._eval_sizes.append(len(tokens))
            return original(tokens)

        self._llm.eval = counting_eval

    def _make_formatter(self, template: str):
        if not template:
            return None
        from llama_cpp import llama_chat_format

        eos, bos = self._llm.token_eos(), self._llm.token_bos()
        text = self._llm._model.token_get_text
        return llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=text(eos) if eos != -1 else "", bos_token=text(bos) if bos != -1 else "")

    # -- one call -------------------------------------------------------------------------------
    def chat(self, messages: list[dict], json_schema: dict | None = None, **sampling) -> ChatResult:
        """One chat completion; with json_schema the answer is forced by a llama.cpp grammar."""
        options = {**self.defaults, **check_sampling(sampling)}
        grammar = self._grammar(json_schema) if json_schema is not None else None
        with self._lock:
            prompt_text = self.render(messages)
            prompt = self._llm.tokenize(prompt_text.encode("utf-8"), add_bos=False, special=True)
            room = self.n_ctx - len(prompt)
            if room < 2:
                raise ModelError(f"the prompt has {len(prompt)} tokens but the context holds {self.n_ctx}",
                                 fix="raise llm.n_ctx, or send smaller chunks (e.g. extract.chunk_lines)")
            limit = min(int(options.pop("max_tokens")) or room, room)
            if self.style and self.reasoning_effort != "none":
                return self._reason_then_answer(prompt, prompt_text, grammar, limit, options)
            ids, finish, evaluated = self._run(prompt, grammar, limit, options)
            answer, reasoning = split_reasoning(self._text(ids, options))
            return ChatResult(text=answer, prompt_tokens=len(prompt), evaluated_tokens=evaluated,
                              completion_tokens=len(ids), reasoning=reasoning,
                              reasoning_tokens=self._count(reasoning), finish_reason=finish)

    def render(self, messages: list[dict]) -> str:
        """The prompt text the chat template makes of `messages` (with the reasoning-effort hint)."""
        if self._formatter is None:
            raise ModelError("the GGUF has no chat template", path=self.path,
                             fix="set llm.chat_template to a Jinja chat template file for this model")
        import jinja2

        hints = {"reasoning_effort": self.reasoning_effort, "enable_thinking": self.reasoning_effort != "none"}
        attempts = [messages]
        if messages and messages[0].get("role") == "system":
            # Templates without a system role (Mistral v0.1/v0.2): the instructions open the user turn.
            attempts.append(_merge_system(messages))
        for attempt in attempts:
            try:
                return self._formatter(messages=attempt, **hints).prompt
            except (ValueError, jinja2.TemplateError) as exc:  # raise_exception() or a template bug
                error = exc
        raise ModelError(f"the chat template refused the messages: {error}", path=self.path,
                         fix="set llm.chat_template to a template that accepts system/user messages")

    def _grammar(self, schema: dict):
        # Not sort_keys: the grammar writes the properties in the order the key lists them (the prompt's order).
        key = json.dumps(schema, ensure_ascii=False)
        if key not in self._grammars:
            try:
                self._grammars[key] = self._lib.LlamaGrammar.from_string(strict_json_gbnf(key), verbose=False)
            except Exception as exc:
                raise ConfigError(f"llama.cpp cannot turn this JSON schema into a grammar: {exc}",
                                  fix="simplify the schema (types, properties, required, enum, items, "
                                      "maxLength work)") from None
        return self._grammars[key]

    def _reason_then_answer(self, prompt, prompt_text, grammar, limit, options) -> ChatResult:
        """Reasoning without grammar (capped), then the answer with the grammar, from the same cache."""
        opened = self.style == "harmony" or inside_open_think(prompt_text)
        watch = _ReasoningWatch(self, self.style, opened)
        thought, finish, evaluated = self._run(prompt, None, min(self.reasoning_budget, limit), options,
                                               watch=watch, keep_eog=watch.harmony_end_ids)
        spent = len(thought)
        if watch.state == "not reasoning":  # a <think> model that answered directly: answer again, with grammar
            thought, finish = [], "length"
        elif finish == "stop":  # the model ended its turn inside the reasoning: no answer
            return self._reasoned_result(prompt, thought, [], evaluated, spent, spent, "stop", options)
        thinking = len(thought)  # the probe tokens of a model that did not reason were generated, not thought
        if watch.state != "final" and thought:  # budget spent: close the reasoning ourselves
            thought = thought + self._llm.tokenize(force_final_marker(self.style).encode(), add_bos=False,
                                                   special=True)
        answer, finish, _ = self._run(prompt + thought, grammar, limit - spent, options)
        return self._reasoned_result(prompt, thought, answer, evaluated, spent + len(answer), thinking, finish,
                                     options)

    def _reasoned_result(self, prompt, thought, answer, evaluated, generated, thinking, finish, options):
        raw_thought = self._llm.detokenize(thought, special=True).decode("utf-8", "replace")
        _, reasoning = split_reasoning(raw_thought + ("" if reasoning_finished(self.style, raw_thought)
                                                      else force_final_marker(self.style)))
        text, extra = split_reasoning(self._text(answer, options))
        return ChatResult(text=text, prompt_tokens=len(prompt), evaluated_tokens=evaluated,
                          completion_tokens=generated, reasoning="\n\n".join(r for r in (reasoning, extra) if r),
                          reasoning_tokens=thinking + self._count(extra),
                          finish_reason=finish)

    def _run(self, tokens: list[int], grammar, limit: int, options: dict, watch=None,
             keep_eog: frozenset = frozenset()) -> tuple[list[int], str, int]:
        """Generate up to `limit` tokens: (new tokens, finish reason, prompt tokens evaluated)."""
        if limit <= 0:
            return [], "length", len(tokens)
        self._eval_sizes.clear()
        sampler = TokenSampler(self._lib, self._llm, options, grammar)
        try:
            self._feed_prompt(tokens)
            out, finish = self._generate(sampler, limit, options, watch, keep_eog)
        finally:
            sampler.close()
        self.sampled_tokens += sampler.draws
        self.grammar_redraws += sampler.redraws
        return out, finish, self._eval_sizes[0]

    def _generate(self, sampler: TokenSampler, limit: int, options: dict, watch,
                  keep_eog: frozenset) -> tuple[list[int], str]:
        """Sample, stop on end-of-generation, the watch, a stop string or `limit`, else decode and go on."""
        stops = options.get("stop") or []
        stops = [stops] if isinstance(stops, str) else list(stops)
        out: list[int] = []
        while True:
            token = sampler.sample()
            if self._is_eog(token) and token not in keep_eog:
                return out, "stop"
            sampler.accept(token)
            out.append(token)
            if watch is not None and watch(out):
                return out, "watch"
            if stops and any(s in self._decode_tail(out) for s in stops):
                return out, "stop"
            if len(out) >= limit:
                return out, "length"
            self._llm.eval([token])

    def _feed_prompt(self, tokens: list[int]) -> None:
        """Decode the prompt, keeping the KV cache of the longest prefix it shares with what was decoded last
        (at least the last token is decoded again: its logits are the ones sampled)."""
        llm = self._llm
        cached = llm.input_ids[:min(llm.n_tokens, len(tokens))]
        differs = np.flatnonzero(cached != np.asarray(tokens[:len(cached)], dtype=cached.dtype))
        reuse = min(int(differs[0]) if len(differs) else len(cached), len(tokens) - 1)
        if reuse > 0 and llm._ctx.kv_cache_seq_rm(-1, reuse, -1):
            llm.n_tokens = reuse
        else:  # nothing shared, or a model whose memory cannot drop a suffix (recurrent)
            llm.reset()
            reuse = 0
        llm.eval(tokens[reuse:])

    def _is_eog(self, token: int) -> bool:
        try:
            return bool(self._lib.llama_vocab_is_eog(self._llm._model.vocab, token))
        except AttributeError:  # older bindings
            return token == self._llm.token_eos()

    def _decode_tail(self, ids: list[int], special: bool = False) -> str:
        return self._llm.detokenize(ids[-_TAIL:], special=special).decode("utf-8", "ignore")

    def _text(self, ids: list[int], options: dict) -> str:
        text = self._llm.detokenize(ids, special=True).decode("utf-8", "replace")
        text = text if _has_markers(text) else self._llm.detokenize(ids).decode("utf-8", "replace")
        stops = options.get("stop") or []
        for stop in [stops] if isinstance(stops, str) else stops:
            text = text.split(stop, 1)[0]
        return text

    def _count(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in this model's vocabulary (how extract sizes chunks to the context)."""
        with self._lock:
            return self._count(text)

    # -- many calls -----------------------------------------------------------------------------
    def iter_chat(self, requests: Iterable, concurrency: int = 1,
                  return_exceptions: bool = False) -> Iterator[tuple[int, ChatResult | Exception]]:
        """(input index, result) for each request; one at a time, the model being a single context."""
        return batch.iter_chat(self, requests, 1, return_exceptions)

    def map_chat(self, requests: Iterable, concurrency: int = 1,
                 return_exceptions: bool = False) -> list[ChatResult | Exception]:
        """Results in input order (same request format as OpenAICompatClient.map_chat)."""
        return batch.map_chat(self, requests, 1, return_exceptions)

    def close(self) -> None:
        """Free the model now rather than at garbage collection."""
        with self._lock:
            self._llm.close()


class _ReasoningWatch:
    """Stops the reasoning phase when the model reaches its answer, or finds it is not reasoning at all."""

    def __init__(self, client: LlamaCppClient, style: str, opened: bool):
        self.client, self.style, self.opened, self.state = client, style, opened, "reasoning"
        end = client._llm.tokenize(b"<|end|>", add_bos=False, special=True) if style == "harmony" else []
        # gpt-oss ends its analysis message with <|end|>, which llama.cpp may count as end-of-generation.
        self.harmony_end_ids = frozenset(end) if len(end) == 1 else frozenset()

    def __call__(self, ids: list[int]) -> bool:
        tail = self.client._decode_tail(ids, special=True)
        if reasoning_finished(self.style, tail):
            self.state = "final"
            return True
        if not self.opened and len(ids) <= 8:
            head = self.client._llm.detokenize(ids, special=True).decode("utf-8", "ignore").lstrip()
            if head.startswith(THINK_OPEN):
                self.opened = True
            elif not THINK_OPEN.startswith(head):
                self.state = "not reasoning"
                return True
        return False


def _merge_system(messages: list[dict]) -> list[dict]:
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    if rest and rest[0].get("role") == "user":
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
        return rest
    return [{"role": "user", "content": system}] + rest


def _has_markers(text: str) -> bool:
    return "<|channel|>" in text or THINK_OPEN in text or "</think>" in text


def _read_template(path: str) -> str:
    if not path:
        return ""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError("chat template file not found", path=file, fix="set llm.chat_template to a Jinja file")
    return file.read_text(encoding="utf-8")
