"""Browser safety: a web page must not be able to drive a server on the user's machine.

A page can make the browser POST to ``http://127.0.0.1:8000`` without a CORS preflight only with the
"simple" content types (``text/plain``, forms) and always names itself in ``Origin``; DNS rebinding
(Ollama's CVE-2024-28224) makes the page same-origin under a host name that resolves to 127.0.0.1, so the
``Host`` header carries the attacker's name. Hence, as Ollama does:

- bound to loopback, the ``Host`` must be a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``): 403;
- an ``Origin`` must be a loopback origin or one of ``allowed_origins``: 403 (CORS headers are sent for
  the allowed ones, so a local web UI works);
- POST bodies must be JSON (``application/json``) or the binary tensor extension
  (``application/octet-stream``); clients that send no type are taken as JSON. ``text/plain`` and form or
  multipart bodies get 415, except a form type without ``Origin`` (what ``curl -d`` sends), which is read
  as the JSON it is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import falcon

from edge_runner.core.errors import Forbidden, UnsupportedMediaType

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
BODY_TYPES = ("application/json", "application/octet-stream")
FORM_TYPE = "application/x-www-form-urlencoded"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, brackets allowed) is this machine's loopback."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class BrowserGuard:
    """Falcon middleware enforcing the rules in the module docstring; liveness is never refused."""

    def __init__(self, bound_host: str, allowed_origins: Sequence[str], open_paths: Sequence[str]) -> None:
        self.loopback_only = is_loopback(bound_host)
        self.allowed = {o.rstrip("/").lower() for o in allowed_origins}
        self.open_paths = set(open_paths)

    def origin_allowed(self, origin: str) -> bool:
        """Loopback origins (any port) and the configured ones."""
        if origin.rstrip("/").lower() in self.allowed:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and is_loopback(parts.hostname or "")

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path in self.open_paths:
            return
        if self.loopback_only and not is_loopback(req.host or ""):
            raise Forbidden(
                f"this server is bound to loopback and answers only to localhost, not to host {req.host!r} "
                "(a DNS-rebinding guard); bind a public address (--host) to serve other names"
            )
        origin = req.get_header("Origin")
        if origin is not None and not self.origin_allowed(origin):
            raise Forbidden(
                f"requests from web origin {origin!r} are not allowed; add it to allowed_origins "
                "(EDGE_RUNNER_ALLOWED_ORIGINS) to let that page call this server"
            )
        if req.method == "POST":
            kind = (req.content_type or "").split(";")[0].strip().lower()
            if kind and kind not in BODY_TYPES and not (kind == FORM_TYPE and origin is None):
                raise UnsupportedMediaType(
                    f"request bodies must be application/json (or application/octet-stream for binary tensors), "
                    f"not {kind}"
                )

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, ok: bool) -> None:
        origin = req.get_header("Origin")
        if origin is not None and self.origin_allowed(origin):
            resp.set_header("Access-Control-Allow-Origin", origin)
            resp.set_header("Vary", "Origin")
            if req.method == "OPTIONS":  # CORS preflight of an allowed page
                resp.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
                wanted = req.get_header("Access-Control-Request-Headers")
                resp.set_header("Access-Control-Allow-Headers", wanted or "Content-Type, Authorization, x-api-key")
                resp.set_header("Access-Control-Max-Age", "600")
