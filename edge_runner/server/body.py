"""Request bodies: size-limited reads and JSON objects, shared by every route."""

from __future__ import annotations

import json
from typing import Any

import falcon

from edge_runner.errors import MalformedRequest, PayloadTooLarge


def read_body(req: falcon.Request, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes (checked before and while reading)."""
    length = req.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the {limit}-byte limit (--max-body-bytes)")
    data = req.bounded_stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit (--max-body-bytes)")
    return bytes(data)


def json_object(body: bytes, empty_ok: bool = True) -> dict[str, Any]:
    """Parse a JSON object; an empty body is ``{}`` when ``empty_ok``."""
    if not body.strip():
        if empty_ok:
            return {}
        raise MalformedRequest("the request body is empty; send a JSON object")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedRequest("request body must be a JSON object")
    return data
