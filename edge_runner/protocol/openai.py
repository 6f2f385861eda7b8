"""OpenAI request parsing and response shaping, free of HTTP: the routes stay thin.

Parsing turns a decoded JSON body into our ``GenerationRequest`` (raising ``MalformedRequest`` with
the offending field named); shaping turns ``GenerationChunk``s into the ``chat.completion``,
``chat.completion.chunk`` and ``text_completion`` objects the official client expects.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from edge_runner.core.errors import InvalidInput, MalformedRequest
from edge_runner.core.generation import GenerationChunk, GenerationRequest, SamplingParams, TokenLogprob, Usage
from edge_runner.protocol import openai_tools as tools
from edge_runner.protocol.json_body import json_int

MAX_STOP_STRINGS = 4
#: as OpenAI's embeddings endpoint: more inputs per request are refused before any work
MAX_EMBEDDING_INPUTS = 2048
#: texts are padded to the longest in a batch: one long text must not make every row long (memory = rows x longest)
MAX_EMBEDDING_CHARS = 32_768
MAX_EMBEDDING_TOTAL_CHARS = 1_000_000
#: a response schema turns into a grammar before any work: keep that bounded
MAX_SCHEMA_CHARS = 32_768
MAX_TOP_K = 1000
MAX_TOP_LOGPROBS = 20
MAX_LEGACY_LOGPROBS = 5
#: (field, low, high) of the sampling knobs beyond temperature/top_p
PENALTY_BOUNDS = (
    ("min_p", 0.0, 1.0),
    ("repeat_penalty", 0.0, 2.0),
    ("presence_penalty", -2.0, 2.0),
    ("frequency_penalty", -2.0, 2.0),
)


def _content(message: dict[str, Any]) -> str:
    """OpenAI content may be a string or a list of parts; only text parts are supported."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise InvalidInput("only text content parts are supported by this model")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise InvalidInput("message content must be a string or a list of text parts")


def normalize_messages(messages: Sequence[Any]) -> list[dict[str, str]]:
    """Validate OpenAI chat messages and flatten their content to strings."""
    if not messages:
        raise InvalidInput("'messages' must be a non-empty list")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidInput(f"messages[{i}] must be an object with a string 'role'")
        out.append({"role": message["role"], "content": _content(message)})
    return out


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float, where: str = "") -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise MalformedRequest(f"'{where}{key}' must be a number between {low} and {high}")
    return float(value)


def _max_tokens(body: dict[str, Any], limit: int) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return limit
    number = json_int(value)
    if number is None or number < 1:
        raise MalformedRequest("'max_tokens' must be a positive integer")
    return min(number, limit)


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOP_STRINGS:
        raise MalformedRequest(f"'stop' must be a string or a list of up to {MAX_STOP_STRINGS} strings")
    return tuple(stops)


def _json_mode(body: dict[str, Any]) -> tuple[bool, str | None]:
    """``response_format``: text, any JSON object, or a JSON Schema the answer must follow (``strict`` or
    not, the grammar enforces it)."""
    fmt = body.get("response_format")
    if fmt is None:
        return False, None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise MalformedRequest("'response_format.type' must be 'text', 'json_object' or 'json_schema'")
    if kind != "json_schema":
        return kind == "json_object", None
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise MalformedRequest('\'response_format.json_schema\' must be {"name": ..., "schema": {...}}')
    return True, schema_text(spec.get("schema"), "response_format.json_schema.schema")


def schema_text(schema: Any, where: str) -> str | None:
    """A JSON Schema object as JSON text, keys in the client's order (the grammar writes properties in that
    order); None for an empty or absent one: any JSON object."""
    if schema is None or schema == {}:
        return None
    if not isinstance(schema, dict):
        raise MalformedRequest(f"'{where}' must be a JSON Schema object")
    text = json.dumps(schema, separators=(",", ":"))
    if len(text) > MAX_SCHEMA_CHARS:
        raise MalformedRequest(f"'{where}' is {len(text)} characters of JSON; at most {MAX_SCHEMA_CHARS}")
    return text


def sampler_extras(values: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``top_k``, ``min_p``, ``repeat_penalty``, ``presence_penalty``, ``frequency_penalty`` (the names
    OpenAI, Ollama and llama.cpp's server share), checked; absent ones keep SamplingParams' defaults."""
    out: dict[str, Any] = {}
    if values.get("top_k") is not None:
        top_k = json_int(values["top_k"])
        if top_k is None or not 0 <= top_k <= MAX_TOP_K:
            raise MalformedRequest(f"'{where}top_k' must be an integer between 0 (off) and {MAX_TOP_K}")
        out["top_k"] = top_k
    for key, low, high in PENALTY_BOUNDS:
        if values.get(key) is not None:
            out[key] = _number(dict(values), key, 0.0, low, high, where)
    return out


#: most entries accepted in ``logit_bias``
MAX_LOGIT_BIAS = 1024


def logit_bias(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``logit_bias``: ``{"token id": bias}`` with biases in [-100, 100] (ids are checked against the
    model's vocabulary when the sampler is built)."""
    raw = body.get("logit_bias")
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_LOGIT_BIAS:
        raise MalformedRequest(f"'logit_bias' must be an object of at most {MAX_LOGIT_BIAS} token ids to biases")
    out = []
    for key, value in raw.items():
        if not (key.isascii() and key.isdigit() and len(key) <= 9):
            raise MalformedRequest(f"'logit_bias' keys are token ids (digits), got {key!r}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not -100 <= value <= 100:
            raise MalformedRequest(f"'logit_bias.{key}' must be a number between -100 and 100")
        out.append((int(key), float(value)))
    return {"logit_bias": tuple(sorted(out))}


def logprob_request(body: dict[str, Any]) -> dict[str, Any]:
    """Chat's ``logprobs: true`` + ``top_logprobs`` (0-20), or completions' legacy ``logprobs: N`` (0-5)."""
    value, top = body.get("logprobs"), body.get("top_logprobs")
    if value is None or value is False:
        if top:
            raise MalformedRequest("'top_logprobs' needs 'logprobs': true")
        return {}
    if value is True:
        count = 0 if top is None else json_int(top)
        if count is None or not 0 <= count <= MAX_TOP_LOGPROBS:
            raise MalformedRequest(f"'top_logprobs' must be an integer between 0 and {MAX_TOP_LOGPROBS}")
        return {"logprobs": True, "top_logprobs": count}
    count = json_int(value)
    if count is None or not 0 <= count <= MAX_LEGACY_LOGPROBS:
        raise MalformedRequest(
            f"'logprobs' must be true/false (chat) or an integer 0-{MAX_LEGACY_LOGPROBS} (completions)"
        )
    return {"logprobs": True, "top_logprobs": count}


def _token_text(token: bytes) -> str:
    return token.decode("utf-8", errors="replace")


def logprob_content(entries: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    """Chat's ``logprobs.content``: one entry per token with its bytes and the top alternatives."""
    return [
        {
            "token": _token_text(e.token),
            "logprob": e.logprob,
            "bytes": list(e.token),
            "top_logprobs": [{"token": _token_text(t), "logprob": v, "bytes": list(t)} for t, v in e.top],
        }
        for e in entries
    ]


def legacy_logprobs(entries: Sequence[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """Completions' older ``logprobs`` object: parallel lists, text offsets from ``offset``."""
    offsets, at = [], offset
    for e in entries:
        offsets.append(at)
        at += len(_token_text(e.token))
    return {
        "tokens": [_token_text(e.token) for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{_token_text(t): v for t, v in e.top} for e in entries],
        "text_offset": offsets,
    }


def sampling_params(body: dict[str, Any], max_new_tokens: int) -> SamplingParams:
    """Sampling settings of an OpenAI body; ``max_new_tokens`` caps ``max_tokens``."""
    if body.get("n", 1) != 1:
        raise MalformedRequest("only 'n': 1 is supported")
    seed = body.get("seed")
    if seed is not None:
        seed = json_int(seed)
        if seed is None:
            raise MalformedRequest("'seed' must be an integer")
    json_mode, json_schema = _json_mode(body)
    return SamplingParams(
        max_tokens=_max_tokens(body, max(1, max_new_tokens)),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        seed=seed,
        stop=_stop(body),
        json_mode=json_mode,
        json_schema=json_schema,
        ignore_eos=bool(body.get("ignore_eos", False)),
        **logprob_request(body),
        **sampler_extras(body),
        **logit_bias(body),
    )


def chat_request(body: dict[str, Any], max_new_tokens: int) -> GenerationRequest:
    """``/v1/chat/completions`` body -> GenerationRequest (tools, if any, per ``openai_tools``)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise MalformedRequest("'messages' must be a list of {role, content} objects")
    flat = tools.flatten_tool_messages(normalize_messages(messages), messages)
    params = sampling_params(body, max_new_tokens)
    spec = tools.tool_spec(body)
    if spec is not None:
        flat, params = tools.constrain(flat, params, spec)
    return GenerationRequest(messages=tuple(flat), params=params)


def completion_request(body: dict[str, Any], max_new_tokens: int) -> GenerationRequest:
    """``/v1/completions`` body -> GenerationRequest (one string prompt)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise MalformedRequest("'prompt' must be a string (or a list holding one string)")
    if body.get("echo"):
        raise MalformedRequest("'echo' is not supported")
    return GenerationRequest(prompt=prompt, params=sampling_params(body, max_new_tokens))


def stream_options(body: dict[str, Any]) -> bool:
    """Whether a streamed answer ends with a usage chunk."""
    options = body.get("stream_options") or {}
    return bool(isinstance(options, dict) and options.get("include_usage"))


class Responder:
    """Builds the response objects of one request (shared id, timestamp and model name).

    With ``tools`` the model's text is its JSON answer: it becomes ``tool_calls`` or content (streams are
    held back until the answer is whole, then sent as one delta).
    """

    def __init__(self, model: str, chat: bool, tools: bool = False, logprobs: bool = False) -> None:
        self.model = model
        self.chat = chat
        self.tools = tools
        self.logprobs = logprobs
        self._offset = 0  # text offset of the next legacy logprob entry (completions)
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def _envelope(self, obj: str, choices: list[dict[str, Any]], usage: Usage | None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "object": obj, "created": self.created, "model": self.model}
        body["choices"] = choices
        body["system_fingerprint"] = "edge-runner"
        if usage is not None:
            body["usage"] = usage.to_openai()
        return body

    def message(self, text: str, reason: str) -> tuple[dict[str, Any], str]:
        """The assistant message of ``text`` and its finish reason (``tool_calls`` when it calls tools)."""
        if not self.tools:
            return {"role": "assistant", "content": text}, reason
        content, calls = tools.read_answer(text)
        if calls is None:
            return {"role": "assistant", "content": content}, reason
        return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"

    def _logprobs(self, entries: Sequence[TokenLogprob]) -> dict[str, Any] | None:
        if not self.logprobs:
            return None
        if self.chat:
            return {"content": logprob_content(entries)}
        out = legacy_logprobs(entries, self._offset)
        self._offset = out["text_offset"][-1] + len(out["tokens"][-1]) if entries else self._offset
        return out

    def complete(self, chunks: Iterator[GenerationChunk]) -> dict[str, Any]:
        """Drain the stream into one non-streaming response."""
        parts, reason, usage = [], "stop", Usage()
        entries: list[TokenLogprob] = []
        for chunk in chunks:
            parts.append(chunk.text)
            entries += chunk.logprobs
            if chunk.finish_reason is not None:
                reason, usage = chunk.finish_reason, chunk.usage or usage
        text = "".join(parts)
        if self.chat:
            message, reason = self.message(text, reason)
            choice = {"index": 0, "message": message, "finish_reason": reason}
            return self._envelope("chat.completion", [{**choice, "logprobs": self._logprobs(entries)}], usage)
        choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": self._logprobs(entries)}
        return self._envelope("text_completion", [choice], usage)

    def chunk(
        self, text: str | None, reason: str | None = None, first: bool = False, logprobs: Sequence[TokenLogprob] = ()
    ) -> dict[str, Any]:
        """One streamed chunk object (with the log-probabilities of its tokens when asked)."""
        values = self._logprobs(logprobs) if logprobs else None
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": values}
            return self._envelope("chat.completion.chunk", [choice], None)
        choice = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": values}
        return self._envelope("text_completion", [choice], None)

    def closing_chunks(self, text: str, reason: str) -> list[dict[str, Any]]:
        """With tools: the held-back answer as one delta (content, or every tool call), then the finish."""
        message, reason = self.message(text, reason)
        delta: dict[str, Any] = {}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        else:
            delta["content"] = message["content"]
        body = {"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}
        return [self._envelope("chat.completion.chunk", [body], None), self.chunk(None, reason)]

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        """The final chunk of ``stream_options.include_usage``: no choices, just usage."""
        return self._envelope("chat.completion.chunk" if self.chat else "text_completion", [], usage)


def embedding_texts(body: dict[str, Any]) -> list[str]:
    """``input`` of ``/v1/embeddings``: a string or a non-empty list of strings."""
    data = body.get("input")
    texts = [data] if isinstance(data, str) else data
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise MalformedRequest("'input' must be a string or a non-empty list of strings (token arrays unsupported)")
    if any(not t for t in texts):
        raise MalformedRequest("'input' strings must not be empty")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise MalformedRequest(f"'input' has {len(texts)} strings; at most {MAX_EMBEDDING_INPUTS} per request")
    longest = max(len(t) for t in texts)
    if longest > MAX_EMBEDDING_CHARS:
        raise MalformedRequest(
            f"an 'input' string has {longest} characters; at most {MAX_EMBEDDING_CHARS} (split long documents)"
        )
    if sum(len(t) for t in texts) > MAX_EMBEDDING_TOTAL_CHARS:
        raise MalformedRequest(
            f"'input' totals more than {MAX_EMBEDDING_TOTAL_CHARS} characters; send fewer per request"
        )
    return texts


def embeddings_response(model: str, vectors: np.ndarray, encoding: str, prompt_tokens: int) -> dict[str, Any]:
    """The ``list`` of ``embedding`` objects, as floats or base64 little-endian float32."""
    if encoding not in ("float", "base64"):
        raise MalformedRequest("'encoding_format' must be 'float' or 'base64'")
    data = []
    for index, row in enumerate(np.asarray(vectors, dtype="<f4")):
        value: Any = base64.b64encode(row.tobytes()).decode() if encoding == "base64" else row.tolist()
        data.append({"object": "embedding", "index": index, "embedding": value})
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}
