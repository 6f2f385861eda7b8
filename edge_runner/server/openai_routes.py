"""OpenAI-compatible routes: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``.

Every route goes through ``ModelService`` (``generate``, ``embed``), the same path as v2 infer.
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
from collections.abc import Callable, Iterator
from typing import Any

import falcon

from edge_runner.backends.text_encoder import EMBEDDING_TASKS
from edge_runner.core.errors import MalformedRequest, ModelNotFound
from edge_runner.core.generation import GenerationRequest
from edge_runner.core.manifest import Manifest
from edge_runner.protocol import openai as proto
from edge_runner.protocol.json_body import json_object
from edge_runner.protocol.openai_tools import tool_spec
from edge_runner.repository.store import validate_name
from edge_runner.server.body import read_body, start_generation
from edge_runner.server.keep_alive import end_keep_alive, keep_alive_s, start_keep_alive
from edge_runner.server.routes import Route
from edge_runner.serving.loaded_model import LoadedModel
from edge_runner.serving.service import GenerationStream, ModelService, pulled_model

log = logging.getLogger("edge_runner.server.openai")


def model_ref(body: dict[str, Any], service: ModelService | None = None) -> tuple[str, int | None]:
    """``model`` as ``name``, ``name:latest`` (the newest version) or ``name:VERSION``; with ``service``, also
    the OCI reference a model was pulled from (``host[:port]/repository[:tag]``, ``serving.service.pulled_model``)."""
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise MalformedRequest("'model' must name a model (see GET /v1/models)")
    pulled = pulled_model(service, name) if service is not None else None
    if pulled is not None:
        return pulled
    base, _, tag = name.partition(":")
    if tag in ("", "latest"):
        return validate_name(base), None
    if tag.isascii() and tag.isdigit() and len(tag) <= 9:
        return validate_name(base), int(tag)
    raise ModelNotFound(f"model {name!r}: tags are 'latest' or a version number, e.g. {base}:latest or {base}:1")


class _Base:
    def __init__(self, service: ModelService) -> None:
        self.service = service
        self.max_body = service.settings.max_body_bytes

    def body(self, req: falcon.Request) -> dict[str, Any]:
        """The JSON body as an object, or MalformedRequest / PayloadTooLarge."""
        return json_object(read_body(req, self.max_body), empty_ok=False)


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _event_stream(
    stream: GenerationStream, responder: proto.Responder, usage: bool, after: Callable[[], None]
) -> Iterator[bytes]:
    """SSE frames for one generation; closing this generator (client gone) cancels the generation.
    ``after`` runs once the stream is over (the request's ``keep_alive: 0``)."""
    try:
        yield _sse(responder.chunk(None, first=True))
        held: list[str] = []  # with tools, the JSON answer is only meaningful once whole
        for chunk in stream.coalesced():
            if responder.tools:
                held.append(chunk.text)
            elif chunk.text or chunk.logprobs or chunk.finish_reason is None:
                yield _sse(responder.chunk(chunk.text, logprobs=chunk.logprobs))
            if chunk.finish_reason is not None:
                if responder.tools:
                    for closing in responder.closing_chunks("".join(held), chunk.finish_reason):
                        yield _sse(closing)
                else:
                    yield _sse(responder.chunk(None, chunk.finish_reason))
                if usage and chunk.usage is not None:
                    yield _sse(responder.usage_chunk(chunk.usage))
        yield b"data: [DONE]\n\n"
    except Exception as exc:  # headers are gone: report in-band, as OpenAI does
        log.warning("generation failed mid-stream: %s", exc)
        message = getattr(exc, "message", "generation failed; see the server log")
        yield _sse({"error": {"message": message, "type": "server_error", "code": getattr(exc, "code", None)}})
    finally:
        stream.close()
        after()


class _GenerationResource(_Base):
    chat = True

    def build(self, body: dict[str, Any], max_new: int) -> GenerationRequest:
        return proto.chat_request(body, max_new) if self.chat else proto.completion_request(body, max_new)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = self.body(req)
        name, version = model_ref(body, self.service)
        keep_alive = keep_alive_s(body)
        build = functools.partial(self.build, body)
        entry, stream = start_generation(self.service, req, name, version, build, bool(body.get("stream")))
        start_keep_alive(self.service, entry, keep_alive)
        after = functools.partial(end_keep_alive, self.service, entry, keep_alive)
        tools = self.chat and tool_spec(body) is not None
        responder = proto.Responder(entry.name, self.chat, tools, bool(proto.logprob_request(body)))
        if body.get("stream"):
            resp.content_type = "text/event-stream"
            resp.set_header("Cache-Control", "no-cache")
            resp.set_header("X-Accel-Buffering", "no")
            resp.stream = _event_stream(stream, responder, proto.stream_options(body), after)
            return
        try:
            resp.media = responder.complete(stream)
        finally:
            stream.close()
            after()


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
        name, version = model_ref(body, self.service)
        texts = proto.embedding_texts(body)
        keep_alive = keep_alive_s(body)
        entry, vectors, tokens = self.service.embed(name, version, texts)
        start_keep_alive(self.service, entry, keep_alive)
        end_keep_alive(self.service, entry, keep_alive)
        encoding = str(body.get("encoding_format") or "float")
        resp.media = proto.embeddings_response(entry.name, vectors, encoding, tokens)


def _model_card(entry: LoadedModel) -> dict[str, Any]:
    caps = entry.metadata.capabilities
    card = _manifest_card(entry.name, entry.manifest)
    card.update(created=int(entry.loaded_at), loaded=True, version=entry.version)
    card["capabilities"] = {"generate": caps.generate, "embed": caps.embed}
    if caps.generate:
        card["context_length"] = entry.backend.context_length()
        card["engine"] = entry.backend.runtime_stats()
    return card


#: tasks whose models answer /v1/chat/completions once loaded (embedding tasks: the text encoder's)
GENERATION_TASKS = ("text-generation",)


def _manifest_card(name: str, manifest: Manifest | None) -> dict[str, Any]:
    """What the manifest says without loading: version, size, format, task, trained context length."""
    card: dict[str, Any] = {"id": name, "object": "model", "created": 0, "owned_by": "edge-runner", "loaded": False}
    if manifest is None:
        return card
    card["created"] = int(manifest.extra.get("created", 0) or 0)
    card["version"] = manifest.version
    card["size_bytes"] = sum(f.size for f in manifest.files)
    card["format"] = manifest.format
    card["quantization"] = manifest.quantization
    card["task"] = manifest.task
    card["capabilities"] = {"generate": manifest.task in GENERATION_TASKS, "embed": manifest.task in EMBEDDING_TASKS}
    if isinstance(manifest.extra.get("context_length"), int):
        card["context_length"] = manifest.extra["context_length"]
    return card


class ModelsResource(_Base):
    """``GET /v1/models``: every servable model (its newest loaded version, else the newest on disk)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        loaded: dict[str, LoadedModel] = {}
        for entry in sorted(self.service.loaded(), key=lambda e: (e.name, e.version)):
            loaded[entry.name] = entry  # the newest loaded version wins
        data = []
        for name in self.service.model_names():
            newest = loaded.get(name)
            data.append(_model_card(newest) if newest else _manifest_card(name, self.service.describe(name)))
        resp.media = {"object": "list", "data": data}


class ModelResource(_Base):
    """``GET /v1/models/{model}``."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, model: str) -> None:
        resp.media = _model_card(self.service.get(model, None))


def openai_routes(service: ModelService) -> list[Route]:
    """The OpenAI-compatible route table."""
    return [
        Route("/v1/models", ModelsResource(service), "Models, OpenAI style", "openai"),
        Route("/v1/models/{model}", ModelResource(service), "One model, OpenAI style", "openai"),
        Route("/v1/chat/completions", ChatCompletionsResource(service), "Chat (SSE with stream=true)", "openai"),
        Route("/v1/completions", CompletionsResource(service), "Text completion (SSE with stream=true)", "openai"),
        Route("/v1/embeddings", EmbeddingsResource(service), "Embeddings of a string or a list", "openai"),
    ]
