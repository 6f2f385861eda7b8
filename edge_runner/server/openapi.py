"""``GET /openapi.json``: an OpenAPI 3.1 document generated from the route table.

Every route of ``all_routes`` becomes one operation per ``on_get`` / ``on_post`` of its resource; the
resource's class picks the request and response schemas (``protocol/json_schemas.py``) and which error
statuses it can answer. The document is built per request from the service, so the ``model`` path
parameter and body field list the models this server can serve (for v2 infer and the /v1 generation
and embedding routes, those whose capabilities fit), ``max_tokens`` is bounded by ``max_seq_len``, and
the infer body offers the exact tensors of the loaded models: a client (or a schema fuzzer) that
follows it reaches real models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import falcon

from edge_runner import __version__
from edge_runner.protocol import compat_schemas as cs
from edge_runner.protocol import json_schemas as js
from edge_runner.protocol.kserve_codec import HEADER_LENGTH
from edge_runner.server import anthropic_routes as anthropic
from edge_runner.server import kserve, ops
from edge_runner.server import ollama_routes as ollama
from edge_runner.server import openai_routes as oai
from edge_runner.server.routes import Route
from edge_runner.serving.service import ModelService

JSON = "application/json"
OCTETS = "application/octet-stream"
SSE = "text/event-stream"
NDJSON = ollama.NDJSON


@dataclass(frozen=True)
class Operation:
    """What one resource class takes and answers (schema names under ``components/schemas``)."""

    ok: str  # the 200 JSON body
    request: str | None = None  # the JSON request body
    body_required: bool = False
    model_work: bool = False  # reaches a backend: 500 (runtime failure) and 504 (deadline) are possible
    binary: bool = False  # the binary tensor extension: octet-stream bodies both ways
    streams: bool = False  # ``stream: true`` answers server-sent events (Ollama routes: NDJSON unless false)
    serves: str = ""  # the capability its ``model`` must have: "tensors", "generate", "embed" ("" any)


OPERATIONS: dict[type, Operation] = {
    kserve.ServerMetadataResource: Operation("ServerMetadata"),
    kserve.LiveResource: Operation("Live"),
    kserve.ReadyResource: Operation("Ready"),
    kserve.ModelMetadataResource: Operation("ModelMetadata"),
    kserve.ModelReadyResource: Operation("ModelReady"),
    kserve.ModelConfigResource: Operation("ModelConfig"),
    kserve.InferResource: Operation(
        "InferResponse", "InferRequest", True, model_work=True, binary=True, serves="tensors"
    ),
    kserve.StatsResource: Operation("ModelStats"),
    kserve.RepositoryIndexResource: Operation("RepositoryIndex", "RepositoryIndexRequest"),
    kserve.RepositoryLoadResource: Operation("Empty", "RepositoryLoadRequest", model_work=True),
    ops.PsResource: Operation("Ps"),
    ops.MetricsResource: Operation("Metrics"),
    oai.ModelsResource: Operation("ModelList"),
    oai.ModelResource: Operation("ModelCard"),
    oai.ChatCompletionsResource: Operation(
        "ChatCompletion", "ChatRequest", True, model_work=True, streams=True, serves="generate"
    ),
    oai.CompletionsResource: Operation(
        "Completion", "CompletionRequest", True, model_work=True, streams=True, serves="generate"
    ),
    oai.EmbeddingsResource: Operation("Embeddings", "EmbeddingsRequest", True, model_work=True, serves="embed"),
    ollama.VersionResource: Operation("OllamaVersion"),
    ollama.TagsResource: Operation("OllamaTags"),
    ollama.ShowResource: Operation("OllamaShow", "OllamaModelRequest", True, model_work=True),
    ollama.ChatResource: Operation(
        "OllamaGeneration", "OllamaChatRequest", True, model_work=True, streams=True, serves="generate"
    ),
    ollama.GenerateResource: Operation(
        "OllamaGeneration", "OllamaGenerateRequest", True, model_work=True, streams=True, serves="generate"
    ),
    ollama.EmbedResource: Operation("OllamaEmbed", "OllamaEmbedRequest", True, model_work=True, serves="embed"),
    ollama.EmbeddingsResource: Operation(
        "OllamaEmbedding", "OllamaEmbeddingsRequest", True, model_work=True, serves="embed"
    ),
    ollama.PullResource: Operation("OllamaStatus", "OllamaModelRequest", True, streams=True),
    anthropic.MessagesResource: Operation(
        "AnthropicMessage", "AnthropicMessagesRequest", True, model_work=True, streams=True, serves="generate"
    ),
}
GENERIC = Operation("Any")

STATUS_TEXT = {
    400: "Malformed request: bad JSON, a missing or mistyped field, a bad model name",
    401: "Missing or wrong API key (Authorization: Bearer <key>, or x-api-key: <key>)",
    403: "Refused: a foreign web origin, or a non-loopback Host on a loopback-bound server",
    404: "No such model, version or route",
    413: "Request body over --max-body-bytes",
    415: "Request body of a content type other than JSON or octet-stream",
    422: "Valid JSON, invalid tensors: datatype, shape, size or input names",
    429: "Too many requests in flight or queued; retry after Retry-After seconds",
    500: "The runtime failed to load or run the model (details in the server log)",
    502: "The OCI registry behind /api/pull failed (unreachable, refused the login, or no model there)",
    503: "Not ready: starting, draining, model not loaded, or over the memory budget",
    504: "Past the request deadline (--request-timeout-ms)",
}
RETRY_AFTER = {"description": "seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}}


def _statuses(path: str, method: str, op: Operation) -> list[int]:
    """Error statuses an operation can answer, from the middleware and the route's work."""
    if path == "/v2/health/live":
        return []
    codes = {401, 403}
    if not path.startswith(ops.EXEMPT_PREFIXES):
        codes |= {429, 503}  # admission limit, draining
    if path == "/v2/health/ready":
        codes.add(503)
    if "{" in path or op.request:
        codes |= {400, 404}
        if not path.startswith(("/v1/", "/api/")):
            codes.add(422)  # /v1 and /api answer 400 for every invalid request, as OpenAI and Ollama do
    if method == "post":
        codes |= {400, 413, 415}
    if op.model_work:
        codes |= {500, 503, 504}
    if path == "/api/pull":
        codes.add(502)
    return sorted(codes)


def _error_schema(path: str) -> js.Schema:
    """Each protocol's own error body (what its official client reads)."""
    if path.startswith("/v1/messages"):
        return js.ref("AnthropicError")
    if path.startswith("/v1/"):
        return js.ref("OpenAIError")
    return js.ref("OllamaError" if path.startswith("/api/") else "V2Error")


def _responses(path: str, method: str, op: Operation) -> dict[str, Any]:
    if op.ok == "Metrics":
        ok: dict[str, Any] = {"text/plain": {"schema": {"type": "string"}}}
    else:
        ok = {JSON: {"schema": js.ref(op.ok) if op.ok != "Any" else {}}}
    if op.binary:
        ok[OCTETS] = {"schema": {"type": "string", "contentMediaType": OCTETS}}
    if op.streams and path.startswith("/api/"):
        ok[NDJSON] = {"schema": js.ref("OllamaNdjson")}  # Ollama's default: one JSON object per line
    elif op.streams:
        ok[SSE] = {"schema": js.ref("ServerSentEvent")}  # OpenAPI 3.1: ``schema`` describes each event
    success: dict[str, Any] = {"description": "OK", "content": ok}
    if op.binary:
        header = {"description": "length of the JSON header before the binary tensors", "schema": js.INTEGER}
        success["headers"] = {HEADER_LENGTH: header}
    responses: dict[str, Any] = {"200": success}
    error = _error_schema(path)
    for code in _statuses(path, method, op):
        schema = js.ref("Ready") if path == "/v2/health/ready" and code == 503 else error
        entry: dict[str, Any] = {"description": STATUS_TEXT[code], "content": {JSON: {"schema": schema}}}
        if code in (429, 503):
            entry["headers"] = {"Retry-After": RETRY_AFTER}
        responses[str(code)] = entry
    return responses


def _parameters(path: str, op: Operation, names: list[str], versions: list[str]) -> list[dict[str, Any]]:
    params = []
    for part in path.split("/"):
        if part.startswith("{"):
            name = part.strip("{}")
            values = names if name == "model" else versions if name == "version" else []
            schema = {"type": "string", "enum": values} if values else {"type": "string", "minLength": 1}
            params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if op.binary:
        length = {"type": "integer", "minimum": 0}
        doc = "with an octet-stream body: bytes of JSON header before the binary tensors"
        params.append({"name": HEADER_LENGTH, "in": "header", "required": False, "schema": length, "description": doc})
    return params


def _operation(route: Route, method: str, op: Operation, names: list[str], versions: list[str]) -> dict[str, Any]:
    operation_id = method + "".join(p.strip("{}").title() for p in route.path.replace("-", "/").split("/") if p)
    out: dict[str, Any] = {
        "operationId": operation_id.replace(".", ""),
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": _parameters(route.path, op, names, versions),
        "responses": _responses(route.path, method, op),
    }
    if route.path == "/v2/health/live":
        out["security"] = []
    if method == "post" and op.request:
        content: dict[str, Any] = {JSON: {"schema": js.ref(op.request)}}
        if op.binary:
            content[OCTETS] = {"schema": {"type": "string", "format": "binary"}}
        out["requestBody"] = {"required": op.body_required, "content": content}
    return out


def _serving(service: ModelService, names: list[str], capability: str) -> list[str]:
    """Names whose loaded model can do ``capability``, plus those not loaded yet (their capability is
    unknown until they load); every name when none qualifies, so requests still reach the model lookup."""
    if not capability:
        return names
    caps = {e.name: e.metadata.capabilities for e in service.loaded()}

    def can(name: str) -> bool:
        cap = caps.get(name)
        if cap is None:
            return True
        return not cap.generate if capability == "tensors" else bool(getattr(cap, capability))

    return [n for n in names if can(n)] or names


def _dynamic_schemas(service: ModelService, names: list[str]) -> dict[str, js.Schema]:
    """Request bodies that name the served models and the loaded models' exact input tensors."""
    model_inputs: list[list[js.Schema]] = []
    outputs: list[str] = []
    for entry in service.loaded():
        if entry.metadata.capabilities.generate:
            continue  # LLMs answer on /v1, not on v2 infer
        tensors = [js.concrete_input(s.name, s.datatype, s.shape) for s in entry.metadata.inputs]
        exact = [t for t in tensors if t is not None]
        if exact and len(exact) == len(tensors) and exact not in model_inputs:
            model_inputs.append(exact)
        outputs += [spec.name for spec in entry.metadata.outputs]
    max_tokens = max(1, int(service.settings.max_seq_len))
    generators = _serving(service, names, "generate")
    embedders = _serving(service, names, "embed")
    return {
        "InferRequest": js.infer_request(model_inputs, outputs),
        "ChatRequest": js.chat_request(generators, max_tokens),
        "CompletionRequest": js.completion_request(generators, max_tokens),
        "EmbeddingsRequest": js.embeddings_request(embedders),
        "OllamaChatRequest": cs.ollama_chat_request(generators, max_tokens),
        "OllamaGenerateRequest": cs.ollama_generate_request(generators, max_tokens),
        "OllamaEmbedRequest": cs.ollama_embed_request(embedders),
        "OllamaEmbeddingsRequest": cs.ollama_embeddings_request(embedders),
        "OllamaModelRequest": cs.ollama_model_request(names),
        "AnthropicMessagesRequest": cs.anthropic_messages_request(generators, max_tokens),
        "Any": {},
    }


def build_document(routes: list[Route], service: ModelService) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` as this service serves them now."""
    names = service.model_names()
    versions = sorted({str(row["version"]) for row in service.index()}, key=lambda v: (len(v), v))
    paths: dict[str, Any] = {}
    for route in routes:
        op = OPERATIONS.get(type(route.resource), GENERIC)
        paths[route.path] = {
            method: _operation(route, method, op, _serving(service, names, op.serves), versions)
            for method in ("get", "post")
            if hasattr(route.resource, f"on_{method}")
        }
    schemas = {**js.COMPONENTS, **cs.COMPONENTS, **_dynamic_schemas(service, names)}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "edge-runner", "version": __version__},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if service.settings.api_key:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        }
        document["security"] = [{"bearer": []}, {"apiKey": []}]
    return document


class OpenApiResource:
    """A generated OpenAPI 3.1 document of every registered route."""

    def __init__(self, routes: list[Route], service: ModelService) -> None:
        self.routes = routes
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = build_document(self.routes, self.service)
