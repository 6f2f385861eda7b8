"""KServe v2 / Open Inference Protocol resources (health, metadata, infer, stats, repository)."""

from __future__ import annotations

from typing import Any

import falcon

from edge_runner import __version__
from edge_runner.core.errors import InvalidInput, MalformedRequest, ModelNotFound
from edge_runner.protocol.json_body import json_object
from edge_runner.protocol.kserve_codec import HEADER_LENGTH, decode_request, encode_response
from edge_runner.repository.store import validate_name
from edge_runner.server.body import read_body
from edge_runner.serving.loaded_model import LoadedModel
from edge_runner.serving.service import ModelService

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "model_configuration"]


def _version(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidInput(f"model version must be a positive integer, got {raw!r}")
    return int(raw)


def model_metadata(service: ModelService, entry: LoadedModel) -> dict[str, Any]:
    """The v2 model metadata object, with edge-runner's device choice and its reasons."""
    meta = entry.metadata
    versions = sorted({m.version for m in service.loaded() if m.name == entry.name})
    return {
        "name": entry.name,
        "versions": [str(v) for v in versions],
        "platform": f"{entry.backend.name}_{entry.manifest.format}",
        "inputs": [t.to_json() for t in meta.inputs],
        "outputs": [t.to_json() for t in meta.outputs],
        "parameters": {
            "backend": entry.backend.name,
            "device": meta.device,
            "selection": [s.to_json() for s in meta.selection],
            "quantization": entry.manifest.quantization,
            "task": entry.manifest.task,
            "capabilities": {
                "batching": meta.capabilities.batching,
                "generate": meta.capabilities.generate,
                "embed": meta.capabilities.embed,
            },
        },
    }


class ServerMetadataResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"name": "edge-runner", "version": __version__, "extensions": EXTENSIONS}


class LiveResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"live": True}


class ReadyResource:
    def __init__(self, state: dict[str, bool]) -> None:
        self.state = state

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ready = self.state.get("ready", False) and not self.state.get("draining", False)
        resp.status = 200 if ready else 503
        resp.media = {"ready": ready}
        if not ready:
            resp.set_header("Retry-After", "1")


class ModelMetadataResource:
    def __init__(self, service: ModelService) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, model: str, version: str | None = None) -> None:
        entry = self.service.acquire(validate_name(model), _version(version), touch=False)
        resp.media = model_metadata(self.service, entry)


class ModelReadyResource:
    def __init__(self, service: ModelService) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, model: str, version: str | None = None) -> None:
        entry = self.service.acquire(validate_name(model), _version(version), touch=False)
        resp.media = {"name": entry.name, "version": str(entry.version), "ready": True}


class ModelConfigResource:
    """Triton's model configuration view (``tritonclient`` ``get_model_config``)."""

    def __init__(self, service: ModelService) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, model: str, version: str | None = None) -> None:
        entry = self.service.acquire(validate_name(model), _version(version), touch=False)
        policy, batching = entry.scheduler.policy, entry.scheduler.batching
        resp.media = {
            "name": entry.name,
            "platform": f"{entry.backend.name}_{entry.manifest.format}",
            "backend": entry.backend.name,
            "max_batch_size": policy.max_batch_size if batching else 0,
            "input": [
                {"name": t.name, "data_type": f"TYPE_{t.datatype}", "dims": list(t.shape)}
                for t in entry.metadata.inputs
            ],
            "output": [
                {"name": t.name, "data_type": f"TYPE_{t.datatype}", "dims": list(t.shape)}
                for t in entry.metadata.outputs
            ],
            "dynamic_batching": {
                "max_queue_delay_microseconds": int(policy.max_queue_delay_ms * 1000),
                "preferred_batch_size": list(policy.preferred_batch_sizes),
            }
            if batching
            else None,
        }


class InferResource:
    def __init__(self, service: ModelService, max_body_bytes: int) -> None:
        self.service = service
        self.max_body_bytes = max_body_bytes

    def on_post(self, req: falcon.Request, resp: falcon.Response, model: str, version: str | None = None) -> None:
        name = validate_name(model)
        body = read_body(req, self.max_body_bytes)
        raw_len = req.get_header(HEADER_LENGTH)
        try:
            header_len = int(raw_len) if raw_len is not None else None
        except ValueError:
            raise MalformedRequest(f"{HEADER_LENGTH} must be an integer, got {raw_len!r}") from None
        request = decode_request(body, header_len)
        entry, results = self.service.infer(
            name, _version(version), request.inputs, request.input_datatypes, request.outputs
        )
        datatypes = {t.name: t.datatype for t in entry.metadata.outputs}
        payload, json_len = encode_response(entry.name, str(entry.version), request, results, datatypes)
        resp.data = payload
        if json_len is None:
            resp.content_type = falcon.MEDIA_JSON
        else:
            resp.content_type = "application/octet-stream"
            resp.set_header(HEADER_LENGTH, str(json_len))


class StatsResource:
    def __init__(self, service: ModelService) -> None:
        self.service = service

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, model: str | None = None, version: str | None = None
    ) -> None:
        entries = self.service.loaded()
        if model is not None:
            validate_name(model)
            wanted = _version(version)
            entries = [m for m in entries if m.name == model and (wanted is None or m.version == wanted)]
            if not entries:
                self.service.get(model, wanted)  # raises the precise not-found / not-ready error
        resp.media = {
            "model_stats": [
                {"name": m.name, "version": str(m.version), **m.stats.to_json()}
                for m in sorted(entries, key=lambda m: (m.name, m.version))
            ]
        }


class RepositoryIndexResource:
    def __init__(self, service: ModelService) -> None:
        self.service = service

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        ready_only = bool(json_object(read_body(req, 1 << 16)).get("ready", False))
        rows = self.service.index()
        resp.media = [r for r in rows if r["state"] == "READY"] if ready_only else rows


def _keep_alive(value: Any) -> float:
    from edge_runner.config.settings import to_duration_s

    try:
        return to_duration_s(value)
    except ValueError as exc:
        raise InvalidInput(f"keep_alive: {exc}") from None


class RepositoryLoadResource:
    def __init__(self, service: ModelService, action: str) -> None:
        self.service = service
        self.action = action

    def on_post(self, req: falcon.Request, resp: falcon.Response, model: str) -> None:
        name = validate_name(model)
        params = json_object(read_body(req, 1 << 16)).get("parameters") or {}
        if not isinstance(params, dict):
            raise MalformedRequest('\'parameters\' must be an object, e.g. {"parameters": {"keep_alive": "5m"}}')
        if self.action == "load":
            keep_alive = _keep_alive(params["keep_alive"]) if "keep_alive" in params else None  # validate first
            self.service.load(name)
            if keep_alive is not None:
                self.service.set_keep_alive(name, keep_alive)
        else:
            if name not in self.service.model_names():
                raise ModelNotFound(f"model {name!r} not found; available models: {self.service.model_names()}")
            self.service.unload(name)
        resp.media = {}
