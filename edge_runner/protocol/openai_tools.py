"""OpenAI tool calling (``tools``, ``tool_choice``, ``tool_calls``) for models without a native tool format.

The model is told about the tools in a system message and answers with one JSON object, which a grammar
made from the tools' parameter schemas enforces (the generic approach llama.cpp's server takes for
templates without tool support):

- ``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` to call tools (``required``, a named function, or
  ``auto`` when the model chooses to);
- ``{"response": "..."}`` to answer in text (``auto`` only).

The answer is turned back into OpenAI's ``tool_calls`` (``finish_reason: "tool_calls"``) or plain content.
Earlier assistant ``tool_calls`` and ``tool`` results in ``messages`` are rendered as text the same way, so
a round trip reads naturally to the model. ``tool_choice: "none"`` leaves the request untouched.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from edge_runner.core.errors import InvalidInput, MalformedRequest

MAX_TOOLS = 64
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
    named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(named, str):
        raise MalformedRequest("'tool_choice' must be 'none', 'auto', 'required' or {'type': 'function', ...}")
    chosen = [f for f in functions if f["name"] == named]
    if not chosen:
        raise MalformedRequest(f"'tool_choice' names {named!r}, which is not in 'tools'")
    return ToolSpec(tuple(chosen), "required", parallel)


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
        out.append({"name": function["name"], "arguments": parsed})
    return json.dumps({"tool_calls": out}, ensure_ascii=False)


def flatten_tool_messages(messages: list[dict[str, Any]], raw: list[Any]) -> list[dict[str, Any]]:
    """Assistant ``tool_calls`` as the JSON the model writes, ``tool`` results as user turns (templates
    without a tool role render them)."""
    out = []
    for i, (message, original) in enumerate(zip(messages, raw, strict=True)):
        if message["role"] == "assistant" and original.get("tool_calls"):
            out.append({"role": "assistant", "content": _calls_as_text(original["tool_calls"], i)})
        elif message["role"] == "tool":
            call = original.get("tool_call_id") or original.get("name") or "a tool call"
            out.append({"role": "user", "content": f"Result of {call}: {message['content']}"})
        else:
            out.append(message)
    return out


def with_tool_prompt(messages: list[dict[str, Any]], spec: ToolSpec) -> list[dict[str, Any]]:
    """The tools described in the system message (added, or appended to the first one)."""
    prompt = spec.system_prompt()
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{prompt}"}, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]


def read_answer(text: str) -> tuple[str | None, list[dict[str, Any]] | None]:
    """The model's JSON answer as (content, None) or (None, OpenAI tool_calls); text that is not the
    expected JSON (cut by max_tokens) is returned as content."""
    try:
        answer = json.loads(text)
    except ValueError:
        return text, None
    if isinstance(answer, dict) and isinstance(answer.get("tool_calls"), list):
        calls = [
            {
                "id": "call_" + uuid.uuid4().hex[:24],
                "type": "function",
                "function": {"name": str(c.get("name")), "arguments": json.dumps(c.get("arguments", {}))},
            }
            for c in answer["tool_calls"]
            if isinstance(c, dict)
        ]
        return None, calls
    if isinstance(answer, dict) and isinstance(answer.get("response"), str):
        return answer["response"], None
    return text, None
