"""Anthropic Messages API shapes, free of HTTP: ``POST /v1/messages`` parsing, responses and SSE events.

Parsing turns a Messages body (``system``, ``messages`` of text, ``tool_use`` and ``tool_result`` content
blocks, the required ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``stop_sequences``,
``output_config.format``, ``tools`` with ``tool_choice``) into our ``GenerationRequest``. Building gives the
``message`` object and the documented stream: ``message_start``, ``content_block_start``, ``ping``,
``content_block_delta`` (``text_delta``)..., ``content_block_stop``, ``message_delta`` (stop reason and
usage), ``message_stop``. Tools go through ``openai_tools`` (the prompt and grammar every protocol shares):
a call is a ``tool_use`` block (``stop_reason: "tool_use"``), streamed as ``content_block_start`` with an
empty ``input``, one ``input_json_delta`` and ``content_block_stop``; the answer is held back until whole.
Errors use Anthropic's ``{"type": "error", "error": {"type", "message"}}``, with the error type named
from the HTTP status as Anthropic does. The checked-in source of the ``anthropic`` client is the reference.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from edge_runner.core.errors import InvalidInput, MalformedRequest
from edge_runner.core.generation import GenerationChunk, GenerationRequest, SamplingParams, Usage
from edge_runner.protocol import openai_tools as tools
from edge_runner.protocol.json_body import json_int
from edge_runner.protocol.openai import sampler_extras, schema_text

MAX_STOP_SEQUENCES = 16
#: Anthropic's error types by HTTP status
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}
#: our finish reasons -> Anthropic's stop reasons (the engine does not say which stop string matched)
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    return ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")


def error_body(status: int, message: str) -> dict[str, Any]:
    """The error object of every non-2xx answer on ``/v1/messages`` (and of an ``error`` stream event)."""
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def _text(content: Any, where: str, calls: dict[str, str] | None = None) -> str:
    """A string, or a list of content blocks joined: ``text``; with ``calls`` (a conversation's tool_use
    ids -> names, filled as they appear) also ``tool_use`` (as the JSON answer the model writes) and
    ``tool_result`` (as the text a result is given in); other blocks are refused."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidInput(f"{where} must be a string or a list of content blocks")
    parts, used, tool_blocks_seen = [], [], False
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif kind == "tool_use" and calls is not None and isinstance(block.get("name"), str):
            calls[str(block.get("id"))] = block["name"]
            used.append((block["name"], block.get("input") or {}))
        elif kind == "tool_result" and calls is not None:
            result = _text(block.get("content") or "", f"{where}[{i}].content")
            prefix = "error: " if block.get("is_error") else ""
            call = str(block.get("tool_use_id"))
            parts.append(tools.result_text(calls.get(call, call), prefix + result))
            tool_blocks_seen = True
        else:
            raise InvalidInput(
                f"{where}[{i}]: only text content blocks (and tool_use / tool_result) are supported by this model "
                f"(got {kind!r})"
            )
    if used:
        parts.append(tools.calls_text(used))
        tool_blocks_seen = True
    return ("\n" if tool_blocks_seen else "").join(parts)  # text blocks of one turn are one text


def _messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise MalformedRequest("'messages' must be a non-empty list of {role, content} objects")
    out = []
    system = body.get("system")
    if system is not None:
        out.append({"role": "system", "content": _text(system, "system")})
    calls: dict[str, str] = {}
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidInput(f"messages[{i}] must be an object whose 'role' is 'user' or 'assistant'")
        content = _text(message.get("content"), f"messages[{i}].content", calls)
        out.append({"role": message["role"], "content": content})
    if out[-1]["role"] != "user":
        raise InvalidInput("the last message must be the user's (continuing an assistant prefill is not supported)")
    return out


def _number(body: Mapping[str, Any], key: str, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise MalformedRequest(f"'{key}' must be a number between 0 and 1")
    return float(value)


def _max_tokens(body: Mapping[str, Any], limit: int) -> int:
    """``max_tokens``; 0 (warm the prompt cache, answer nothing) runs the prompt with one token, then drops it."""
    number = json_int(body.get("max_tokens"))
    if number is None or number < 0:
        raise MalformedRequest("'max_tokens' is required: a non-negative integer")
    return max(1, min(number, limit))


def prewarm_only(body: Mapping[str, Any]) -> bool:
    """``max_tokens: 0``: fill the prompt cache without answering."""
    return json_int(body.get("max_tokens")) == 0


def _json_mode(body: Mapping[str, Any]) -> tuple[bool, str | None]:
    """``output_config.format`` (a JSON schema): the answer must follow it (a grammar enforces it)."""
    config = body.get("output_config") or {}
    if not isinstance(config, dict):
        raise MalformedRequest("'output_config' must be an object")
    fmt = config.get("format")
    if fmt is None:
        return False, None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise MalformedRequest('\'output_config.format\' must be {"type": "json_schema", "schema": {...}}')
    return True, schema_text(fmt.get("schema"), "output_config.format.schema")


def _stop_sequences(body: Mapping[str, Any]) -> tuple[str, ...]:
    stops = body.get("stop_sequences")
    if stops is None:
        return ()
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOP_SEQUENCES:
        raise MalformedRequest(f"'stop_sequences' must be a list of up to {MAX_STOP_SEQUENCES} strings")
    return tuple(s for s in stops if s)


#: Anthropic's ``tool_choice`` types -> OpenAI's, which ``openai_tools.tool_spec`` reads
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def tool_spec(body: Mapping[str, Any]) -> tools.ToolSpec | None:
    """``tools`` (``name``, ``description``, ``input_schema``) and ``tool_choice`` (``auto``, ``any``,
    ``tool`` with a ``name``, ``none``; ``disable_parallel_tool_use``) checked; None when no tool may be called."""
    declared, choice = body.get("tools"), body.get("tool_choice")
    if not declared and choice is None:
        return None
    if declared is not None and not isinstance(declared, list):
        raise MalformedRequest("'tools' must be a list of {name, description, input_schema} objects")
    functions = []
    for i, tool in enumerate(declared or []):
        if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
            raise MalformedRequest(f"tools[{i}]: only client tools ({{name, description, input_schema}}) are supported")
        if not isinstance(tool.get("input_schema"), dict):
            raise MalformedRequest(f"tools[{i}].input_schema must be a JSON Schema object")
        function = {
            "name": tool.get("name"),
            "description": tool.get("description", ""),
            "parameters": tool["input_schema"],
        }
        functions.append({"type": "function", "function": function})
    choice = {"type": "auto"} if choice is None else choice
    if not isinstance(choice, dict) or choice.get("type") not in (*TOOL_CHOICES, "tool"):
        raise MalformedRequest('\'tool_choice\' must be {"type": "auto" | "any" | "tool" | "none"}')
    if choice["type"] == "tool":
        mapped: Any = {"type": "function", "function": {"name": choice.get("name")}}
    else:
        mapped = TOOL_CHOICES[choice["type"]]
    parallel = choice.get("disable_parallel_tool_use") is not True
    return tools.tool_spec({"tools": functions, "tool_choice": mapped, "parallel_tool_calls": parallel})


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled", "adaptive"):
        raise MalformedRequest("thinking is not supported by this model: omit 'thinking' or use adaptive/disabled")


def messages_request(body: Mapping[str, Any], max_new_tokens: int) -> GenerationRequest:
    """``/v1/messages`` body -> GenerationRequest; ``max_new_tokens`` caps ``max_tokens``."""
    _refuse_unsupported(body)
    json_mode, json_schema = _json_mode(body)
    params = SamplingParams(
        max_tokens=_max_tokens(body, max(1, max_new_tokens)),
        temperature=_number(body, "temperature", 1.0),
        top_p=_number(body, "top_p", 1.0),
        stop=_stop_sequences(body),
        json_mode=json_mode,
        json_schema=json_schema,
        **sampler_extras({"top_k": body.get("top_k")}),
    )
    messages = _messages(body)
    spec = tool_spec(body)
    if spec is not None:
        messages, params = tools.constrain(messages, params, spec)
    return GenerationRequest(messages=tuple(messages), params=params)


def _usage(usage: Usage | None) -> dict[str, Any]:
    """Anthropic counts prompt tokens read from the cache apart: input + cache read = the whole prompt."""
    usage = usage or Usage()
    return {
        "input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event with its ``event:`` name, as Anthropic streams them."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def tool_blocks(text: str) -> tuple[list[dict[str, Any]], bool]:
    """The content blocks of a tools answer (a text block, or a ``tool_use`` block per call) and whether
    the model called tools."""
    content, calls = tools.parse_answer(text)
    if calls is None:
        return [{"type": "text", "text": content or ""}], False
    uses = [{"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:24], "name": n, "input": a} for n, a in calls]
    return uses, True


class Responder:
    """Builds the message object, or the stream events, of one request (shared id and model name).

    With ``prewarm`` (``max_tokens: 0``) the one generated token is dropped: no content, 0 output tokens.
    With ``tools`` the model's text is its JSON answer, held back until whole (``delta`` keeps it).
    """

    def __init__(self, model: str, prewarm: bool = False, tools: bool = False) -> None:
        self.model = model  # the name as the client sent it
        self.prewarm = prewarm
        self.tools = tools and not prewarm
        self.id = "msg_" + uuid.uuid4().hex[:24]
        self._held: list[str] = []

    def _message(self, content: list[dict[str, Any]], reason: str | None, usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": reason,
            "stop_sequence": None,
            "usage": usage,
        }

    def _reason(self, reason: str, called: bool = False) -> str:
        if called:
            return "tool_use"
        return "max_tokens" if self.prewarm else STOP_REASONS.get(reason, "end_turn")

    def _usage(self, usage: Usage | None) -> dict[str, Any]:
        out = _usage(usage)
        if self.prewarm:
            out["output_tokens"] = 0
        return out

    def complete(self, chunks: Iterator[GenerationChunk]) -> dict[str, Any]:
        """Drain the stream into one ``message``."""
        parts, reason, usage = [], "stop", None
        for chunk in chunks:
            parts.append(chunk.text)
            if chunk.finish_reason is not None:
                reason, usage = chunk.finish_reason, chunk.usage
        called = False
        if self.tools:
            content, called = tool_blocks("".join(parts))
        else:
            content = [] if self.prewarm else [{"type": "text", "text": "".join(parts)}]
        return self._message(content, self._reason(reason, called), self._usage(usage))

    def opening(self) -> list[bytes]:
        """``message_start`` (token counts come with ``message_delta``), ``content_block_start``, ``ping``."""
        start = self._message([], None, _usage(None))
        events = [sse("message_start", {"type": "message_start", "message": start})]
        if not self.prewarm and not self.tools:  # a tools answer's blocks are known once it is whole
            block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            events.append(sse("content_block_start", block))
        events.append(sse("ping", {"type": "ping"}))
        return events

    def delta(self, text: str) -> bytes:
        """One ``content_block_delta`` with a ``text_delta`` (nothing when pre-warming)."""
        if self.tools:
            self._held.append(text)
            return b""
        if self.prewarm or not text:
            return b""
        return self._delta(0, {"type": "text_delta", "text": text})

    @staticmethod
    def _delta(index: int, delta: dict[str, Any]) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def _held_blocks(self) -> tuple[list[bytes], bool]:
        """A tools answer's blocks, each started, given in one delta and stopped."""
        blocks, called = tool_blocks("".join(self._held))
        events = []
        for index, block in enumerate(blocks):
            start: dict[str, Any]
            delta: dict[str, Any]
            if block["type"] == "text":
                start, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block["text"]}
            else:
                start = {**block, "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"], ensure_ascii=False)}
            events.append(
                sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
            )
            events.append(self._delta(index, delta))
            events.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        return events, called

    def closing(self, reason: str, usage: Usage | None) -> list[bytes]:
        """``content_block_stop``, ``message_delta`` (stop reason, cumulative usage), ``message_stop``."""
        called = False
        if self.tools:
            events, called = self._held_blocks()
        else:
            events = [] if self.prewarm else [sse("content_block_stop", {"type": "content_block_stop", "index": 0})]
        delta = {"stop_reason": self._reason(reason, called), "stop_sequence": None}
        events.append(sse("message_delta", {"type": "message_delta", "delta": delta, "usage": self._usage(usage)}))
        events.append(sse("message_stop", {"type": "message_stop"}))
        return events

    @staticmethod
    def error(status: int, message: str) -> bytes:
        """An ``error`` event: the stream broke after the headers were sent."""
        return sse("error", error_body(status, message))
