"""Per-sequence llama.cpp sampler chains: grammar (JSON object or a JSON Schema), penalties, then greedy or
top-k / top-p / min-p + temperature + seeded draw."""

from __future__ import annotations

import ctypes
import functools
import json
import random
import re
from typing import Any

import numpy as np

from edge_runner.backends.llama_cpp.native import NativeModel
from edge_runner.core.errors import InvalidInput
from edge_runner.core.generation import SamplingParams


class GrammarDeadEnd(InvalidInput):
    """The grammar admits no token of this model's vocabulary at this point of the answer."""


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
#: repeat/presence/frequency penalties look at this many recent tokens (llama.cpp's default)
PENALTY_WINDOW = 64


LOOSE_CHAR = r'char ::= [^"\\] |'
STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'
#: JSON Schema keywords the grammar converter enforces; annotations change nothing; anything else (minimum,
#: multipleOf, uniqueItems, not, if/then...) would be silently ignored, so a schema using it is refused
ENFORCED = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
    "minLength", "maxLength", "pattern", "format", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs",
    "definitions",
}  # fmt: skip
ANNOTATIONS = {"title", "description", "$schema", "$id", "$comment", "default", "examples", "deprecated", "strict"}
#: where subschemas sit: one schema, a list of schemas, or a name -> schema map
SUBSCHEMA_ONE = ("items", "additionalProperties")
SUBSCHEMA_LIST = ("prefixItems", "anyOf", "oneOf", "allOf")
SUBSCHEMA_MAP = ("properties", "$defs", "definitions")


#: the converter spells out repetitions rule by rule: larger counts would build a huge grammar
MAX_REPEAT = 1024
COUNTS = ("minItems", "maxItems", "minLength", "maxLength")
REPEAT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def _too_big(schema: dict[str, Any]) -> list[str]:
    counts = [key for key in COUNTS if not isinstance(schema.get(key, 0), int) or schema.get(key, 0) > MAX_REPEAT]
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        numbers = [int(n) for match in REPEAT.findall(pattern) for n in match if n]
        if any(n > MAX_REPEAT for n in numbers):
            counts.append("pattern")
    return counts


def unenforced_keywords(schema: Any, where: str = "schema") -> list[str]:
    """Paths of the keywords in ``schema`` that the grammar would not enforce (or not within
    ``MAX_REPEAT`` repetitions)."""
    if not isinstance(schema, dict):
        return []
    found = [f"{where}.{key}" for key in schema if key not in ENFORCED and key not in ANNOTATIONS]
    found += [f"{where}.{key} (over {MAX_REPEAT})" for key in _too_big(schema)]
    for key in SUBSCHEMA_ONE:
        found += unenforced_keywords(schema.get(key), f"{where}.{key}")
    for key in SUBSCHEMA_LIST:
        for i, sub in enumerate(schema.get(key) or [] if isinstance(schema.get(key), list) else []):
            found += unenforced_keywords(sub, f"{where}.{key}[{i}]")
    for key in SUBSCHEMA_MAP:
        subs = schema.get(key)
        for name, sub in subs.items() if isinstance(subs, dict) else []:
            found += unenforced_keywords(sub, f"{where}.{key}.{name}")
    return found


def enforceable(schema: Any) -> Any:
    """``schema`` without the keywords the grammar cannot enforce (and without oversized repetition
    counts): for tool parameters, whose schemas clients write for other servers."""
    if not isinstance(schema, dict):
        return schema
    too_big = set(_too_big(schema))
    out = {k: v for k, v in schema.items() if (k in ENFORCED or k in ANNOTATIONS) and k not in too_big}
    for key in SUBSCHEMA_ONE:
        if isinstance(out.get(key), dict):
            out[key] = enforceable(out[key])
    for key in SUBSCHEMA_LIST:
        if isinstance(out.get(key), list):
            out[key] = [enforceable(sub) for sub in out[key]]
    for key in SUBSCHEMA_MAP:
        if isinstance(out.get(key), dict):
            out[key] = {name: enforceable(sub) for name, sub in out[key].items()}
    return out


@functools.lru_cache(maxsize=64)
def schema_grammar(schema_json: str) -> str:
    """GBNF that only admits JSON documents valid under the schema (llama.cpp's own schema converter, as
    shipped with llama-cpp-python); a schema it cannot express is the client's 400, before any work."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    unenforced = unenforced_keywords(json.loads(schema_json))
    if unenforced:
        raise InvalidInput(
            f"'json_schema' uses {', '.join(unenforced[:5])}, which the grammar cannot enforce; enforced keywords: "
            + ", ".join(sorted(ENFORCED))
        )
    try:
        gbnf = str(json_schema_to_gbnf(schema_json))
    except Exception as exc:  # the converter raises bare Exception/ValueError/KeyError for what it cannot express
        raise InvalidInput(f"'json_schema' cannot be turned into a grammar: {exc}") from None
    # the converter's string characters admit raw control characters (a newline inside a string), which
    # no JSON parser accepts: only escaped ones, as in JSON_OBJECT_GBNF
    if "char ::=" in gbnf and LOOSE_CHAR not in gbnf:
        raise InvalidInput("'json_schema': the grammar converter changed its string rule; cannot make strict JSON")
    return gbnf.replace(LOOSE_CHAR, STRICT_CHAR)


def grammar_text(params: SamplingParams) -> str | None:
    """The grammar a request's answer must follow, if any (raises InvalidInput for a bad schema)."""
    if not params.json_mode:
        return None
    if params.json_schema is None:
        return JSON_OBJECT_GBNF
    if params.lenient_schema:
        return schema_grammar(json.dumps(enforceable(json.loads(params.json_schema)), sort_keys=True))
    return schema_grammar(params.json_schema)


def check_logit_bias(params: SamplingParams, n_vocab: int) -> None:
    """A 400 for a ``logit_bias`` token id outside the vocabulary (before the request reaches the engine)."""
    outside = [token for token, _ in params.logit_bias if token >= n_vocab]
    if outside:
        raise InvalidInput(
            f"logit_bias names token {outside[0]}, but the vocabulary has {n_vocab} tokens (0-{n_vocab - 1})"
        )


class Sampler:
    """A llama.cpp sampler chain owned by one sequence; call ``free`` when the sequence ends."""

    def __init__(self, native: NativeModel, params: SamplingParams) -> None:
        lib = native.lib
        self.lib = lib
        self.chain: Any = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        self.candidates: np.ndarray | None = None
        self.candidate_array: Any = None
        self.n_vocab = native.n_vocab
        self.want_logprobs = params.logprobs
        self.top_logprobs = min(max(0, params.top_logprobs), self.n_vocab)
        self.last_logprobs: tuple[float, list[tuple[int, float]]] | None = None
        add = functools.partial(lib.llama_sampler_chain_add, self.chain)
        if params.logit_bias:  # ids checked against the vocabulary by check_logit_bias at submit
            biases = (lib.llama_logit_bias * len(params.logit_bias))(*params.logit_bias)  # copied by llama.cpp
            add(lib.llama_sampler_init_logit_bias(self.n_vocab, len(params.logit_bias), biases))
        gbnf = grammar_text(params)
        if gbnf is not None:
            grammar = lib.llama_sampler_init_grammar(native.vocab, gbnf.encode(), b"root")
            if not grammar:
                raise RuntimeError("llama.cpp rejected the grammar of the JSON schema")
            add(grammar)
            # candidates for the checked draw in ``sample``: llama_token_data {int32 id; float logit; float p}
            self.candidates = np.zeros(self.n_vocab, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
            self.candidate_array = lib.llama_token_data_array(
                self.candidates.ctypes.data_as(ctypes.POINTER(lib.llama_token_data)), self.n_vocab, -1, False
            )
        if params.repeat_penalty != 1.0 or params.presence_penalty or params.frequency_penalty:
            add(
                lib.llama_sampler_init_penalties(
                    native.n_vocab,
                    PENALTY_WINDOW,
                    params.repeat_penalty,
                    params.frequency_penalty,
                    params.presence_penalty,
                )
            )
        if params.temperature < MIN_TEMPERATURE:
            add(lib.llama_sampler_init_greedy())
        else:
            seed = params.seed if params.seed is not None else random.getrandbits(32)
            if params.top_k > 0:
                add(lib.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                add(lib.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0.0:
                add(lib.llama_sampler_init_min_p(params.min_p, 1))
            add(lib.llama_sampler_init_temp(params.temperature))
            add(lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: Any, index: int) -> int:
        """Pick the next token from the logits at batch ``index`` (also advances grammar state); with
        ``logprobs`` asked, ``last_logprobs`` describes it."""
        token = self._draw(ctx, index)
        if self.want_logprobs:
            self.last_logprobs = self._logprobs(ctx, index, token)
        return token

    def _logprobs(self, ctx: Any, index: int, token: int) -> tuple[float, list[tuple[int, float]]]:
        """log-softmax of the raw logits (the model's distribution, before any sampler): the token's value
        and the ``top_logprobs`` most likely tokens."""
        logits = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
        values = logits.astype(np.float64)
        peak = float(values.max())
        log_total = peak + float(np.log(np.exp(values - peak).sum()))
        top: list[tuple[int, float]] = []
        if self.top_logprobs:
            best = np.argpartition(-values, self.top_logprobs - 1)[: self.top_logprobs]
            best = best[np.argsort(-values[best])]
            top = [(int(i), float(values[i] - log_total)) for i in best]
        return float(values[token] - log_total), top

    def _draw(self, ctx: Any, index: int) -> int:
        """llama.cpp's own draw; with a grammar, a checked one: ``llama_sampler_sample`` would accept a token
        the grammar forbids (a draw from an all ``-inf`` candidate list picks one anyway), and the grammar
        then aborts the whole process."""
        if self.candidates is None:
            return int(self.lib.llama_sampler_sample(self.chain, ctx, index))
        lib, cells, array = self.lib, self.candidates, self.candidate_array
        array.data = cells.ctypes.data_as(ctypes.POINTER(lib.llama_token_data))  # a sampler may have moved it
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
        cells["id"] = np.arange(self.n_vocab, dtype=np.int32)
        cells["logit"] = logits
        cells["p"] = 0.0
        array.size, array.selected, array.sorted = self.n_vocab, -1, False
        lib.llama_sampler_apply(self.chain, ctypes.byref(array))
        chosen = int(array.selected)
        if not 0 <= chosen < int(array.size) or not np.isfinite(array.data[chosen].logit):
            raise GrammarDeadEnd("the JSON grammar admits no token of this model's vocabulary here")
        token = int(array.data[chosen].id)
        lib.llama_sampler_accept(self.chain, token)
        return token

    def free(self) -> None:
        """Release the chain and the samplers it owns. Idempotent."""
        if self.chain:
            self.lib.llama_sampler_free(self.chain)
            self.chain = None
