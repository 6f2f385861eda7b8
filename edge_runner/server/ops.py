"""Operations routes and middleware: admission control, /metrics, /api/ps."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import falcon

from edge_runner.core.errors import EdgeRunnerError, ModelNotReady, Overloaded
from edge_runner.protocol import ollama_listing
from edge_runner.serving.loaded_model import LoadedModel
from edge_runner.serving.metrics import CONTENT_TYPE, Metrics
from edge_runner.serving.service import ModelService

# Routes that must stay responsive under overload and never count against the limit.
EXEMPT_PREFIXES = ("/v2/health", "/metrics", "/api/ps", "/openapi.json")


class AdmissionMiddleware:
    """Counts requests in flight; beyond ``limit`` work requests get 429 + Retry-After at once."""

    def __init__(self, limit: int, metrics: Metrics | None = None) -> None:
        self.limit = limit
        self.metrics = metrics
        self.in_flight = 0  # every request, for draining on shutdown
        self.work = 0  # requests that count against the limit
        self.draining = False  # set on SIGTERM: new work is refused, in-flight work finishes
        self._lock = threading.Lock()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        exempt = str(req.path).startswith(EXEMPT_PREFIXES)
        with self._lock:
            self.in_flight += 1
            req.context.counted = True
            if exempt:
                return
            if self.draining:
                raise ModelNotReady("the server is shutting down; retry against another instance")
            if self.limit > 0 and self.work >= self.limit:
                rejected = True
            else:
                rejected = False
                self.work += 1
                req.context.work = True
        if rejected:
            if self.metrics is not None:
                self.metrics.rejected.labels("max_concurrent_requests").inc()
            raise Overloaded(
                f"server is at its limit of {self.limit} concurrent requests (MAX_CONCURRENT_REQUESTS); retry shortly",
                retry_after_s=1,
            )

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, ok: bool) -> None:
        if resp.stream is not None and not hasattr(resp.stream, "read") and req.context.get("counted"):
            # A streamed body (SSE) is produced after this hook: the request stays counted until the
            # server closes the stream (finished, or the client went away), so 429 fires before the
            # worker threads are all busy with streams.
            resp.stream = _CountedStream(resp.stream, lambda: self._release(req))
            return
        self._release(req)

    def _release(self, req: falcon.Request) -> None:
        with self._lock:
            if req.context.get("counted"):
                self.in_flight -= 1
                req.context.counted = False
            if req.context.get("work"):
                self.work -= 1
                req.context.work = False


class _CountedStream:
    """A WSGI body iterable that calls ``on_close`` once, when the server closes it."""

    def __init__(self, inner: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._inner = inner
        self._iter = iter(inner)
        self._on_close: Callable[[], None] | None = on_close

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._iter)

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()


class MetricsResource:
    """Prometheus text exposition."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = self.metrics.render()
        resp.content_type = CONTENT_TYPE


class PsResource:
    """``GET /api/ps`` (registered by the Ollama route table; ``edge-runner ps`` reads it too).

    Each model is edge-runner's own row (name, version, backend, device, memory, idle time, keep-alive,
    latency) with Ollama's fields added (model, size, size_vram, digest, details, expires_at,
    context_length); the top level adds the process RSS, the memory budget and the requests in flight.
    """

    def __init__(self, service: ModelService) -> None:
        self.service = service

    @staticmethod
    def _context_length(entry: LoadedModel) -> int:
        if not entry.metadata.capabilities.generate:
            return 0  # encoders and tensor models have no generation context
        try:
            return entry.backend.context_length()
        except EdgeRunnerError:  # unloaded since the listing
            return 0

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        from edge_runner.serving.memory import fmt_mb, process_rss

        loaded = {(e.name, e.version): e for e in self.service.loaded()}
        models = []
        for row in self.service.ps_rows():
            entry = loaded.get((row["name"], row["version"]))
            if entry is None:  # unloaded between the two calls
                continue
            models.append(ollama_listing.ps_model(row, entry.manifest, entry.keep_alive_s, self._context_length(entry)))
        rss = process_rss()
        resp.media = {
            "models": models,
            "rss_bytes": rss,
            "process_rss_bytes": rss,
            "memory_budget_bytes": self.service.budget,
            "in_flight": sum(e.in_flight() for e in loaded.values()),
            "summary": f"process RSS {fmt_mb(rss)}",
        }
