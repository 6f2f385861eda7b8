"""JSON request bodies: one parser for every protocol (v2 infer headers, OpenAI, repository calls)."""

from __future__ import annotations

import json
from typing import Any

from edge_runner.core.errors import MalformedRequest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (Python's json module would accept it)")


def json_object(body: bytes, empty_ok: bool = True) -> dict[str, Any]:
    """Parse a JSON object; an empty body is ``{}`` when ``empty_ok``."""
    if not body.strip():
        if empty_ok:
            return {}
        raise MalformedRequest("the request body is empty; send a JSON object")
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise MalformedRequest("request body nests arrays or objects too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers past Python's digit limit
        raise MalformedRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedRequest("request body must be a JSON object")
    return data


def json_int(value: Any) -> int | None:
    """An integer as JSON Schema reads one: an int or a float without a fraction (``7.0``); else None.

    ``true`` is not an integer here, though Python's ``bool`` is an ``int``.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
