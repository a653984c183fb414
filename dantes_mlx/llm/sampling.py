"""Token sampling for the in-process client: llama.cpp's sampler chain, the grammar checked on the drawn token.

llama-cpp-python puts the grammar inside its sampler chain, so llama.cpp matches every one of the
vocabulary's tokens (49k for SmolLM2, 150k+ for Qwen) against the grammar at every step. llama.cpp's
own common sampler draws first and asks the grammar about that one token; only when the grammar
refuses it does it filter the whole vocabulary and draw again. `TokenSampler` does the same:
- greedy (temperature 0): the result is the stock path's, token for token (the best token overall,
  when the grammar allows it, is also the best allowed one);
- temperature sampling: a draw the grammar allows is kept, a refused one is redrawn from the
  grammar-filtered distribution (llama.cpp's behaviour: not exactly the stock path's draws);
- either way every token kept has been accepted by the grammar, so the JSON stays valid.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np

from dantes_mlx.errors import ConfigError

# llama_token_data {int32 id; float logit; float p}, as an array numpy can refill in one copy.
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


class TokenSampler:
    """One generation's sampler: the chain of `Llama.generate` minus the grammar, and the grammar apart."""

    def __init__(self, lib, llm, options: dict, grammar=None):
        self._lib, self._ctx = lib, llm._ctx.ctx
        self.n_vocab = llm.n_vocab()
        self._chain = _chain(lib, self.n_vocab, llm.last_n_tokens_size, options)
        self._grammar = None
        if grammar is not None:
            self._grammar = lib.llama_sampler_init_grammar(
                llm._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))
            if not self._grammar:
                self.close()
                raise ConfigError("llama.cpp cannot parse the grammar built from this JSON schema "
                                  "(its log says where)", fix="simplify the schema (types, properties, required, "
                                  "enum, items, maxLength work)")
        self._ids = np.arange(self.n_vocab, dtype=np.int32)
        self._data = np.zeros(self.n_vocab, dtype=TOKEN_DATA)
        self._data_p = self._data.ctypes.data_as(lib.llama_token_data_p)
        self._array = lib.llama_token_data_array(data=self._data_p, size=self.n_vocab, selected=-1, sorted=False)
        self._one = lib.llama_token_data(id=0, logit=0.0, p=0.0)
        self._one_array = lib.llama_token_data_array(
            data=ctypes.pointer(self._one), size=1, selected=-1, sorted=False)
        self.draws = self.redraws = 0  # steps, and steps whose first draw the grammar refused

    def sample(self, idx: int = -1) -> int:
        """The next token from the logits of output `idx` of the last decode (grammar-checked)."""
        self.draws += 1
        token = self._draw(idx, grammar_first=False)
        if self._grammar is None or self.allows(token):
            return token
        self.redraws += 1
        return self._draw(idx, grammar_first=True)

    def allows(self, token: int) -> bool:
        """Whether the grammar, in its current state, lets `token` come next."""
        self._one.id, self._one.logit, self._one.p = token, 1.0, 0.0
        self._one_array.size, self._one_array.selected, self._one_array.sorted = 1, -1, False
        self._lib.llama_sampler_apply(self._grammar, ctypes.byref(self._one_array))
        return not math.isinf(self._one.logit)

    def accept(self, token: int) -> None:
        """Advance the grammar and the chain's state (repetition penalties) past `token`."""
        if self._grammar is not None:
            self._lib.llama_sampler_accept(self._grammar, token)
        self._lib.llama_sampler_accept(self._chain, token)

    def close(self) -> None:
        """Free the llama.cpp samplers (the chain owns its members)."""
        for sampler in (self._chain, self._grammar):
            if sampler:
                self._lib.llama_sampler_free(sampler)
        self._chain = self._grammar = None

    def _draw(self, idx: int, grammar_first: bool) -> int:
        logits = self._lib.llama_get_logits_ith(self._ctx, idx)
        self._data["id"] = self._ids
        self._data["logit"] = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        array = self._array
        array.data = self._data_p  # a sampler may have pointed it elsewhere
        array.size, array.selected, array.sorted = self.n_vocab, -1, False
        if grammar_first:
            self._lib.llama_sampler_apply(self._grammar, ctypes.byref(array))
        self._lib.llama_sampler_apply(self._chain, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            raise RuntimeError("llama.cpp's sampler selected no token")
        return int(array.data[array.selected].id)


def _chain(lib, n_vocab: int, last_n: int, options: dict):
    """The sampler chain `Llama._init_sampler` builds (penalties, then greedy or top-k/top-p/min-p/temp/dist)."""
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    members = [lib.llama_sampler_init_penalties(
        n_vocab, last_n, float(options.get("repeat_penalty", 1.0)),
        float(options.get("frequency_penalty", 0.0)), float(options.get("presence_penalty", 0.0)))]
    temp = float(options.get("temperature", 0.7))
    seed = options.get("seed")
    seed = lib.LLAMA_DEFAULT_SEED if seed is None else int(seed) & 0xFFFFFFFF
    if temp < 0:
        members.append(lib.llama_sampler_init_dist(seed))
    elif temp == 0:
        members.append(lib.llama_sampler_init_greedy())
    else:
        members += [lib.llama_sampler_init_top_k(int(options.get("top_k", 40))),
                    lib.llama_sampler_init_top_p(float(options.get("top_p", 0.95)), 1),
                    lib.llama_sampler_init_min_p(float(options.get("min_p", 0.05)), 1),
                    lib.llama_sampler_init_temp(temp),
                    lib.llama_sampler_init_dist(seed)]
    for member in members:
        lib.llama_sampler_chain_add(chain, member)
    return chain
