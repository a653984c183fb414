"""Generation engines behind one interface: MLX (base + adapter) or a GGUF through llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator, Protocol, runtime_checkable

from dantes_mlx.adapter_format import mlx_adapter_dir
from dantes_mlx.errors import InputError, ModelError, require
from dantes_mlx.models.config import mlx_model_config
from dantes_mlx.models.hub import resolve_model
from dantes_mlx.models.weights import check_weights
from dantes_mlx.workspace import AdapterFolder


@runtime_checkable
class Engine(Protocol):
    """A chat model that streams: what `chat`, `ask` and the eval stage generate with."""

    name: str
    context_length: int | None    # tokens the prompt and the reply must fit in (None: no limit known)

    def prompt_length(self, messages: list[dict]) -> int | None:
        """Tokens of the conversation's prompt (None: cannot tell)."""
        ...

    def stream(self, messages: list[dict], *, temp: float = 0.0, top_p: float = 1.0,
               max_tokens: int = 256, seed: int | None = None) -> Iterator[str]:
        """Text pieces of the assistant's reply, as they are generated."""
        ...

    def generate(self, messages: list[dict], **sampling) -> str:
        """The whole reply."""
        ...


class MLXEngine:
    """mlx-lm: the base model (HF id or folder) with an optional adapter, sampled by mlx_lm.sample_utils."""

    def __init__(self, model: str, adapter_path: str | Path | None = None):
        from mlx_lm import load

        self.name = f"mlx:{model}" + (f"+{adapter_path}" if adapter_path else "")
        path = resolve_model(model)
        check_weights(path)
        mlx_adapter = mlx_adapter_dir(adapter_path, path) if adapter_path else None  # PEFT: converted once
        try:
            self.model, self.tokenizer = load(str(path), adapter_path=str(mlx_adapter) if mlx_adapter else None,
                                              model_config=mlx_model_config(path))
        except (ValueError, FileNotFoundError) as exc:
            raise ModelError(f"mlx-lm cannot load it: {exc}", path=adapter_path or path,
                             fix="check that the adapter was trained on this base model") from exc
        config = path / "config.json" if Path(path).is_dir() else None
        positions = json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings") \
            if config and config.is_file() else None
        self.context_length = int(positions) if positions else None

    def prompt_length(self, messages: list[dict]) -> int:
        return len(self.prompt_ids(messages))

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of the conversation in the model's chat template, ready for the reply."""
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)

    def stream(self, messages, *, temp=0.0, top_p=1.0, max_tokens=256, seed=None):
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        if seed is not None:
            mx.random.seed(seed)
        sampler = make_sampler(temp=temp, top_p=top_p if top_p < 1.0 else 0.0)
        for response in stream_generate(self.model, self.tokenizer, self.prompt_ids(messages),
                                        max_tokens=max_tokens, sampler=sampler):
            if response.text:
                yield response.text

    def generate(self, messages, **sampling) -> str:
        return "".join(self.stream(messages, **sampling))


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python: a GGUF, optionally with a GGUF LoRA adapter."""

    def __init__(self, gguf: str | Path, lora: str | Path | None = None, n_ctx: int = 4096,
                 n_threads: int = 0, n_gpu_layers: int = -1):
        llama_cpp = require("llama_cpp", "chatting with a GGUF", "llama-cpp-python")
        for path in (gguf, lora):
            if path and not Path(path).is_file():
                raise InputError("GGUF file not found", path=path, fix="run `dantes-mlx export` or check the path")
        self.name = f"gguf:{Path(gguf).name}" + (f"+{Path(lora).name}" if lora else "")
        try:
            self.llm = llama_cpp.Llama(model_path=str(gguf), lora_path=str(lora) if lora else None, n_ctx=n_ctx,
                                       n_threads=n_threads or None, n_gpu_layers=n_gpu_layers, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp cannot load it: {exc}", path=gguf,
                             fix="re-export the GGUF with `dantes-mlx export`") from exc
        # llama-cpp-python misses a refused adapter (its NULL pointer is not None) and then crashes on eval.
        if lora and not getattr(self.llm, "_lora_adapter", True):
            self.llm.close()
            raise ModelError("llama.cpp could not load this GGUF LoRA adapter (not a LoRA GGUF, or one for "
                             "another base model)", path=lora,
                             fix="pass the *-lora-f16.gguf `dantes-mlx export` wrote, with its base-f16.gguf as --gguf")
        # llama.cpp rounds n_ctx up (to 256) but llama-cpp-python sizes its token buffer to the n_ctx asked for
        self.context_length = min(self.llm.n_ctx(), self.llm.context_params.n_ctx)

    def prompt_ids(self, messages: list[dict]) -> list[int] | None:
        """The ids llama-cpp-python's chat handler sends for the GGUF's own chat template (None: a built-in
        llama-cpp-python format, whose rendering we do not repeat)."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llm.metadata.get("tokenizer.chat_template")
        if self.llm.chat_format != "chat_template.default" or not template:
            return None
        special = {name: self.llm._model.token_get_text(token) if token != -1 else ""
                   for name, token in (("bos", self.llm.token_bos()), ("eos", self.llm.token_eos()))}
        prompt = Jinja2ChatFormatter(template, eos_token=special["eos"], bos_token=special["bos"])(messages=messages)
        return self.llm.tokenize(prompt.prompt.encode("utf-8"), add_bos=not prompt.added_special, special=True)

    def prompt_length(self, messages: list[dict]) -> int | None:
        ids = self.prompt_ids(messages)
        return None if ids is None else len(ids)

    def stream(self, messages, *, temp=0.0, top_p=1.0, max_tokens=256, seed=None):
        if self.context_length and (n := self.prompt_length(messages)) is not None and n >= self.context_length:
            raise self._too_long(f"{n} prompt tokens")
        # top_k=0 and min_p=0 turn off llama-cpp-python's own defaults (40, 0.05): the MLX engine samples
        # with temperature and top-p alone, and eval compares the two on the same sampling.
        chunks = self.llm.create_chat_completion(messages=messages, stream=True, temperature=temp, top_p=top_p,
                                                 top_k=0, min_p=0.0, max_tokens=max_tokens, seed=seed)
        pieces = (chunk["choices"][0]["delta"].get("content") for chunk in chunks)
        try:
            yield from drop_leading_space(piece for piece in pieces if piece)
        except ValueError as exc:  # a prompt we could not count, refused before its first token
            if "exceed context window" not in str(exc):
                raise
            raise self._too_long(str(exc)) from exc

    def _too_long(self, what: str) -> InputError:
        return InputError(f"the prompt does not fit the model's {self.context_length}-token context ({what})",
                          path=self.name, fix="shorten the prompt (in `chat`: /reset)")

    def generate(self, messages, **sampling) -> str:
        return "".join(self.stream(messages, **sampling))


def drop_leading_space(pieces: Iterable[str]) -> Iterator[str]:
    """The pieces without the one space SentencePiece's "▁" puts before the first word (llama.cpp keeps it)."""
    pieces = iter(pieces)
    for first in pieces:
        first = first[1:] if first.startswith(" ") else first
        if first:
            yield first
        break
    yield from pieces


def load_engine(model: str | None = None, adapter_path: str | Path | None = None,
                gguf: str | Path | None = None, lora: str | Path | None = None, **llama_kwargs) -> Engine:
    """A GGUF engine when `gguf` is given, else MLX: `model` (default: the adapter's base) + adapter."""
    if gguf:
        return LlamaCppEngine(gguf, lora, **llama_kwargs)
    if lora:
        raise InputError("--lora is a GGUF LoRA adapter and needs --gguf", path="--lora",
                         fix="add --gguf BASE.gguf, or use --adapter-path for the MLX adapter")
    if adapter_path and not model:
        model = AdapterFolder(adapter_path).base_model()
    if not model:
        raise InputError("no model to chat with", path="--model", fix="pass --model, --adapter-path or --gguf")
    return MLXEngine(model, adapter_path)
