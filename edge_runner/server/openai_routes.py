"""OpenAI-compatible routes: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``.

Generation streams as server-sent events ending in ``data: [DONE]``. The SSE body is a generator:
when the client disconnects, waitress closes it and the ``finally`` cancels the engine sequence, so
the slot is freed at the next decode step. Errors raised before the first byte (bad body, unknown
model, ``Overloaded``) go through the central handler in ``server.errors``, which answers in the
OpenAI shape on ``/v1/`` paths with 400/404/429 (+Retry-After)/503.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import falcon

from edge_runner.errors import EdgeRunnerError, MalformedRequest, ModelNotReady, UnsupportedOperation
from edge_runner.llm import openai_protocol as proto
from edge_runner.llm.types import GenerationChunk, GenerationRequest
from edge_runner.server.body import json_object, read_body
from edge_runner.server.routes import Route

log = logging.getLogger("edge_runner.server.openai")

DEFAULT_MAX_BODY_BYTES = 16 * 2**20


class _Base:
    def __init__(self, manager: Any) -> None:
        self.manager = manager
        settings = getattr(manager, "settings", None)
        self.max_body = int(getattr(settings, "max_body_bytes", DEFAULT_MAX_BODY_BYTES))

    def body(self, req: falcon.Request) -> dict[str, Any]:
        """The JSON body as an object, or MalformedRequest / PayloadTooLarge."""
        return json_object(read_body(req, self.max_body), empty_ok=False)

    def record(self, entry: Any, start: float, status: str) -> None:
        """Count the request in the model's stats and the metrics (when the manager keeps them)."""
        record = getattr(self.manager, "record", None)
        if record is not None:
            record(entry, time.perf_counter() - start, status)

    def model(self, body: dict[str, Any]) -> Any:
        """The loaded model named by ``model`` (``name`` or ``name:version``), loading it on first use."""
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise MalformedRequest("'model' must name a model (see GET /v1/models)")
        base, _, tag = name.partition(":")
        version = int(tag) if tag.isdigit() else None
        try:
            entry = self.manager.get(base, version)
        except ModelNotReady:
            if not hasattr(self.manager, "load"):
                raise
            self.manager.load(base, version) if version is not None else self.manager.load(base)
            entry = self.manager.get(base, version)
        if hasattr(entry, "touch"):
            entry.touch()
        return entry


def _close(stream: Iterator[GenerationChunk]) -> None:
    """Cancel a generation (frees its slot); a no-op when already finished or not cancellable."""
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _event_stream(
    stream: Iterator[GenerationChunk], responder: proto.Responder, usage: bool, on_end: Callable[[str], None]
) -> Iterator[bytes]:
    """SSE frames for one generation; closing this generator cancels the generation."""
    status = "cancelled"  # stays so when the client disconnects (GeneratorExit)
    try:
        yield _sse(responder.chunk(None, first=True))
        coalesced = getattr(stream, "coalesced", None)
        for chunk in coalesced() if coalesced is not None else stream:
            if chunk.text or chunk.finish_reason is None:
                yield _sse(responder.chunk(chunk.text))
            if chunk.finish_reason is not None:
                yield _sse(responder.chunk(None, chunk.finish_reason))
                if usage and chunk.usage is not None:
                    yield _sse(responder.usage_chunk(chunk.usage))
        status = "ok"
        yield b"data: [DONE]\n\n"
    except Exception as exc:  # headers are gone: report in-band, as OpenAI does
        status = str(getattr(exc, "code", "inference_failed"))
        log.warning("generation failed mid-stream: %s", exc)
        message = getattr(exc, "message", "generation failed; see the server log")
        yield _sse({"error": {"message": message, "type": "server_error", "code": getattr(exc, "code", None)}})
    finally:
        _close(stream)
        on_end(status)


class _GenerationResource(_Base):
    chat = True

    def build(self, body: dict[str, Any], max_new: int) -> GenerationRequest:
        return proto.chat_request(body, max_new) if self.chat else proto.completion_request(body, max_new)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = self.body(req)
        entry = self.model(body)
        if not entry.metadata.capabilities.generate:
            raise UnsupportedOperation(f"model {entry.name!r} does not generate text; use /v1/embeddings")
        backend = entry.backend
        start = time.perf_counter()
        on_end = functools.partial(self.record, entry, start)
        try:
            request = self.build(body, int(getattr(backend, "max_seq_len", 2048)))
            stream = backend.generate(request)
        except EdgeRunnerError as exc:
            on_end(exc.code)
            raise
        responder = proto.Responder(entry.name, self.chat)
        if body.get("stream"):
            resp.content_type = "text/event-stream"
            resp.set_header("Cache-Control", "no-cache")
            resp.set_header("X-Accel-Buffering", "no")
            resp.stream = _event_stream(stream, responder, proto.stream_options(body), on_end)
            return
        status = "inference_failed"
        try:
            resp.media = responder.complete(stream)
            status = "ok"
        except EdgeRunnerError as exc:
            status = exc.code
            raise
        finally:
            _close(stream)
            on_end(status)


class ChatCompletionsResource(_GenerationResource):
    """``POST /v1/chat/completions``: chat with the model's own template."""

    chat = True


class CompletionsResource(_GenerationResource):
    """``POST /v1/completions``: raw prompt continuation."""

    chat = False


class EmbeddingsResource(_Base):
    """``POST /v1/embeddings`` for GGUF encoders and tensor encoders whose capabilities say ``embed``."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = self.body(req)
        entry = self.model(body)
        if not entry.metadata.capabilities.embed:
            raise UnsupportedOperation(f"model {entry.name!r} does not produce embeddings")
        texts = proto.embedding_texts(body)
        start = time.perf_counter()
        try:
            vectors = entry.backend.embed(texts)
        except EdgeRunnerError as exc:
            self.record(entry, start, exc.code)
            raise
        self.record(entry, start, "ok")
        counter = getattr(entry.backend, "count_tokens", None)
        tokens = int(counter(texts)) if counter else sum(len(t.split()) for t in texts)
        encoding = str(body.get("encoding_format") or "float")
        resp.media = proto.embeddings_response(entry.name, vectors, encoding, tokens)


def _model_card(entry: Any) -> dict[str, Any]:
    created = int(getattr(entry, "loaded_at", 0))
    caps = entry.metadata.capabilities
    card = {"id": entry.name, "object": "model", "created": created, "owned_by": "edge-runner"}
    card["capabilities"] = {"generate": caps.generate, "embed": caps.embed}
    card["version"] = entry.version
    engine_stats = getattr(entry.backend, "engine_stats", None)
    if engine_stats is not None:
        card["engine"] = engine_stats()
    return card


class ModelsResource(_Base):
    """``GET /v1/models``: every loaded model."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        seen, data = set(), []
        for entry in sorted(self.manager.loaded(), key=lambda e: (e.name, -e.version)):
            if entry.name not in seen:
                seen.add(entry.name)
                data.append(_model_card(entry))
        resp.media = {"object": "list", "data": data}


class ModelResource(_Base):
    """``GET /v1/models/{model}``."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, model: str) -> None:
        resp.media = _model_card(self.manager.get(model, None))


def openai_routes(manager: Any) -> list[Route]:
    """The OpenAI-compatible route table."""
    return [
        Route("/v1/models", ModelsResource(manager), "Models, OpenAI style", "openai"),
        Route("/v1/models/{model}", ModelResource(manager), "One model, OpenAI style", "openai"),
        Route("/v1/chat/completions", ChatCompletionsResource(manager), "Chat (SSE with stream=true)", "openai"),
        Route("/v1/completions", CompletionsResource(manager), "Text completion (SSE with stream=true)", "openai"),
        Route("/v1/embeddings", EmbeddingsResource(manager), "Embeddings of a string or a list", "openai"),
    ]


def add_openai_routes(app: falcon.App[Any, Any], manager: Any) -> None:
    """Register only the OpenAI routes on ``app`` (for tests of this module alone)."""
    for route in openai_routes(manager):
        app.add_route(route.path, route.resource)
