"""Request plumbing shared by every route: size-limited body reads, and how a generation is started."""

from __future__ import annotations

import io
from collections.abc import Callable

import falcon

from edge_runner.core.errors import PayloadTooLarge
from edge_runner.core.generation import GenerationRequest
from edge_runner.serving.loaded_model import LoadedModel
from edge_runner.serving.service import GenerationStream, ModelService


def read_body(req: falcon.Request, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes (checked before and while reading)."""
    length = req.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the {limit}-byte limit (--max-body-bytes)")
    stream = req.env.get("wsgi.input")
    if length is not None and type(stream) is io.BytesIO and stream.tell() == 0:
        # waitress hands a body it buffered in memory (chunked ones too, with the length set once de-chunked) over
        # as that BytesIO: getvalue() gives its bytes without copying them (a 3 MB JSON tensor: one copy fewer
        # under the GIL); a body it spilled to a file is read below
        data = stream.getvalue()
        if len(data) == length:
            stream.seek(length)
            return data
    data = req.bounded_stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit (--max-body-bytes)")
    return bytes(data)


def start_generation(
    service: ModelService,
    req: falcon.Request,
    name: str,
    version: int | None,
    build: Callable[[int], GenerationRequest],
    streamed: bool,
) -> tuple[LoadedModel, GenerationStream]:
    """Start a generation for any protocol. A streamed one is read as it goes and the client can leave at any
    token; a non-streamed one is bounded by the request timeout and stopped when its client leaves."""
    if streamed:
        return service.generate(name, version, build)
    gone = req.env.get("waitress.client_disconnected")
    return service.generate(name, version, build, service.settings.request_timeout_ms / 1000.0, gone)
