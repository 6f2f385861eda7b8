"""Tool calling for models without a native tool format: OpenAI's ``tools`` / ``tool_choice`` /
``tool_calls``, and the same machinery under Ollama's ``/api/chat`` and Anthropic's ``tool_use`` blocks.

The model is told about the tools in a system message and answers with one JSON object, which a grammar
made from the tools' parameter schemas enforces (the generic approach llama.cpp's server takes for
templates without tool support):

- ``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` to call tools (``required``, a named function, or
  ``auto`` when the model chooses to);
- ``{"response": "..."}`` to answer in text (``auto`` only).

The answer is turned back into OpenAI's ``tool_calls`` (``finish_reason: "tool_calls"``) or plain content.
Earlier assistant ``tool_calls`` and ``tool`` results in ``messages`` are rendered as text the same way, so
a round trip reads naturally to the model. ``tool_choice: "none"`` leaves the request untouched.

``constrain`` (the prompt and the grammar) and ``parse_answer`` (calls with their arguments as objects) are
what every protocol shares; ``read_answer`` shapes the calls as OpenAI's, ``protocol.ollama`` and
``protocol.anthropic`` as theirs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from edge_runner.core.errors import InvalidInput, MalformedRequest
from edge_runner.core.generation import SamplingParams

MAX_TOOLS = 64
#: the answer's schema turns into a grammar before any work: bounded like a response_format schema
MAX_SCHEMA_CHARS = 32_768
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True)
class ToolSpec:
    """The tools of one request and how the model may use them."""

    tools: tuple[dict[str, Any], ...]  # {"name", "description", "parameters"}
    mode: str  # "auto" or "required" (a named function is "required" with one tool)
    parallel: bool = True  # several calls in one answer (at most one per tool, so small models stop)

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of the model's answer."""
        calls = [
            {
                "type": "object",
                "properties": {"name": {"const": tool["name"]}, "arguments": tool["parameters"]},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for tool in self.tools
        ]
        items = calls[0] if len(calls) == 1 else {"anyOf": calls}
        call_list = {"type": "array", "items": items, "minItems": 1, "maxItems": len(calls) if self.parallel else 1}
        calling = {
            "type": "object",
            "properties": {"tool_calls": call_list},
            "required": ["tool_calls"],
            "additionalProperties": False,
        }
        if self.mode == "required":
            return calling
        answering = {
            "type": "object",
            "properties": {"response": {"type": "string"}},
            "required": ["response"],
            "additionalProperties": False,
        }
        return {"anyOf": [calling, answering]}

    def system_prompt(self) -> str:
        """What the model is told about the tools."""
        listing = json.dumps(list(self.tools), ensure_ascii=False)
        answer = 'Answer with one JSON object: {"tool_calls": [{"name": TOOL, "arguments": {...}}]} to call tools' + (
            " (you must call one)." if self.mode == "required" else ', or {"response": TEXT} to answer directly.'
        )
        return f"You can use these tools: {listing}\n{answer}"


def _function(entry: Any, i: int) -> dict[str, Any]:
    if not isinstance(entry, dict) or entry.get("type", "function") != "function":
        raise MalformedRequest(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}")
    function = entry.get("function")
    if not isinstance(function, dict):
        raise MalformedRequest(f"tools[{i}].function must be an object with a 'name'")
    name = function.get("name")
    if not isinstance(name, str) or not name or len(name) > 64 or not set(name) <= NAME_CHARS:
        raise MalformedRequest(f"tools[{i}].function.name must be 1-64 letters, digits, '_' or '-'")
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise MalformedRequest(f"tools[{i}].function.parameters must be a JSON Schema object")
    description = function.get("description", "")
    if not isinstance(description, str):
        raise MalformedRequest(f"tools[{i}].function.description must be a string")
    return {"name": name, "description": description, "parameters": parameters}


def tool_spec(body: dict[str, Any]) -> ToolSpec | None:
    """``tools`` and ``tool_choice`` checked; None when no tool may be called."""
    tools = body.get("tools")
    choice = body.get("tool_choice", "auto")
    if tools is None or tools == []:
        if choice not in ("none", "auto", None):
            raise MalformedRequest("'tool_choice' needs 'tools'")
        return None
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise MalformedRequest(f"'tools' must be a list of up to {MAX_TOOLS} functions")
    functions = [_function(entry, i) for i, entry in enumerate(tools)]
    if len({f["name"] for f in functions}) != len(functions):
        raise MalformedRequest("tool names must be unique")
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise MalformedRequest("'parallel_tool_calls' must be true or false")
    if choice == "none":
        return None
    if choice in ("auto", None):
        return ToolSpec(tuple(functions), "auto", parallel)
    if choice == "required":
        return ToolSpec(tuple(functions), "required", parallel)
    function = choice.get("function") if isinstance(choice, dict) else None
    named = function.get("name") if isinstance(function, dict) else None
    if not isinstance(named, str):
        raise MalformedRequest("'tool_choice' must be 'none', 'auto', 'required' or {'type': 'function', ...}")
    chosen = [f for f in functions if f["name"] == named]
    if not chosen:
        raise MalformedRequest(f"'tool_choice' names {named!r}, which is not in 'tools'")
    return ToolSpec(tuple(chosen), "required", parallel)


def calls_text(calls: Sequence[tuple[str, Any]]) -> str:
    """Earlier calls ``(name, arguments object)`` as the JSON answer the model writes."""
    return json.dumps({"tool_calls": [{"name": n, "arguments": a} for n, a in calls]}, ensure_ascii=False)


def result_text(call: str, content: str) -> str:
    """A tool's result as the user turn the model reads (templates without a tool role render it)."""
    return f"Result of {call}: {content}"


def _calls_as_text(calls: Any, i: int) -> str:
    if not isinstance(calls, list):
        raise InvalidInput(f"messages[{i}].tool_calls must be a list")
    out = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidInput(f"messages[{i}].tool_calls entries need function.name and function.arguments")
        arguments = function.get("arguments", "{}")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            raise InvalidInput(f"messages[{i}].tool_calls: arguments must be JSON text") from None
        out.append((function["name"], parsed))
    return calls_text(out)


def flatten_tool_messages(messages: list[dict[str, Any]], raw: list[Any]) -> list[dict[str, Any]]:
    """Assistant ``tool_calls`` as the JSON the model writes, ``tool`` results as user turns. The result
    names its call by OpenAI's ``tool_call_id`` (or ``name``), or Ollama's ``tool_name``."""
    out = []
    for i, (message, original) in enumerate(zip(messages, raw, strict=True)):
        if message["role"] == "assistant" and original.get("tool_calls"):
            out.append({"role": "assistant", "content": _calls_as_text(original["tool_calls"], i)})
        elif message["role"] == "tool":
            call = original.get("tool_call_id") or original.get("name") or original.get("tool_name") or "a tool call"
            out.append({"role": "user", "content": result_text(str(call), message["content"])})
        else:
            out.append(message)
    return out


def with_tool_prompt(messages: list[dict[str, Any]], spec: ToolSpec) -> list[dict[str, Any]]:
    """The tools described in the system message (added, or appended to the first one)."""
    prompt = spec.system_prompt()
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{prompt}"}, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]


def constrain(
    messages: list[dict[str, Any]], params: SamplingParams, spec: ToolSpec
) -> tuple[list[dict[str, Any]], SamplingParams]:
    """The tools described in the system message and the answer held to ``spec.schema()`` by a grammar
    (lenient: keywords a grammar cannot enforce, such as ``minimum``, are left to the client)."""
    if params.json_mode:
        raise MalformedRequest("use either tools or a JSON response format, not both")
    schema = json.dumps(spec.schema(), separators=(",", ":"))
    if len(schema) > MAX_SCHEMA_CHARS:
        raise MalformedRequest(f"the tools' parameter schemas are {len(schema)} characters; at most {MAX_SCHEMA_CHARS}")
    constrained = replace(params, json_mode=True, json_schema=schema, lenient_schema=True)
    return with_tool_prompt(messages, spec), constrained


def parse_answer(text: str) -> tuple[str | None, list[tuple[str, dict[str, Any]]] | None]:
    """The model's JSON answer as (content, None) or (None, [(name, arguments object), ...]); text that is
    not the expected JSON (cut by max_tokens) is returned as content."""
    try:
        answer = json.loads(text)
    except ValueError:
        return text, None
    if isinstance(answer, dict) and isinstance(answer.get("tool_calls"), list):
        calls = [
            (str(c.get("name")), c["arguments"] if isinstance(c.get("arguments"), dict) else {})
            for c in answer["tool_calls"]
            if isinstance(c, dict)
        ]
        return None, calls
    if isinstance(answer, dict) and isinstance(answer.get("response"), str):
        return answer["response"], None
    return text, None


def read_answer(text: str) -> tuple[str | None, list[dict[str, Any]] | None]:
    """``parse_answer`` with the calls as OpenAI's ``tool_calls`` (arguments as JSON text, an id each)."""
    content, calls = parse_answer(text)
    if calls is None:
        return content, None
    return None, [
        {
            "id": "call_" + uuid.uuid4().hex[:24],
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
        for name, arguments in calls
    ]
