"""Ollama-compatible routes on the same port: ``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/tags``...

Every model-facing route goes through ``ModelService`` (``generate``, ``embed``, ``load``, ``unload``,
``set_keep_alive``), the path the OpenAI and v2 routes take. Generation streams as NDJSON (one JSON object
per line, ``done: true`` last) unless ``stream`` is false, as Ollama does; the body is a generator, so when
the client disconnects waitress closes it and the ``finally`` cancels the engine sequence (the slot is
freed at the next decode step). ``keep_alive`` changes the model's idle unload time per request; 0
unloads it once the answer is out. Errors before the first byte go through the central handler, which
answers ``{"error": "..."}`` (what the ``ollama`` client reads); errors mid-stream are an ``{"error"}`` line.
``/api/ps`` lives in ``server.ops`` (it also feeds ``edge-runner ps``) and is registered here.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon

from edge_runner import __version__
from edge_runner.backends.text_encoder import EMBEDDING_TASKS
from edge_runner.core.errors import Forbidden, ModelNotFound, ModelNotReady
from edge_runner.core.generation import GenerationRequest
from edge_runner.core.manifest import MANIFEST_NAME, Manifest
from edge_runner.protocol import ollama as proto
from edge_runner.protocol import ollama_listing as listing
from edge_runner.protocol.json_body import json_object
from edge_runner.server.body import read_body, start_generation
from edge_runner.server.keep_alive import end_keep_alive, keep_alive_s, start_keep_alive
from edge_runner.server.openai_routes import GENERATION_TASKS, model_ref
from edge_runner.server.ops import PsResource
from edge_runner.server.routes import Route
from edge_runner.serving.loaded_model import LoadedModel
from edge_runner.serving.service import GenerationStream, ModelService, pulled_model, pulled_refs

log = logging.getLogger("edge_runner.server.ollama")
NDJSON = "application/x-ndjson"


def ollama_ref(service: ModelService, body: dict[str, Any]) -> tuple[str, int | None]:
    """``model`` (or the older ``name``) as ``name``, ``name:latest`` or ``name:VERSION``, or the OCI
    reference a model was pulled from (``host[:port]/repository[:tag]``, as Ollama users address it)."""
    model = body.get("model") or body.get("name")
    return pulled_model(service, model) or model_ref({"model": model})


def _line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def ndjson_stream(
    service: ModelService,
    entry: LoadedModel,
    stream: GenerationStream,
    responder: proto.Responder,
    keep_alive: float | None,
) -> Iterator[bytes]:
    """NDJSON lines of one generation; closing this generator (client gone) cancels the generation."""
    try:
        done = False
        held: list[str] = []  # with tools, the JSON answer is only meaningful once whole
        for chunk in stream.coalesced():
            if responder.tools:
                held.append(chunk.text)
                responder.timings.mark_token()
            elif chunk.text:
                yield _line(responder.piece(chunk.text))
            if chunk.finish_reason is not None:
                done = True
                if responder.tools:
                    yield _line(responder.held("".join(held)))
                yield _line(responder.final(chunk.finish_reason, chunk.usage))
        if not done:
            yield _line(responder.final("stop", None))
    except Exception as exc:  # headers are gone: report in-band, as Ollama does
        log.warning("generation failed mid-stream: %s", exc)
        yield _line({"error": getattr(exc, "message", "generation failed; see the server log")})
    finally:
        stream.close()
        end_keep_alive(service, entry, keep_alive)


class _Base:
    def __init__(self, service: ModelService) -> None:
        self.service = service
        self.max_body = service.settings.max_body_bytes

    def body(self, req: falcon.Request) -> dict[str, Any]:
        """The JSON body as an object, or MalformedRequest / PayloadTooLarge."""
        return json_object(read_body(req, self.max_body), empty_ok=False)


class _GenerationResource(_Base):
    chat = True

    def build(self, body: dict[str, Any], max_new: int) -> GenerationRequest:
        return proto.chat_request(body, max_new) if self.chat else proto.generate_request(body, max_new)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = self.body(req)
        name, version = ollama_ref(self.service, body)
        keep_alive = keep_alive_s(body)
        timings = proto.Timings()
        tools = self.chat and proto.tool_spec(body) is not None
        responder = proto.Responder(str(body.get("model") or body.get("name")), self.chat, timings, tools)
        if proto.is_load_only(body, self.chat):
            resp.media = responder.lifecycle(load_or_unload(self.service, name, version, keep_alive))
            return
        build = functools.partial(self.build, body)
        entry, stream = start_generation(self.service, req, name, version, build, proto.wants_stream(body))
        timings.mark_loaded()
        start_keep_alive(self.service, entry, keep_alive)
        if proto.wants_stream(body):
            resp.content_type = NDJSON
            resp.set_header("Cache-Control", "no-cache")
            resp.set_header("X-Accel-Buffering", "no")
            resp.stream = ndjson_stream(self.service, entry, stream, responder, keep_alive)
            return
        try:
            resp.media = responder.complete(stream)
        finally:
            stream.close()
            end_keep_alive(self.service, entry, keep_alive)


def load_or_unload(service: ModelService, name: str, version: int | None, keep_alive: float | None) -> str:
    """An empty prompt or message list: load the model (``load``), or with keep_alive 0 unload it (``unload``)."""
    if name not in service.model_names():
        raise ModelNotFound(f"model {name!r} not found; available models: {service.model_names()}")
    if keep_alive == 0:
        service.unload(name, version)
        return "unload"
    service.load(name, version)
    if keep_alive is not None:
        service.set_keep_alive(name, keep_alive)
    return "load"


class ChatResource(_GenerationResource):
    """``POST /api/chat``: chat with the model's own template."""

    chat = True


class GenerateResource(_GenerationResource):
    """``POST /api/generate``: one prompt (templated as a user turn unless ``raw``)."""

    chat = False


class EmbedResource(_Base):
    """``POST /api/embed``: ``input`` is a string or a list."""

    legacy = False

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = self.body(req)
        name, version = ollama_ref(self.service, body)
        texts = proto.embed_texts(body, self.legacy)
        dimensions = proto.embed_dimensions(body)
        keep_alive = keep_alive_s(body)
        timings = proto.Timings()
        entry, vectors, tokens = self.service.embed(name, version, texts)
        start_keep_alive(self.service, entry, keep_alive)
        end_keep_alive(self.service, entry, keep_alive)
        if self.legacy:
            resp.media = {"embedding": [float(x) for x in vectors[0]]}
        else:
            resp.media = proto.embed_response(str(body.get("model")), vectors, tokens, dimensions, timings)


class EmbeddingsResource(EmbedResource):
    """``POST /api/embeddings``, the older API: one ``prompt``, one ``embedding``."""

    legacy = True


def _modified_at(folder: Path) -> float | None:
    try:
        return (folder / MANIFEST_NAME).stat().st_mtime
    except OSError:
        return None


def _facts(
    entry: LoadedModel | None,
    name: str,
    version: int,
    latest: bool,
    manifest: Manifest | None = None,
    references: tuple[str, ...] = (),
) -> listing.ModelFacts:
    """What /api/tags and /api/show say about a version: from the loaded entry, else from its manifest on disk."""
    if entry is not None:
        caps = entry.metadata.capabilities
        modified = _modified_at(entry.folder)
        return listing.ModelFacts(
            name, version, latest, entry.manifest, modified, caps.generate, caps.embed, references
        )
    if manifest is None:
        return listing.ModelFacts(name, version, latest, references=references)
    generate, embed = manifest.task in GENERATION_TASKS, manifest.task in EMBEDDING_TASKS
    return listing.ModelFacts(name, version, latest, manifest, None, generate, embed, references)


class TagsResource(_Base):
    """``GET /api/tags``: every servable model as ``NAME:latest`` and ``NAME:VERSION``."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        loaded = {(e.name, e.version): e for e in self.service.loaded()}
        references: dict[tuple[str, int], tuple[str, ...]] = {}
        for ref, pulled in sorted(pulled_refs(self.service).items()):
            references[pulled] = (*references.get(pulled, ()), ref)
        versions: dict[str, list[int]] = {}
        for row in self.service.index():
            versions.setdefault(row["name"], []).append(int(row["version"]))
        facts = []
        for name, numbers in sorted(versions.items()):
            newest = max(numbers)
            for version in sorted(numbers, reverse=True):
                entry = loaded.get((name, version))
                manifest = None if entry else self.service.describe(name, version)
                refs = references.get((name, version), ())
                facts.append(_facts(entry, name, version, version == newest, manifest, refs))
        resp.media = listing.tags_response(facts)


class ShowResource(_Base):
    """``POST /api/show``: details, capabilities and model info (loads the model, as a first chat would)."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        name, version = ollama_ref(self.service, self.body(req))
        try:
            entry = self.service.get(name, version)
        except ModelNotReady:
            self.service.load(name, version)
            entry = self.service.get(name, version)
        facts = _facts(entry, entry.name, entry.version, latest=False)
        context = entry.backend.context_length() if facts.generate else 0  # encoders have no engine
        resp.media = listing.show_response(facts, entry.metadata.device, entry.backend.name, context)


class VersionResource:
    """``GET /api/version``."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"version": __version__}


class PullResource(_Base):
    """``POST /api/pull``: a model already here answers success; an OCI reference (``host[:port]/repo[:tag]``,
    anything with a ``/``) is pulled into the repository, digests verified, and served under its own name."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = self.body(req)
        model = body.get("model") or body.get("name")
        statuses: list[dict[str, Any]] = [{"status": "success"}]
        if isinstance(model, str) and "/" in model:
            registry = model.split("/", 1)[0]
            if registry not in self.service.settings.pull_registries:
                allowed = ", ".join(self.service.settings.pull_registries) or "none"
                raise Forbidden(
                    f"this server pulls only from the registries in pull_registries ({allowed}); add {registry!r} "
                    f"there (EDGE_RUNNER_PULL_REGISTRIES), or pull with 'edge-runner models pull {model}'"
                )
            manifest = self.service.pull(model)
            log.info("pulled %s as %s version %d", model, manifest.name, manifest.version)
            statuses = [
                {"status": "pulling manifest"},
                {"status": f"verified {len(manifest.files)} layers", "completed": sum(f.size for f in manifest.files)},
                {"status": "success", "model": f"{manifest.name}:{manifest.version}"},
            ]
        else:
            name, _ = ollama_ref(self.service, body)
            if name not in self.service.model_names():
                raise ModelNotFound(
                    f"model {name!r} is not here; pull it by its OCI reference (host[:port]/repository[:tag]), "
                    "or add it with 'edge-runner models add' / 'models import', or convert it ('edge-runner convert')"
                )
        if proto.wants_stream(body):
            resp.content_type = NDJSON
            resp.data = b"".join(_line(status) for status in statuses)
        else:
            resp.media = statuses[-1]


def ollama_routes(service: ModelService) -> list[Route]:
    """The ollama-compatible route table."""
    return [
        Route("/api/version", VersionResource(), "Server version, Ollama style", "ollama"),
        Route("/api/tags", TagsResource(service), "Every servable model, Ollama style", "ollama"),
        Route("/api/show", ShowResource(service), "One model's details and capabilities", "ollama"),
        Route("/api/ps", PsResource(service), "Loaded models: Ollama fields plus memory, device, idle time", "ollama"),
        Route("/api/chat", ChatResource(service), "Chat (NDJSON stream unless stream=false)", "ollama"),
        Route("/api/generate", GenerateResource(service), "Generation (NDJSON stream unless stream=false)", "ollama"),
        Route("/api/embed", EmbedResource(service), "Embeddings of a string or a list", "ollama"),
        Route("/api/embeddings", EmbeddingsResource(service), "Embedding of one prompt (older API)", "ollama"),
        Route("/api/pull", PullResource(service), "Pull an OCI reference; success for a local model", "ollama"),
    ]
