"""Request bodies: size-limited reads and JSON objects, shared by every route."""

from __future__ import annotations

import falcon

from edge_runner.core.errors import PayloadTooLarge


def read_body(req: falcon.Request, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes (checked before and while reading)."""
    length = req.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the {limit}-byte limit (--max-body-bytes)")
    data = req.bounded_stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit (--max-body-bytes)")
    return bytes(data)
