"""Per-sequence llama.cpp sampler chains: greedy or top-p + temperature + seeded draw, optional JSON grammar."""

from __future__ import annotations

import random
from typing import Any

from edge_runner.backends.llama_cpp.native import NativeModel
from edge_runner.core.generation import SamplingParams

# A JSON grammar (GBNF) restricted to an object at the top level, as OpenAI's json_object mode asks.
JSON_OBJECT_GBNF = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null")
object ::= "{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* )? ws "}"
array  ::= "[" ws ( value ( ws "," ws value )* )? ws "]"
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""
number ::= "-"? ( [0] | [1-9] [0-9]{0,15} ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9] [0-9]{0,15} )?
ws     ::= [ ]?
"""
#: below this the draw is greedy: logits divided by a subnormal temperature (1e-45) overflow to inf, the
#: softmax turns into NaN, the draw can pick a token the JSON grammar forbids, and llama.cpp aborts the
#: process ("Unexpected empty grammar stack"); at 0.001 the draw is greedy in all but name anyway
MIN_TEMPERATURE = 1e-3


class Sampler:
    """A llama.cpp sampler chain owned by one sequence; call ``free`` when the sequence ends."""

    def __init__(self, native: NativeModel, params: SamplingParams) -> None:
        lib = native.lib
        self.lib = lib
        self.chain: Any = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if params.json_mode:
            grammar = lib.llama_sampler_init_grammar(native.vocab, JSON_OBJECT_GBNF.encode(), b"root")
            if not grammar:
                raise RuntimeError("llama.cpp rejected the JSON grammar")
            lib.llama_sampler_chain_add(self.chain, grammar)
        if params.temperature < MIN_TEMPERATURE:
            lib.llama_sampler_chain_add(self.chain, lib.llama_sampler_init_greedy())
        else:
            seed = params.seed if params.seed is not None else random.getrandbits(32)
            if params.top_p < 1.0:
                lib.llama_sampler_chain_add(self.chain, lib.llama_sampler_init_top_p(params.top_p, 1))
            lib.llama_sampler_chain_add(self.chain, lib.llama_sampler_init_temp(params.temperature))
            lib.llama_sampler_chain_add(self.chain, lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: Any, index: int) -> int:
        """Pick the next token from the logits at batch ``index`` (also advances grammar state)."""
        return int(self.lib.llama_sampler_sample(self.chain, ctx, index))

    def free(self) -> None:
        """Release the chain and the samplers it owns. Idempotent."""
        if self.chain:
            self.lib.llama_sampler_free(self.chain)
            self.chain = None
