"""Loaded models: load/unload by version policy, backend choice, schedulers and stats."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runner.backends.base import Tensors
from edge_runner.config.profiles import Profile
from edge_runner.config.settings import Settings
from edge_runner.core.errors import (
    EdgeRunnerError,
    MemoryBudgetExceeded,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    UnsupportedOperation,
)
from edge_runner.core.manifest import Manifest, verify_files
from edge_runner.repository.store import ModelRepository, select_versions
from edge_runner.serving.loaded_model import LoadedModel
from edge_runner.serving.loader import ModelLoader
from edge_runner.serving.memory import (
    Resident,
    estimate_load_bytes,
    mapped_by_folder,
    plan_evictions,
    resolve_budget,
)
from edge_runner.serving.metrics import Metrics
from edge_runner.serving.service import GenerationStream, RequestBuilder
from edge_runner.serving.validation import validate_inputs

log = logging.getLogger("edge_runner.models")


class ModelManager:
    """Owns every loaded model; implements ``ModelService``, the one path the server and CLI go through."""

    def __init__(
        self,
        settings: Settings,
        repository: ModelRepository,
        profile: Profile,
        external: Mapping[str, Path] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.profile = profile
        self.external = dict(external or {})
        self.metrics = metrics
        self.budget = resolve_budget(settings.memory_budget)
        self.loader = ModelLoader(settings, profile, metrics)
        self._memory_lock = threading.Lock()
        self._models: dict[tuple[str, int], LoadedModel] = {}
        self._states: dict[tuple[str, int], tuple[str, str]] = {}
        self._lock = threading.RLock()
        self._load_locks: dict[str, threading.Lock] = {}

    # ---- discovery -------------------------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        """Every servable model name (external ones replace the repository)."""
        return sorted(self.external) if self.external else self.repository.list_models()

    def describe(self, name: str, version: int | None = None) -> Manifest | None:
        """The manifest of ``version`` (default: the newest), read without loading anything; None for a
        model served from an external path (its manifest is only made when it loads) or a broken one."""
        if name in self.external:
            return None
        try:
            return self.repository.resolve(name, version)[1]
        except EdgeRunnerError:
            return None

    def pull(self, ref: str) -> Manifest:
        """Import the model at an OCI registry reference into the repository (next version, its own name);
        credentials from the docker config of the server's user. Refused when serving an external path."""
        if self.external:
            raise UnsupportedOperation("this server serves one --model-path; it has no repository to pull into")
        from edge_runner.repository import oci

        return oci.pull(
            self.repository, ref, None, plain_http=False, docker_config=None, max_bytes=self.settings.max_bundle_bytes
        )

    def _versions(self, name: str) -> list[int]:
        if self.external:
            if name not in self.external:
                raise ModelNotFound(f"model {name!r} is not served; models: {sorted(self.external)}")
            return [self._resolve(name, None)[1].version]
        return self.repository.versions(name)

    def _resolve(self, name: str, version: int | None) -> tuple[Path, Manifest]:
        if name in self.external:
            from edge_runner.repository.external import manifest_for_path

            return manifest_for_path(self.external[name], name, self.settings.quantization, self.budget)
        return self.repository.resolve(name, version)

    # ---- loading ---------------------------------------------------------------------------------------------
    def load(self, name: str, version: int | None = None) -> list[LoadedModel]:
        """Load ``version``, or the versions the policy selects; returns the loaded entries."""
        available = self._versions(name)
        wanted = [version] if version is not None else self._policy_versions(name, available)
        if version is not None and version not in available:
            raise ModelNotFound(f"model {name!r} has no version {version}; versions: {available}")
        with self._lock:
            lock = self._load_locks.setdefault(name, threading.Lock())
        with lock:
            return [self._load_one(name, v) for v in wanted]

    def _policy_versions(self, name: str, available: list[int]) -> list[int]:
        """The version policy, except that a preferred quantization (the seed's QUANTIZATION) picks the
        latest version quantized that way when the policy is ``latest`` and one exists."""
        wanted = self.settings.quantization
        if wanted and self.settings.version_policy == "latest" and not self.external:
            matching = [v for v in available if self._resolve(name, v)[1].quantization == wanted]
            if matching:
                return matching[-1:]
        return select_versions(available, self.settings.version_policy)

    def _load_one(self, name: str, version: int) -> LoadedModel:
        key = (name, version)
        with self._lock:
            if key in self._models:
                return self._models[key]
            self._states[key] = ("LOADING", "")
        try:
            with self._memory_lock:  # one load at a time keeps the RSS measurement attributable
                entry = self._build(name, version)
        except Exception as exc:
            error = exc if isinstance(exc, EdgeRunnerError) else ModelLoadError(f"{type(exc).__name__}: {exc}")
            with self._lock:
                self._states[key] = ("UNAVAILABLE", error.message)
            log.error("could not load %s v%s: %s", name, version, error.message)
            if error is exc:
                raise
            raise error from exc
        with self._lock:
            self._models[key] = entry
            self._states[key] = ("READY", "")
        steps = "; ".join(f"{s.candidate}: {s.reason}" for s in entry.metadata.selection)
        log.info(
            "loaded %s v%s on %s/%s%s",
            name,
            version,
            entry.backend.name,
            entry.metadata.device,
            f" ({steps})" if steps else "",
        )
        return entry

    def _make_room(self, name: str, version: int, manifest: Manifest, working_bytes: int = 0) -> None:
        """Evict idle models until the weights plus the backend's working memory (KV cache) fit the budget."""
        need = estimate_load_bytes(sum(f.size for f in manifest.files), self.settings.use_mmap) + working_bytes
        with self._lock:
            entries = list(self._models.items())
        mapped = mapped_by_folder([e.folder for _, e in entries])
        residents = [Resident(k, e.footprint(mapped[e.folder]), not e.busy, e.last_used) for k, e in entries]
        try:
            evict = plan_evictions(residents, need, self.budget)
        except ValueError as exc:
            raise MemoryBudgetExceeded(
                f"cannot load {name} v{version}: it {exc}; raise --memory-budget or unload a model"
            ) from None
        for key in evict:
            log.info("evicting idle %s v%s to fit %s v%s in the memory budget", key[0], key[1], name, version)
            if self.metrics is not None:
                self.metrics.evictions.labels(key[0]).inc()
            self.unload(*key)

    def _build(self, name: str, version: int) -> LoadedModel:
        folder, manifest = self._resolve(name, version)
        if name not in self.external:
            verify_files(folder, manifest)
        plan = self.loader.plan(name, version, manifest)
        working = plan.backend.working_memory_bytes(manifest, folder, plan.options)
        self._make_room(name, version, manifest, working)
        return self.loader.open(name, version, folder, manifest, plan)

    def acquire(self, name: str, version: int | None, load: bool = False, touch: bool = True) -> LoadedModel:
        """The loaded entry, marked as used; with ``load`` a servable model that is not loaded is loaded first.

        The one load policy (see ``edge_runner.serving.service``): v2 routes pass ``load=False``, the LLM and
        embedding routes ``load=True``; a model named in ``lazy_models`` loads on first use on every route.
        ``touch=False`` (status and metadata reads) leaves its idle clock alone, so probes never keep it loaded.
        """
        try:
            entry = self.get(name, version)
        except ModelNotReady:
            if not (load or name in self.settings.lazy_models):
                raise
            self.load(name, version)
            entry = self.get(name, version)
        if touch:
            entry.touch()
        return entry

    def unload(self, name: str, version: int | None = None) -> list[int]:
        """Unload one version or all of a model; idempotent. Returns the versions unloaded."""
        with self._lock:
            keys = [k for k in self._models if k[0] == name and (version is None or k[1] == version)]
            entries = [self._models.pop(k) for k in keys]
            for key in keys:
                self._states[key] = ("UNAVAILABLE", "unloaded")
        for entry in entries:
            entry.scheduler.close()
            entry.backend.unload()
            log.info("unloaded %s v%s", entry.name, entry.version)
        return [k[1] for k in keys]

    # ---- serving ---------------------------------------------------------------------------------------------
    def get(self, name: str, version: int | None = None) -> LoadedModel:
        """The loaded entry (latest loaded version when None)."""
        with self._lock:
            if version is not None:
                entry = self._models.get((name, version))
                if entry is not None:
                    return entry
            else:
                loaded = sorted((k for k in self._models if k[0] == name), key=lambda k: k[1])
                if loaded:
                    return self._models[loaded[-1]]
            candidates = [v for (n, v) in self._states if n == name and (version is None or v == version)]
            state = self._states[(name, max(candidates))] if candidates else ("", "")
        if name not in self.model_names():
            raise ModelNotFound(f"model {name!r} not found; available models: {self.model_names()}")
        if version is not None and version not in self._versions(name):
            raise ModelNotFound(f"model {name!r} has no version {version}; versions: {self._versions(name)}")
        reason = f" ({state[1]})" if state[1] else ""
        raise ModelNotReady(
            f"model {name!r} is not loaded{reason}; load it with POST /v2/repository/models/{name}/load"
        )

    def loaded(self) -> list[LoadedModel]:
        """Every loaded model version."""
        with self._lock:
            return list(self._models.values())

    def infer(
        self,
        name: str,
        version: int | None,
        inputs: Tensors,
        datatypes: Mapping[str, str],
        outputs: Sequence[str] | None,
    ) -> tuple[LoadedModel, Tensors]:
        """Validate, queue, run; records stats and metrics for successes and failures alike."""
        entry = self.acquire(name, version)
        start, rows = time.perf_counter(), 1
        try:
            if entry.metadata.capabilities.generate:
                raise UnsupportedOperation(
                    f"model {name!r} generates text: use /v1/chat/completions or /v1/completions, "
                    "not the v2 infer route"
                )
            validate_inputs(entry.metadata, inputs, datatypes, outputs)
            if entry.metadata.capabilities.batching:
                rows = int(next(iter(inputs.values())).shape[0])
            results = entry.scheduler.submit(inputs, outputs, self.settings.request_timeout_ms / 1000.0)
        except EdgeRunnerError as exc:
            self.record(entry, time.perf_counter() - start, exc.code, rows)
            raise
        self.record(entry, time.perf_counter() - start, "ok", rows)
        entry.touch()
        return entry, {k: np.asarray(v) for k, v in results.items()}

    def generate(
        self,
        name: str,
        version: int | None,
        build: RequestBuilder,
        timeout_s: float | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> tuple[LoadedModel, GenerationStream]:
        """Start a generation on the model's engine; the stream counts itself in stats when it ends.

        ``timeout_s`` bounds the whole generation (non-streamed answers); ``cancelled`` reports that the
        client went away. Either stops the engine sequence and frees its slot.
        """
        entry = self.acquire(name, version, load=True)
        start = time.perf_counter()

        def on_end(status: str) -> None:
            self.record(entry, time.perf_counter() - start, status)
            entry.touch()

        try:
            if not entry.metadata.capabilities.generate:
                raise UnsupportedOperation(f"model {entry.name!r} does not generate text; use /v1/embeddings")
            request = build(entry.backend.context_length() or self.settings.max_seq_len)
            inner = entry.backend.generate(request)
        except EdgeRunnerError as exc:
            on_end(exc.code)
            raise
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        return entry, GenerationStream(inner, on_end, deadline, cancelled)

    def embed(self, name: str, version: int | None, texts: Sequence[str]) -> tuple[LoadedModel, np.ndarray, int]:
        """Embed ``texts`` through the model's queue (deadline and queue limit as for ``infer``).

        Returns the entry, one unit-length row per text, and the tokens the texts took.
        """
        entry = self.acquire(name, version, load=True)
        start = time.perf_counter()
        backend = entry.backend
        try:
            if not entry.metadata.capabilities.embed:
                raise UnsupportedOperation(f"model {entry.name!r} does not produce embeddings")
            vectors, tokens = entry.scheduler.run(
                lambda: (backend.embed(texts), backend.count_tokens(texts)), self.settings.request_timeout_ms / 1000.0
            )
        except EdgeRunnerError as exc:
            self.record(entry, time.perf_counter() - start, exc.code, len(texts))
            raise
        self.record(entry, time.perf_counter() - start, "ok", len(texts))
        entry.touch()
        return entry, vectors, tokens

    def record(self, entry: LoadedModel, seconds: float, status: str, rows: int = 1) -> None:
        """Count one request of ``entry`` (status ``ok`` or an error code) in its stats and the metrics."""
        entry.stats.record(seconds, status == "ok", rows, now_ns=time.time_ns())
        if self.metrics is not None:
            self.metrics.observe_request(entry.name, entry.version, status, seconds)

    def index(self) -> list[dict[str, Any]]:
        """Repository index rows: every model version with its state and reason."""
        rows = []
        for name in self.model_names():
            for version in self._versions(name):
                state, reason = self._states.get((name, version), ("UNAVAILABLE", "not loaded"))
                rows.append({"name": name, "version": str(version), "state": state, "reason": reason})
        return rows

    def set_keep_alive(self, name: str, seconds: float) -> None:
        """Change a loaded model's keep-alive (-1 forever, 0 unload now, N seconds idle)."""
        entries = [e for e in self.loaded() if e.name == name]
        if not entries:
            self.get(name)
        for entry in entries:
            entry.keep_alive_s = seconds
        if seconds == 0:
            self.unload(name)

    def reap_idle(self, now: float | None = None) -> list[tuple[str, int]]:
        """Unload models idle for longer than their keep-alive; returns what was unloaded."""
        now = time.monotonic() if now is None else now
        expired = [
            (e.name, e.version)
            for e in self.loaded()
            if e.keep_alive_s >= 0 and not e.busy and now - e.last_used >= e.keep_alive_s
        ]
        for name, version in expired:
            log.info("unloading %s v%s: idle past its keep-alive", name, version)
            self.unload(name, version)
        return expired

    def ps_rows(self) -> list[dict[str, Any]]:
        """What ``ps`` and /api/ps show for each loaded model."""
        now = time.monotonic()
        rows = []
        entries = sorted(self.loaded(), key=lambda m: (m.name, m.version))
        mapped = mapped_by_folder([e.folder for e in entries])
        for e in entries:
            rows.append(
                {
                    "name": e.name,
                    "version": e.version,
                    "backend": e.backend.name,
                    "device": e.metadata.device,
                    "selection": [s.to_json() for s in e.metadata.selection],
                    "memory": e.memory(mapped[e.folder]),
                    "idle_s": round(now - e.last_used, 1),
                    "busy": e.busy,
                    "keep_alive": "forever" if e.keep_alive_s < 0 else f"{e.keep_alive_s:g}s",
                    "queue_depth": e.scheduler.queue_depth + int(e.backend.runtime_stats().get("waiting", 0)),
                    "runtime": e.backend.runtime_stats(),
                    "latency": e.stats.percentiles(),
                }
            )
        return rows

    def close(self) -> None:
        """Unload everything."""
        for name in {entry.name for entry in self.loaded()}:
            self.unload(name)
