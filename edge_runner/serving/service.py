"""``ModelService``: the one interface every HTTP route (and the ``run`` verb) serves models through.

``ModelManager`` implements it. Each of ``infer``, ``generate`` and ``embed`` resolves the model with the
same rules, checks its capability, queues the work (the per-model scheduler for tensors and embeddings, the
LLM engine's slots for generation), applies the request deadline, and counts the request in the model's
stats and the Prometheus metrics once, whatever the protocol.

Load policy, in one place (``ModelManager.acquire``): the KServe v2 routes follow Triton's explicit model
control (a model that is not loaded answers 503 until ``POST /v2/repository/models/{m}/load``); the LLM
and embedding routes follow OpenAI/Ollama clients' expectation and load a servable model on first use.
Models named in the ``lazy_models`` setting (by default the embedded OpenVINO/TFLite twins of ``digits``) are
not loaded at start and load on their first request on every route, v2 included.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from edge_runner.backends.base import Tensors
from edge_runner.config.settings import Settings
from edge_runner.core.errors import ModelNotFound, RequestCancelled, RequestTimeout
from edge_runner.core.generation import GenerationChunk, GenerationRequest
from edge_runner.core.manifest import Manifest
from edge_runner.serving.loaded_model import LoadedModel
from edge_runner.serving.metrics import Metrics

#: builds the backend request once the model's context length is known
RequestBuilder = Callable[[int], GenerationRequest]


class GenerationStream(Iterator[GenerationChunk]):
    """A backend's token stream that counts itself in stats/metrics exactly once, when it ends.

    Ending means: the last chunk was read (``ok``), the stream raised (the error's code), or the caller
    closed it early (``cancelled``, e.g. the HTTP client went away). ``close()`` frees the engine slot.
    """

    def __init__(
        self,
        inner: Iterator[GenerationChunk],
        on_end: Callable[[str], None],
        deadline: float | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self._inner = inner
        self._on_end: Callable[[str], None] | None = on_end
        self._deadline = deadline  # time.monotonic() past which the generation is stopped (504)
        self._cancelled = cancelled  # true once the client has gone away (the generation is stopped)

    def _end(self, status: str) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(status)

    def __iter__(self) -> GenerationStream:
        return self

    def __next__(self) -> GenerationChunk:
        return self._step(lambda: next(self._inner))

    def coalesced(self) -> Iterator[GenerationChunk]:
        """Chunks merged over a short linger when the backend supports it (fewer SSE events per token)."""
        merged = getattr(self._inner, "coalesced", None)
        source = merged() if merged is not None else self._inner
        while True:
            try:
                yield self._step(lambda: next(source))
            except StopIteration:
                return

    def _step(self, pull: Callable[[], GenerationChunk]) -> GenerationChunk:
        if self._cancelled is not None and self._cancelled():
            self._stop("cancelled")
            raise RequestCancelled("the client closed the connection; generation stopped")
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._stop("timeout")
            raise RequestTimeout(
                "generation did not finish within the request timeout; stream it (stream=true), lower "
                "max_tokens, or raise --request-timeout-ms"
            )
        try:
            chunk = pull()
        except StopIteration:
            self._end("ok")
            raise
        except Exception as exc:
            self._end(str(getattr(exc, "code", "inference_failed")))
            raise
        if chunk.finish_reason is not None:
            self._end("ok")
        return chunk

    def close(self) -> None:
        """Cancel the generation if it is still running; counted as ``cancelled`` then."""
        self._stop("cancelled")

    def _stop(self, status: str) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()
        self._end(status)


#: an OCI reference as pulled: ``host[:port]/path[:tag]`` (distribution-spec path components, optional digest)
_OCI_REF = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+"
    r"(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


def _with_tag(ref: str) -> str:
    """``host/repository`` and ``host/repository:latest`` are one reference (OCI's default tag)."""
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last or "@" in last else f"{ref}:latest"


def pulled_refs(service: ModelService) -> dict[str, tuple[str, int]]:
    """Every OCI reference a model here was pulled from (``/api/pull``, ``models pull``; its manifest's
    ``source.oci.ref``), with the tag made explicit -> the ``(name, version)`` of its latest pull."""
    found: dict[str, tuple[float, int, str]] = {}
    for row in service.index():
        name, version = str(row["name"]), int(row["version"])
        manifest = service.describe(name, version)
        oci = manifest.source.get("oci") if manifest is not None else None
        if not isinstance(oci, dict) or not isinstance(oci.get("ref"), str) or "/" not in oci["ref"]:
            continue  # not pulled, or pulled from an OCI layout folder
        pulled_at = oci.get("pulled_at")
        candidate = (float(pulled_at) if isinstance(pulled_at, int | float) else 0.0, version, name)
        ref = _with_tag(oci["ref"])
        found[ref] = max(found.get(ref, candidate), candidate)
    return {ref: (name, version) for ref, (_, version, name) in found.items()}


def pulled_model(service: ModelService, model: object) -> tuple[str, int] | None:
    """The model version a request's ``model`` names when it is an OCI reference (``host[:port]/repo[:tag]``,
    anything with a ``/``), as Docker Model Runner and Ollama users address what they pulled; None for a
    plain name; ModelNotFound when nothing here was pulled from that reference."""
    if not isinstance(model, str) or "/" not in model or not _OCI_REF.match(model):
        return None  # a plain name, or not a reference at all (``../etc``): the name check answers
    found = pulled_refs(service).get(_with_tag(model))
    if found is None:
        raise ModelNotFound(
            f"model {model!r}: nothing here was pulled from that reference; pull it first (POST /api/pull, or "
            "'edge-runner models pull REF')"
        )
    return found


class ModelService(Protocol):
    """What the server needs from the model side; ``ModelManager`` is the implementation."""

    settings: Settings
    metrics: Metrics | None
    budget: int

    def model_names(self) -> list[str]: ...

    def describe(self, name: str, version: int | None = None) -> Manifest | None: ...

    def pull(self, ref: str) -> Manifest: ...

    def get(self, name: str, version: int | None = None) -> LoadedModel: ...

    def acquire(self, name: str, version: int | None, load: bool = False, touch: bool = True) -> LoadedModel: ...

    def loaded(self) -> list[LoadedModel]: ...

    def load(self, name: str, version: int | None = None) -> list[LoadedModel]: ...

    def unload(self, name: str, version: int | None = None) -> list[int]: ...

    def set_keep_alive(self, name: str, seconds: float) -> None: ...

    def index(self) -> list[dict[str, Any]]: ...

    def ps_rows(self) -> list[dict[str, Any]]: ...

    def infer(
        self,
        name: str,
        version: int | None,
        inputs: Tensors,
        datatypes: Mapping[str, str],
        outputs: Sequence[str] | None,
    ) -> tuple[LoadedModel, Tensors]: ...

    def generate(
        self,
        name: str,
        version: int | None,
        build: RequestBuilder,
        timeout_s: float | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> tuple[LoadedModel, GenerationStream]: ...

    def embed(self, name: str, version: int | None, texts: Sequence[str]) -> tuple[LoadedModel, np.ndarray, int]: ...
