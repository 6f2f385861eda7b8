"""Anthropic Messages API on the same port: ``POST /v1/messages``.

The route goes through ``ModelService.generate``, the path of every other generation route. With
``stream: true`` the answer is Anthropic's server-sent event sequence; the body is a generator, so when
the client disconnects waitress closes it and the ``finally`` cancels the engine sequence (the slot is
freed at the next decode step). Errors before the first byte go through the central handler in
``server.errors``, which answers in Anthropic's shape on ``/v1/messages``; errors mid-stream are an
``error`` event.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from typing import Any

import falcon

from edge_runner.core.errors import EdgeRunnerError
from edge_runner.core.generation import GenerationRequest
from edge_runner.protocol import anthropic as proto
from edge_runner.protocol.json_body import json_object
from edge_runner.server.body import read_body, start_generation
from edge_runner.server.errors import status_for
from edge_runner.server.openai_routes import model_ref
from edge_runner.server.routes import Route
from edge_runner.serving.service import GenerationStream, ModelService, pulled_model

log = logging.getLogger("edge_runner.server.anthropic")


def event_stream(stream: GenerationStream, responder: proto.Responder) -> Iterator[bytes]:
    """The SSE events of one message; closing this generator (client gone) cancels the generation."""
    try:
        yield from responder.opening()
        done = False
        for chunk in stream.coalesced():
            if text := responder.delta(chunk.text):
                yield text
            if chunk.finish_reason is not None:
                done = True
                yield from responder.closing(chunk.finish_reason, chunk.usage)
        if not done:
            yield from responder.closing("stop", None)
    except Exception as exc:  # headers are gone: report in-band with an ``error`` event, as Anthropic does
        log.warning("generation failed mid-stream: %s", exc)
        if isinstance(exc, EdgeRunnerError):
            yield responder.error(status_for(exc)[0], exc.message)
        else:
            yield responder.error(500, "generation failed; see the server log")
    finally:
        stream.close()


class MessagesResource:
    """``POST /v1/messages``: a chat turn with the model's own template (SSE with ``stream: true``)."""

    def __init__(self, service: ModelService) -> None:
        self.service = service
        self.max_body = service.settings.max_body_bytes

    @staticmethod
    def build(body: dict[str, Any], max_new: int) -> GenerationRequest:
        return proto.messages_request(body, max_new)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = json_object(read_body(req, self.max_body), empty_ok=False)
        name, version = pulled_model(self.service, body.get("model")) or model_ref(body)
        build = functools.partial(self.build, body)
        _, stream = start_generation(self.service, req, name, version, build, bool(body.get("stream")))
        tools = proto.tool_spec(body) is not None
        responder = proto.Responder(str(body["model"]), proto.prewarm_only(body), tools)
        if body.get("stream"):
            resp.content_type = "text/event-stream"
            resp.set_header("Cache-Control", "no-cache")
            resp.set_header("X-Accel-Buffering", "no")
            resp.stream = event_stream(stream, responder)
            return
        try:
            resp.media = responder.complete(stream)
        finally:
            stream.close()


def anthropic_routes(service: ModelService) -> list[Route]:
    """The anthropic-compatible route table."""
    return [
        Route(
            "/v1/messages", MessagesResource(service), "Messages, Anthropic style (SSE with stream=true)", "anthropic"
        )
    ]
