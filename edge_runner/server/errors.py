"""The one table from domain errors to HTTP statuses, and the Falcon error handlers."""

from __future__ import annotations

import logging
from typing import Any

import falcon

from edge_runner.core import errors as e
from edge_runner.protocol.anthropic import error_body as anthropic_error_body

log = logging.getLogger("edge_runner.server")

# Most specific class first: the first isinstance match wins.
STATUS_TABLE: tuple[tuple[type[e.EdgeRunnerError], int], ...] = (
    (e.PayloadTooLarge, 413),
    (e.UnsupportedMediaType, 415),
    (e.Forbidden, 403),
    (e.MalformedRequest, 400),
    (e.InvalidModelName, 400),
    (e.InvalidInput, 422),
    (e.Unauthorized, 401),
    (e.ModelNotFound, 404),
    (e.UnsupportedOperation, 400),
    (e.ConfigError, 400),
    (e.Overloaded, 429),
    (e.ModelNotReady, 503),
    (e.MemoryBudgetExceeded, 503),
    (e.RequestTimeout, 504),
    (e.RequestCancelled, 499),  # nginx's "client closed request": nobody reads it, the logs and metrics do
    (e.RegistryError, 502),  # the registry behind /api/pull failed us, not the client
    (e.ModelLoadError, 500),
    (e.InferenceError, 500),
)


def status_for(exc: e.EdgeRunnerError) -> tuple[int, int | None]:
    """(HTTP status, Retry-After seconds or None) for a domain error."""
    status = next((code for cls, code in STATUS_TABLE if isinstance(exc, cls)), 500)
    retry: int | None = None
    if isinstance(exc, e.Overloaded):
        retry = exc.retry_after_s
    elif status == 503:
        retry = int(getattr(exc, "retry_after_s", 1))
    return status, retry


def _set_error(resp: falcon.Response, status: int, body: dict[str, Any], retry: int | None) -> None:
    resp.status = status
    resp.media = body
    if retry is not None:
        resp.set_header("Retry-After", str(retry))


def _wants_anthropic(req: falcon.Request) -> bool:
    path = str(req.path)
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def _wants_openai(req: falcon.Request) -> bool:
    return str(req.path).startswith("/v1/") and not _wants_anthropic(req)


def _client_status(req: falcon.Request, status: int) -> int:
    """OpenAI, Anthropic and Ollama clients expect 400 for every invalid request (422 is v2's)."""
    return 400 if status == 422 and str(req.path).startswith(("/v1/", "/api/")) else status


def _error_body(req: falcon.Request, exc: e.EdgeRunnerError, status: int) -> dict[str, Any]:
    """The error object in the protocol of the path (v2 and Ollama both read ``{"error": message}``)."""
    if _wants_anthropic(req):
        return anthropic_error_body(status, exc.message)
    if _wants_openai(req):
        return openai_error_body(exc, status)
    return {"error": exc.message}


def openai_error_body(exc: e.EdgeRunnerError, status: int) -> dict[str, Any]:
    """The OpenAI error object for a domain error."""
    kind = "invalid_request_error" if status < 500 and status not in (429,) else "server_error"
    if status == 429:
        kind = "rate_limit_exceeded"
    return {"error": {"message": exc.message, "type": kind, "code": exc.code, "param": None}}


def handle_domain_error(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    """Map an EdgeRunnerError to its status; OpenAI and Anthropic routes get their own error shapes."""
    assert isinstance(exc, e.EdgeRunnerError)
    status, retry = status_for(exc)
    status = _client_status(req, status)
    if status >= 500:
        log.warning("%s %s -> %d: %s", req.method, req.path, status, exc.message)
    _set_error(resp, status, _error_body(req, exc, status), retry)


def handle_http_error(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    """Falcon's own errors (404 route, 405 method, bad headers) in our error shape."""
    assert isinstance(exc, falcon.HTTPError)
    message = exc.description or exc.title or "error"
    status = int(exc.status_code)
    body: dict[str, Any]
    if _wants_anthropic(req):
        body = anthropic_error_body(status, message)
    elif _wants_openai(req):
        body = {"error": {"message": message, "type": "invalid_request_error", "code": str(status), "param": None}}
    else:
        body = {"error": message}
    _set_error(resp, status, body, None)
    headers = exc.headers
    if isinstance(headers, dict):
        for name, value in headers.items():
            resp.set_header(name, value)


def handle_unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    """Anything else: log the traceback here, never send it to the client."""
    log.exception("unhandled error on %s %s", req.method, req.path)
    err = e.EdgeRunnerError(f"internal error ({type(exc).__name__}); see the server log")
    _set_error(resp, 500, _error_body(req, err, 500), None)


def install(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    """Register the handlers; Falcon picks the most specific class."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(e.EdgeRunnerError, handle_domain_error)
