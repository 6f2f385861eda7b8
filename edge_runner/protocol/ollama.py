"""Ollama API shapes, free of HTTP: request parsing and response building for ``/api/*``.

Parsing turns Ollama's ``/api/chat``, ``/api/generate`` and ``/api/embed`` bodies into our
``GenerationRequest`` / text lists (``MalformedRequest`` names the offending field); building turns
``GenerationChunk``s into Ollama's NDJSON objects (``done: false`` pieces, then one ``done: true`` object
with token counts and nanosecond timings). ``tools`` go through ``openai_tools`` (the same prompt and
grammar as OpenAI's): the answer's ``message.tool_calls`` carry ``{"function": {"name", "arguments"}}``
with the arguments as an object, and ``tool`` messages (with ``tool_name``) feed results back. Model
listings (``/api/tags``, ``/api/show``, ``/api/ps``) are in ``ollama_listing``. What the checked-in source
of the ``ollama`` Python client sends and reads is the reference.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from edge_runner.core.errors import InvalidInput, MalformedRequest
from edge_runner.core.generation import GenerationChunk, GenerationRequest, SamplingParams, Usage
from edge_runner.protocol import openai_tools as tools
from edge_runner.protocol.json_body import json_int
from edge_runner.protocol.openai import embedding_texts, sampler_extras, schema_text

#: Ollama's own defaults (its Modelfile parameters), used when ``options`` leaves them out
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.9
MAX_STOP_STRINGS = 16
ROLES = ("system", "user", "assistant", "tool")


def rfc3339(seconds: float) -> str:
    """A Unix time as Ollama prints times (RFC 3339, UTC, microseconds)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _number(options: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = options.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise MalformedRequest(f"'options.{key}' must be a number between {low} and {high}")
    return float(value)


def _max_tokens(options: Mapping[str, Any], limit: int) -> int:
    """``num_predict``: a positive cap, or -1 (until the end) / -2 (fill the context), both bounded by ``limit``."""
    value = options.get("num_predict")
    if value is None:
        return limit
    number = json_int(value)
    if number is None or number == 0 or number < -2:
        raise MalformedRequest("'options.num_predict' must be a positive integer, -1 (no limit) or -2 (fill context)")
    return limit if number < 0 else min(number, limit)


def _stop(options: Mapping[str, Any]) -> tuple[str, ...]:
    stop = options.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOP_STRINGS:
        raise MalformedRequest(f"'options.stop' must be a list of up to {MAX_STOP_STRINGS} strings")
    return tuple(s for s in stops if s)


def _json_mode(body: Mapping[str, Any]) -> tuple[bool, str | None]:
    """``format``: ``"json"`` (any JSON object) or a JSON schema the answer must follow (a grammar enforces it)."""
    fmt = body.get("format")
    if fmt in (None, ""):
        return False, None
    if fmt == "json":
        return True, None
    if isinstance(fmt, dict):
        return True, schema_text(fmt, "format")
    raise MalformedRequest("'format' must be \"json\" or a JSON schema object")


def sampling_params(body: Mapping[str, Any], max_new_tokens: int) -> SamplingParams:
    """``options`` (temperature, top_p, top_k, min_p, repeat/presence/frequency penalties, seed, num_predict,
    stop) and ``format`` of an Ollama body.

    Other options (num_ctx, mirostat...) are accepted and ignored, as Ollama itself ignores options a
    runner does not use.
    """
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise MalformedRequest("'options' must be an object, e.g. {\"temperature\": 0}")
    seed = options.get("seed")
    if seed is not None:
        seed = json_int(seed)
        if seed is None:
            raise MalformedRequest("'options.seed' must be an integer")
    json_mode, json_schema = _json_mode(body)
    return SamplingParams(
        max_tokens=_max_tokens(options, max(1, max_new_tokens)),
        temperature=_number(options, "temperature", DEFAULT_TEMPERATURE, 0.0, 2.0),
        top_p=_number(options, "top_p", DEFAULT_TOP_P, 0.0, 1.0),
        seed=seed,
        stop=_stop(options),
        json_mode=json_mode,
        json_schema=json_schema,
        **sampler_extras(options, "options."),
    )


def _refuse_unsupported(body: Mapping[str, Any], fields: Sequence[str]) -> None:
    """Fields that would change the answer and that we cannot honour are errors, never silently dropped."""
    for key in fields:
        if body.get(key):
            raise MalformedRequest(f"'{key}' is not supported by edge-runner's Ollama API")


def chat_messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    """``messages`` of ``/api/chat``: ``{role, content}`` with string content (no images); an assistant's
    ``tool_calls`` and ``tool`` results are rendered as text (``openai_tools.flatten_tool_messages``)."""
    messages = body.get("messages")
    if messages is None:
        return []
    if not isinstance(messages, list):
        raise MalformedRequest("'messages' must be a list of {role, content} objects")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InvalidInput(f"messages[{i}] must be an object whose 'role' is one of {', '.join(ROLES)}")
        if message.get("images"):
            raise InvalidInput(f"messages[{i}]: images are not supported by this model")
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise InvalidInput(f"messages[{i}].content must be a string")
        out.append({"role": message["role"], "content": content})
    return tools.flatten_tool_messages(out, messages)


def tool_spec(body: Mapping[str, Any]) -> tools.ToolSpec | None:
    """``tools`` of ``/api/chat`` (OpenAI's function shape); Ollama has no ``tool_choice``: the model may
    call tools or answer in text."""
    if body.get("tool_choice") is not None:
        raise MalformedRequest("'tool_choice' is not part of Ollama's API; use /v1/chat/completions for it")
    return tools.tool_spec({"tools": body.get("tools")})


def chat_request(body: Mapping[str, Any], max_new_tokens: int) -> GenerationRequest:
    """``/api/chat`` body -> GenerationRequest (the model's chat template applies)."""
    _refuse_unsupported(body, ("think", "logprobs"))
    messages = chat_messages(body)
    if not messages:
        raise MalformedRequest("'messages' must not be empty (an empty list only loads or unloads the model)")
    params = sampling_params(body, max_new_tokens)
    spec = tool_spec(body)
    if spec is not None:
        messages, params = tools.constrain(messages, params, spec)
    return GenerationRequest(messages=tuple(messages), params=params)


def generate_request(body: Mapping[str, Any], max_new_tokens: int) -> GenerationRequest:
    """``/api/generate`` body -> GenerationRequest.

    As in Ollama, the prompt goes through the model's chat template as a user turn (after ``system``)
    unless ``raw`` is true, in which case it is continued as it is.
    """
    _refuse_unsupported(body, ("images", "suffix", "context", "template", "think", "logprobs"))
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise MalformedRequest("'prompt' must be a non-empty string (an empty one only loads or unloads the model)")
    params = sampling_params(body, max_new_tokens)
    if body.get("raw"):
        return GenerationRequest(prompt=prompt, params=params)
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise MalformedRequest("'system' must be a string")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return GenerationRequest(messages=tuple(messages), params=params)


def wants_stream(body: Mapping[str, Any]) -> bool:
    """Ollama streams unless ``stream`` is false."""
    return body.get("stream") is not False


def is_load_only(body: Mapping[str, Any], chat: bool) -> bool:
    """An empty ``messages`` / ``prompt``: Ollama's way to load (or, with keep_alive 0, unload) a model."""
    return not body.get("messages") if chat else not body.get("prompt")


def embed_texts(body: Mapping[str, Any], legacy: bool) -> list[str]:
    """``input`` of ``/api/embed`` (a string or a list), or ``prompt`` of the older ``/api/embeddings``."""
    if legacy:
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise MalformedRequest("'prompt' must be a non-empty string")
        return [prompt]
    return embedding_texts({"input": body.get("input")})


def embed_dimensions(body: Mapping[str, Any]) -> int | None:
    """``dimensions``: keep the first N components (re-normalised), as Ollama does."""
    value = body.get("dimensions")
    if value is None:
        return None
    number = json_int(value)
    if number is None or number < 1:
        raise MalformedRequest("'dimensions' must be a positive integer")
    return number


def embed_response(
    model: str, vectors: np.ndarray, tokens: int, dimensions: int | None, timings: Timings
) -> dict[str, Any]:
    """The ``/api/embed`` answer: one unit-length row per input."""
    rows = np.asarray(vectors, dtype=np.float32)
    if dimensions is not None:
        if dimensions > rows.shape[1]:
            raise InvalidInput(f"'dimensions' is {dimensions}; the model's embeddings have {rows.shape[1]}")
        rows = rows[:, :dimensions]
        rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    body: dict[str, Any] = {"model": model, "embeddings": rows.tolist()}
    body.update(timings.to_ollama(tokens, None))
    return body


@dataclass
class Timings:
    """Wall-clock marks of one request, reported in nanoseconds as Ollama does."""

    start: float = field(default_factory=time.perf_counter)
    loaded: float | None = None  # the model was ready (load included) and the request queued
    first: float | None = None  # the first token arrived (prompt evaluated)

    def mark_loaded(self) -> None:
        """The engine has the request (the model is loaded)."""
        self.loaded = time.perf_counter()

    def mark_token(self) -> None:
        """A token arrived; the first one ends prompt evaluation."""
        if self.first is None:
            self.first = time.perf_counter()

    def to_ollama(self, prompt_tokens: int, completion_tokens: int | None) -> dict[str, Any]:
        """``total_duration``, ``load_duration``, ``prompt_eval_*`` and (for generation) ``eval_*``."""
        now = time.perf_counter()
        loaded = self.loaded or self.start
        first = self.first or now
        out: dict[str, Any] = {
            "total_duration": int((now - self.start) * 1e9),
            "load_duration": int((loaded - self.start) * 1e9),
            "prompt_eval_count": prompt_tokens,
        }
        if completion_tokens is not None:
            out["prompt_eval_duration"] = int(max(0.0, first - loaded) * 1e9)
            out["eval_count"] = completion_tokens
            out["eval_duration"] = int(max(0.0, now - first) * 1e9)
        return out


def tool_message(text: str) -> dict[str, Any]:
    """The assistant message of a tools request: the model's JSON answer as ``tool_calls`` (arguments as
    objects, as Ollama sends them) or as plain content."""
    content, calls = tools.parse_answer(text)
    if calls is None:
        return {"role": "assistant", "content": content or ""}
    tool_calls = [{"function": {"index": i, "name": n, "arguments": a}} for i, (n, a) in enumerate(calls)]
    return {"role": "assistant", "content": "", "tool_calls": tool_calls}


class Responder:
    """Builds the NDJSON objects of one ``/api/chat`` or ``/api/generate`` request.

    With ``tools`` the model's text is its JSON answer: streamed, it is held back until whole, then sent
    as one ``done: false`` object (content or ``tool_calls``) before the closing one.
    """

    def __init__(self, model: str, chat: bool, timings: Timings, tools: bool = False) -> None:
        self.model = model  # the name as the client sent it, as Ollama echoes it
        self.chat = chat
        self.timings = timings
        self.tools = tools

    def _base(self, text: str, done: bool, message: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "created_at": rfc3339(time.time())}
        if self.chat:
            body["message"] = message or {"role": "assistant", "content": text}
        else:
            body["response"] = text
        body["done"] = done
        return body

    def held(self, text: str) -> dict[str, Any]:
        """With tools: the whole answer as one streamed ``done: false`` object."""
        return self._base("", False, tool_message(text))

    def piece(self, text: str) -> dict[str, Any]:
        """One streamed ``done: false`` object."""
        self.timings.mark_token()
        return self._base(text, False)

    def final(self, reason: str, usage: Usage | None, text: str = "", whole: bool = False) -> dict[str, Any]:
        """The closing ``done: true`` object with ``done_reason``, token counts and timings; ``whole``: it
        carries the whole answer (``stream: false``), read as a tools answer when the request had tools."""
        body = self._base(text, True, tool_message(text) if whole and self.tools else None)
        body["done_reason"] = reason
        usage = usage or Usage()
        body.update(self.timings.to_ollama(usage.prompt_tokens, usage.completion_tokens))
        return body

    def complete(self, chunks: Iterator[GenerationChunk]) -> dict[str, Any]:
        """Drain the stream into the single object of ``stream: false``."""
        parts, reason, usage = [], "stop", None
        for chunk in chunks:
            if chunk.text:
                self.timings.mark_token()
                parts.append(chunk.text)
            if chunk.finish_reason is not None:
                reason, usage = chunk.finish_reason, chunk.usage
        return self.final(reason, usage, "".join(parts), whole=True)

    def lifecycle(self, reason: str) -> dict[str, Any]:
        """The answer to a load-only (``done_reason: load``) or unload (``unload``) request."""
        body = self._base("", True)
        body["done_reason"] = reason
        return body
