"""The one table from domain errors to HTTP statuses, and the Falcon error handlers."""

from __future__ import annotations

import logging
from typing import Any

import falcon

from edge_runner.core import errors as e

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


def _wants_openai(req: falcon.Request) -> bool:
    return str(req.path).startswith("/v1/")


def openai_error_body(exc: e.EdgeRunnerError, status: int) -> dict[str, Any]:
    """The OpenAI error object for a domain error."""
    kind = "invalid_request_error" if status < 500 and status not in (429,) else "server_error"
    if status == 429:
        kind = "rate_limit_exceeded"
    return {"error": {"message": exc.message, "type": kind, "code": exc.code, "param": None}}


def handle_domain_error(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    """Map an EdgeRunnerError to its status; OpenAI routes get the OpenAI error shape."""
    assert isinstance(exc, e.EdgeRunnerError)
    status, retry = status_for(exc)
    if status == 422 and _wants_openai(req):
        status = 400  # OpenAI clients expect 400 for every invalid request
    if status >= 500:
        log.warning("%s %s -> %d: %s", req.method, req.path, status, exc.message)
    body = openai_error_body(exc, status) if _wants_openai(req) else {"error": exc.message}
    _set_error(resp, status, body, retry)


def handle_http_error(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    """Falcon's own errors (404 route, 405 method, bad headers) in our error shape."""
    assert isinstance(exc, falcon.HTTPError)
    message = exc.description or exc.title or "error"
    status = int(exc.status_code)
    body: dict[str, Any]
    if _wants_openai(req):
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
    body = openai_error_body(err, 500) if _wants_openai(req) else {"error": err.message}
    _set_error(resp, 500, body, None)


def install(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    """Register the handlers; Falcon picks the most specific class."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(e.EdgeRunnerError, handle_domain_error)
