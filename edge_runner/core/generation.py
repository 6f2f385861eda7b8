"""Plain data passed between the HTTP layer, the backend and the generation engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens and when to stop, per request (OpenAI semantics)."""

    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_mode: bool = False
    #: with ``json_mode``: the JSON Schema (as JSON text) the answer must follow, enforced by a grammar
    json_schema: str | None = None
    #: drop schema keywords the grammar cannot enforce instead of refusing the request (tool parameters)
    lenient_schema: bool = False
    top_k: int = 0  # 0: off
    min_p: float = 0.0  # 0: off
    repeat_penalty: float = 1.0  # 1: off (llama.cpp / Ollama semantics, over the last 64 tokens)
    presence_penalty: float = 0.0  # OpenAI semantics
    frequency_penalty: float = 0.0
    #: report each generated token's log-probability, with this many most likely alternatives (OpenAI: 0-20)
    logprobs: bool = False
    top_logprobs: int = 0
    #: keep generating past end-of-generation tokens (benchmarks only)
    ignore_eos: bool = False
    #: OpenAI ``logit_bias``: (token id, bias added to its logit), -100 bans a token, 100 all but forces it
    logit_bias: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    """A completion (``prompt``) or chat (``messages``) request for a generating model."""

    prompt: str | None = None
    messages: tuple[dict[str, Any], ...] | None = None
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class Usage:
    """Token counts of one request (``cached_tokens`` came from prompt-prefix reuse)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def to_openai(self) -> dict[str, Any]:
        """The ``usage`` object of an OpenAI response."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


@dataclass(frozen=True)
class GenerationChunk:
    """A piece of streamed text; the last chunk carries ``finish_reason`` and ``usage``."""

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    #: with ``SamplingParams.logprobs``: the tokens generated since the previous chunk
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its bytes, log-probability under the model, and the most likely alternatives."""

    token: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()
