"""``create_app(service, settings)``: the Falcon application with every route.

Routes are declared once in ``build_routes``; ``/openapi.json`` is generated
from the same table so the spec cannot drift from what is served.
"""

from __future__ import annotations

import hmac
from typing import Any

import falcon

from edge_runner.config.settings import Settings
from edge_runner.core.errors import Unauthorized
from edge_runner.server import errors as server_errors
from edge_runner.server import kserve
from edge_runner.server.anthropic_routes import anthropic_routes
from edge_runner.server.ollama_routes import ollama_routes
from edge_runner.server.openai_routes import openai_routes
from edge_runner.server.openapi import OpenApiResource
from edge_runner.server.ops import AdmissionMiddleware, MetricsResource
from edge_runner.server.routes import Route
from edge_runner.server.security import BrowserGuard
from edge_runner.serving.service import ModelService

OPEN_PATHS = {"/v2/health/live"}


class AuthMiddleware:
    """API key check on every route but liveness: ``Authorization: Bearer KEY``, or ``x-api-key: KEY`` as the
    Anthropic client sends it."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not self.api_key or req.path in OPEN_PATHS:
            return
        header = req.get_header("Authorization") or ""
        token = header[7:] if header.startswith("Bearer ") else req.get_header("x-api-key") or ""
        if not hmac.compare_digest(token.encode(), self.api_key.encode()):
            raise Unauthorized("missing or wrong API key: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>')")


def build_routes(service: ModelService, settings: Settings, state: dict[str, bool]) -> list[Route]:
    """The KServe v2 route table."""
    meta = kserve.ModelMetadataResource(service)
    ready = kserve.ModelReadyResource(service)
    infer = kserve.InferResource(service, settings.max_body_bytes)
    stats = kserve.StatsResource(service)
    config = kserve.ModelConfigResource(service)
    version = "/v2/models/{model}/versions/{version}"
    return [
        Route("/v2", kserve.ServerMetadataResource(), "Server metadata and protocol extensions"),
        Route("/v2/health/live", kserve.LiveResource(), "Liveness (never needs the API key)"),
        Route("/v2/health/ready", kserve.ReadyResource(state), "Readiness: 200 once start-up loads are done"),
        Route("/v2/models/stats", stats, "Statistics of every loaded model"),
        Route("/v2/models/{model}", meta, "Model metadata: inputs, outputs, device and why"),
        Route(version, meta, "Metadata of one version"),
        Route("/v2/models/{model}/ready", ready, "Model readiness"),
        Route(f"{version}/ready", ready, "Version readiness"),
        Route("/v2/models/{model}/config", config, "Triton-style model configuration"),
        Route(f"{version}/config", config, "Triton-style configuration of one version"),
        Route("/v2/models/{model}/infer", infer, "Inference (JSON or binary tensor extension)"),
        Route(f"{version}/infer", infer, "Inference on one version"),
        Route("/v2/models/{model}/stats", stats, "Statistics of one model"),
        Route(f"{version}/stats", stats, "Statistics of one version"),
        Route("/v2/repository/index", kserve.RepositoryIndexResource(service), "Every model version and its state"),
        Route("/v2/repository/models/{model}/load", kserve.RepositoryLoadResource(service, "load"), "Load a model"),
        Route(
            "/v2/repository/models/{model}/unload", kserve.RepositoryLoadResource(service, "unload"), "Unload a model"
        ),
    ]


def all_routes(
    service: ModelService, settings: Settings, state: dict[str, bool], admission: AdmissionMiddleware
) -> list[Route]:
    """Every route the app serves: KServe v2, operations and OpenAI (``/openapi.json`` is added on top)."""
    routes = build_routes(service, settings, state)
    if service.metrics is not None and settings.enable_metrics:
        service.metrics.attach_state(service.ps_rows, lambda: admission.in_flight)
        routes.append(Route("/metrics", MetricsResource(service.metrics), "Prometheus metrics", "operations"))
    return routes + openai_routes(service) + anthropic_routes(service) + ollama_routes(service)


def create_app(
    service: ModelService,
    settings: Settings,
    state: dict[str, bool] | None = None,
    admission: AdmissionMiddleware | None = None,
) -> falcon.App[falcon.Request, falcon.Response]:
    """The WSGI app; ``state`` carries readiness/draining flags shared with the serve loop."""
    state = state if state is not None else {"ready": True}
    admission = admission or AdmissionMiddleware(settings.max_concurrent_requests, service.metrics)
    # Browser guard, then auth: a foreign page or an unauthenticated flood must not take admission slots.
    guard = BrowserGuard(settings.host, settings.allowed_origins, sorted(OPEN_PATHS))
    middleware: list[Any] = [guard, AuthMiddleware(settings.api_key), admission]
    app = falcon.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    server_errors.install(app)
    routes = all_routes(service, settings, state, admission)
    for route in routes:
        app.add_route(route.path, route.resource)
    app.add_route("/openapi.json", OpenApiResource(routes, service))
    return app
