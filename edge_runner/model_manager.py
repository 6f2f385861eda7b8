"""Loaded models: load/unload by version policy, backend choice, schedulers and stats."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_runner.backends.base import Backend, ModelMetadata, SelectionStep, Tensors
from edge_runner.backends.registry import get_backend
from edge_runner.config import Settings
from edge_runner.errors import (
    EdgeRunnerError,
    MemoryBudgetExceeded,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    UnsupportedOperation,
)
from edge_runner.loaded_model import LoadedModel
from edge_runner.manifest import Manifest, verify_files
from edge_runner.memory import (
    Resident,
    estimate_load_bytes,
    mapped_by_folder,
    mapped_files,
    plan_evictions,
    process_rss,
    resolve_budget,
)
from edge_runner.metrics import Metrics
from edge_runner.profiles import Profile
from edge_runner.repository import ModelRepository, select_versions
from edge_runner.scheduler import BatchPolicy, ModelScheduler
from edge_runner.stats import LatencyStats
from edge_runner.validation import validate_inputs

log = logging.getLogger("edge_runner.models")

DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"


class ModelManager:
    """Owns every loaded model; the server and CLI go through it."""

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
        self._memory_lock = threading.Lock()
        self._models: dict[tuple[str, int], LoadedModel] = {}
        self._states: dict[tuple[str, int], tuple[str, str]] = {}
        self._lock = threading.RLock()
        self._load_locks: dict[str, threading.Lock] = {}

    # ---- discovery -------------------------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        """Every servable model name (external ones replace the repository)."""
        return sorted(self.external) if self.external else self.repository.list_models()

    def _versions(self, name: str) -> list[int]:
        if self.external:
            if name not in self.external:
                raise ModelNotFound(f"model {name!r} is not served; models: {sorted(self.external)}")
            return [self._resolve(name, None)[1].version]
        return self.repository.versions(name)

    def _resolve(self, name: str, version: int | None) -> tuple[Path, Manifest]:
        if name in self.external:
            from edge_runner.external import manifest_for_path

            return manifest_for_path(self.external[name], name)
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

    def _choose_backend(self, manifest: Manifest) -> tuple[type[Backend], tuple[SelectionStep, ...]]:
        """Manifest pin, then the --backend pin (when it serves the format), then the profile's order."""
        pinned = manifest.backend
        if not pinned and self.settings.backend and manifest.format in get_backend(self.settings.backend).formats:
            pinned = self.settings.backend
        name, steps = self.profile.choose_backend(manifest.format, pinned=pinned)
        return get_backend(name), steps

    def _make_room(self, name: str, version: int, manifest: Manifest) -> None:
        need = estimate_load_bytes(sum(f.size for f in manifest.files), self.settings.use_mmap)
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
        self._make_room(name, version, manifest)
        cls, backend_steps = self._choose_backend(manifest)  # probes, so the runtime's import is not charged
        rss_before = process_rss()
        cache = self.settings.cache_root() / "compiled" / name / str(version) / cls.name
        options = self.profile.load_options(cls.name, threads=self.settings.threads, cache_dir=cache)
        if self.settings.device:
            options = replace(options, devices=(*self.settings.device, *options.devices))
        # Settings that are also backend options win over the profile's backend table: they were layered
        # already (defaults < profile [settings] < file < env < CLI).
        merged = {
            **options.options,
            "graph_optimization_level": self.settings.graph_optimization_level,
            "max_seq_len": self.settings.max_seq_len,
            "mlock": self.settings.mlock,
        }
        options = replace(options, options=merged, use_mmap=self.settings.use_mmap and options.use_mmap)
        backend = cls(manifest, folder, options)
        if self.metrics is not None:
            backend.on_first_token = self.metrics.ttft.labels(name).observe
        backend.load()
        try:
            return self._serve(name, version, manifest, folder, backend, backend_steps, rss_before)
        except BaseException:
            backend.unload()  # a half-built entry must not keep the runtime's memory
            raise

    def _serve(
        self,
        name: str,
        version: int,
        manifest: Manifest,
        folder: Path,
        backend: Backend,
        backend_steps: tuple[SelectionStep, ...],
        rss_before: int,
    ) -> LoadedModel:
        """Wrap a loaded backend: metadata, scheduler, keep-alive and measured memory."""
        meta = replace(backend.metadata(), selection=(*backend_steps, *backend.metadata().selection))
        stats = LatencyStats()
        scheduler = None
        if not meta.capabilities.generate:
            scheduler = ModelScheduler(
                backend,
                self._policy(manifest, meta),
                meta.capabilities.batching,
                on_batch=self._batch_observer(name, version, stats),
                name=f"{name}-{version}",
            )
        keep_alive = float(manifest.extra.get("keep_alive_s", self.settings.keep_alive))
        mapped = mapped_files(folder)
        measured = process_rss() - rss_before - mapped.rss_bytes
        # RSS growth alone undercounts when the allocator reuses pages a previous model freed; weights that are
        # not mapped from the artifact were copied into private memory, so they are a floor.
        copied = sum(f.size for f in manifest.files) - mapped.size_bytes
        resident = max(0, measured, copied)
        return LoadedModel(
            name, version, manifest, folder, backend, meta, scheduler, keep_alive, resident_bytes=resident, stats=stats
        )

    def _batch_observer(self, name: str, version: int, stats: LatencyStats) -> Callable[[int], None]:
        def observe(rows: int) -> None:
            stats.record_batch()
            if self.metrics is not None:
                self.metrics.observe_batch(name, version, rows)

        return observe

    def _policy(self, manifest: Manifest, meta: ModelMetadata) -> BatchPolicy:
        s = self.settings
        batching = dict(manifest.extra.get("batching", {}))
        return BatchPolicy(
            enabled=bool(batching.get("dynamic_batching", s.dynamic_batching)),
            max_batch_size=int(batching.get("max_batch_size", s.max_batch_size)),
            max_queue_delay_ms=float(batching.get("max_queue_delay_ms", s.max_queue_delay_ms)),
            preferred_batch_sizes=tuple(batching.get("preferred_batch_sizes", s.preferred_batch_sizes)),
            max_queue_size=int(batching.get("max_queue_size", s.max_queue_size)),
            instances=min(int(manifest.extra.get("instances", s.instances)), max(1, meta.capabilities.max_concurrency)),
        )

    def unload(self, name: str, version: int | None = None) -> list[int]:
        """Unload one version or all of a model; idempotent. Returns the versions unloaded."""
        with self._lock:
            keys = [k for k in self._models if k[0] == name and (version is None or k[1] == version)]
            entries = [self._models.pop(k) for k in keys]
            for key in keys:
                self._states[key] = ("UNAVAILABLE", "unloaded")
        for entry in entries:
            if entry.scheduler is not None:
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
        entry = self.get(name, version)
        entry.touch()
        start, rows = time.perf_counter(), 1
        try:
            if entry.scheduler is None:
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
                    "queue_depth": e.scheduler.queue_depth
                    if e.scheduler
                    else int(e.backend.runtime_stats().get("waiting", 0)),
                    "runtime": e.backend.runtime_stats(),
                    "latency": e.stats.percentiles(),
                }
            )
        return rows

    def close(self) -> None:
        """Unload everything."""
        for name in {entry.name for entry in self.loaded()}:
            self.unload(name)
