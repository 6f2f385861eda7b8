"""Domain errors of edge-runner.

These know nothing of HTTP: each carries a stable ``code`` string and the
server maps classes to statuses in one table (``edge_runner.server.errors``).
The CLI maps them to exit codes. Messages say what was expected and what to do.
"""

from __future__ import annotations


class EdgeRunnerError(Exception):
    """Base of every error edge-runner raises on purpose."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(EdgeRunnerError):
    """A setting is unknown or has a bad value (names the key and its source)."""

    code = "config_error"


class InvalidInput(EdgeRunnerError):
    """The request is malformed: bad JSON, wrong datatype, shape, name or size."""

    code = "invalid_input"


class MalformedRequest(InvalidInput):
    """The body is not the protocol's shape at all (bad JSON, missing fields)."""

    code = "malformed_request"


class PayloadTooLarge(InvalidInput):
    """The request body exceeds the configured limit."""

    code = "payload_too_large"


class Unauthorized(EdgeRunnerError):
    """A route that needs the API key was called without it."""

    code = "unauthorized"


class Forbidden(EdgeRunnerError):
    """The request comes from a place this server does not serve (a foreign web page, a rebound host name)."""

    code = "forbidden"


class RegistryError(EdgeRunnerError):
    """An OCI registry cannot be reached, refuses us, or holds no edge-runner model at the reference."""

    code = "registry_error"


class UnsupportedMediaType(InvalidInput):
    """A request body of a content type the route does not take."""

    code = "unsupported_media_type"


class ModelNotFound(EdgeRunnerError):
    """No model (or version) of that name in the repository."""

    code = "model_not_found"


class InvalidModelName(InvalidInput):
    """A model name that is not a safe folder name."""

    code = "invalid_model_name"


class ModelNotReady(EdgeRunnerError):
    """The model exists but is not loaded (or is still loading)."""

    code = "model_not_ready"
    retry_after_s = 1


class ModelLoadError(EdgeRunnerError):
    """The runtime refused to load an artifact."""

    code = "model_load_failed"


class IntegrityError(ModelLoadError):
    """A file's sha256 or size does not match its manifest."""

    code = "integrity_error"


class ManifestError(ModelLoadError):
    """A manifest.json is missing, unreadable or incomplete."""

    code = "manifest_error"


class SignatureError(IntegrityError):
    """A bundle's signature does not verify: it was modified after signing, or signed by another key."""

    code = "signature_invalid"


class BundleError(InvalidInput):
    """A model bundle is malformed, holds a member it may not, or unpacks to more than allowed."""

    code = "invalid_bundle"


class UntrustedBundle(EdgeRunnerError):
    """A bundle is unsigned, or signed by a key nobody trusts, where a trusted signature is required."""

    code = "untrusted_bundle"


class SigningUnavailable(EdgeRunnerError):
    """Signing or verifying bundles needs the optional ``cryptography`` package (the ``sign`` extra)."""

    code = "signing_unavailable"


class BackendUnavailable(ModelLoadError):
    """The runtime a model needs is not installed."""

    code = "backend_unavailable"


class UnsupportedOperation(EdgeRunnerError):
    """The model cannot do what was asked (e.g. generate on a tensor model)."""

    code = "unsupported"


class Overloaded(EdgeRunnerError):
    """Too many requests in flight or queued; retry later."""

    code = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class MemoryBudgetExceeded(EdgeRunnerError):
    """A model does not fit in the memory budget and nothing can be evicted."""

    code = "memory_budget_exceeded"


class RequestTimeout(EdgeRunnerError):
    """The request did not complete within its deadline."""

    code = "timeout"


class RequestCancelled(EdgeRunnerError):
    """The client went away before its answer was ready; the work was stopped."""

    code = "cancelled"


class InferenceError(EdgeRunnerError):
    """The runtime failed while running a validated request."""

    code = "inference_failed"
