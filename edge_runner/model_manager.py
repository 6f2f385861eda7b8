"""Loaded models: load/unload by version policy, backend choice, schedulers and stats."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runner.backends.base import Backend, ModelMetadata, Tensors
from edge_runner.backends.registry import get_backend
from edge_runner.config import Settings
from edge_runner.errors import BackendUnavailable, EdgeRunnerError, ModelNotFound, ModelNotReady
from edge_runner.manifest import DEFAULT_BACKEND_FOR_FORMAT, Manifest, verify_files
from edge_runner.profiles import Profile
from edge_runner.repository import ModelRepository, select_versions
from edge_runner.scheduler import BatchPolicy, ModelScheduler
from edge_runner.stats import LatencyStats
from edge_runner.validation import validate_inputs

log = logging.getLogger("edge_runner.models")

DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"


@dataclass(eq=False)
class LoadedModel:
    """One model version that is loaded and serving."""

    name: str
    version: int
    manifest: Manifest
    folder: Path
    backend: Backend
    metadata: ModelMetadata
    scheduler: ModelScheduler | None
    keep_alive_s: float
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    stats: LatencyStats = field(default_factory=LatencyStats)

    def touch(self) -> None:
        """Mark as used now (for idle unload and LRU eviction)."""
        self.last_used = time.monotonic()


class ModelManager:
    """Owns every loaded model; the server and CLI go through it."""

    def __init__(self, settings: Settings, repository: ModelRepository, profile: Profile,
                 external: Mapping[str, Path] | None = None) -> None:
        self.settings = settings
        self.repository = repository
        self.profile = profile
        self.external = dict(external or {})
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
        wanted = [version] if version is not None else select_versions(available, self.settings.version_policy)
        if version is not None and version not in available:
            raise ModelNotFound(f"model {name!r} has no version {version}; versions: {available}")
        with self._lock:
            lock = self._load_locks.setdefault(name, threading.Lock())
        with lock:
            return [self._load_one(name, v) for v in wanted]

    def _load_one(self, name: str, version: int) -> LoadedModel:
        key = (name, version)
        with self._lock:
            if key in self._models:
                return self._models[key]
            self._states[key] = ("LOADING", "")
        try:
            entry = self._build(name, version)
        except EdgeRunnerError as exc:
            with self._lock:
                self._states[key] = ("UNAVAILABLE", exc.message)
            log.error("could not load %s v%s: %s", name, version, exc.message)
            raise
        with self._lock:
            self._models[key] = entry
            self._states[key] = ("READY", "")
        steps = "; ".join(f"{s.candidate}: {s.reason}" for s in entry.metadata.selection)
        log.info("loaded %s v%s on %s/%s%s", name, version, entry.backend.name, entry.metadata.device,
                 f" ({steps})" if steps else "")
        return entry

    def _choose_backend(self, manifest: Manifest) -> type[Backend]:
        if manifest.backend:
            return get_backend(manifest.backend)
        for backend_name in getattr(self.profile, "backend_order", ()):
            try:
                cls = get_backend(backend_name)
            except BackendUnavailable:
                continue
            if manifest.format in cls.formats and cls.probe().available:
                return cls
        default = DEFAULT_BACKEND_FOR_FORMAT.get(manifest.format, manifest.format)
        return get_backend(default)

    def _build(self, name: str, version: int) -> LoadedModel:
        folder, manifest = self._resolve(name, version)
        if name not in self.external:
            verify_files(folder, manifest)
        cls = self._choose_backend(manifest)
        cache = self.settings.cache_root() / "compiled" / name / str(version) / cls.name
        options = self.profile.load_options(cls.name, threads=self.settings.threads, cache_dir=cache)
        merged = {"graph_optimization_level": self.settings.graph_optimization_level,
                  "max_seq_len": self.settings.max_seq_len, "mlock": self.settings.mlock, **options.options}
        from dataclasses import replace

        options = replace(options, options=merged, use_mmap=self.settings.use_mmap and options.use_mmap)
        backend = cls(manifest, folder, options)
        backend.load()
        meta = backend.metadata()
        scheduler = None
        if not meta.capabilities.generate:
            scheduler = ModelScheduler(backend, self._policy(manifest, meta), meta.capabilities.batching,
                                       name=f"{name}-{version}")
        keep_alive = float(manifest.extra.get("keep_alive_s", self.settings.keep_alive))
        return LoadedModel(name, version, manifest, folder, backend, meta, scheduler, keep_alive)

    def _policy(self, manifest: Manifest, meta: ModelMetadata) -> BatchPolicy:
        s = self.settings
        batching = dict(manifest.extra.get("batching", {}))
        return BatchPolicy(
            enabled=bool(batching.get("dynamic_batching", s.dynamic_batching)),
            max_batch_size=int(batching.get("max_batch_size", s.max_batch_size)),
            max_queue_delay_ms=float(batching.get("max_queue_delay_ms", s.max_queue_delay_ms)),
            preferred_batch_sizes=tuple(batching.get("preferred_batch_sizes", s.preferred_batch_sizes)),
            max_queue_size=int(batching.get("max_queue_size", s.max_queue_size)),
            instances=int(manifest.extra.get("instances", 1)),
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
            state = self._states.get((name, version or 0), ("", ""))
        if name not in self.model_names():
            raise ModelNotFound(f"model {name!r} not found; available models: {self.model_names()}")
        if version is not None and version not in self._versions(name):
            raise ModelNotFound(f"model {name!r} has no version {version}; versions: {self._versions(name)}")
        reason = f" ({state[1]})" if state[1] else ""
        raise ModelNotReady(f"model {name!r} is not loaded{reason}; load it with POST "
                            f"/v2/repository/models/{name}/load")

    def loaded(self) -> list[LoadedModel]:
        """Every loaded model version."""
        with self._lock:
            return list(self._models.values())

    def infer(self, name: str, version: int | None, inputs: Tensors, datatypes: Mapping[str, str],
              outputs: Sequence[str] | None) -> tuple[LoadedModel, Tensors]:
        """Validate, queue, run; records stats."""
        entry = self.get(name, version)
        entry.touch()
        validate_inputs(entry.metadata, inputs, datatypes, outputs)
        if entry.scheduler is None:
            raise ModelNotReady(f"model {name!r} serves text generation; use /v1/chat/completions")
        start = time.perf_counter()
        rows = int(next(iter(inputs.values())).shape[0]) if entry.metadata.capabilities.batching else 1
        try:
            results = entry.scheduler.submit(inputs, outputs, self.settings.request_timeout_ms / 1000.0)
        except EdgeRunnerError:
            entry.stats.record(time.perf_counter() - start, False, now_ns=time.time_ns())
            raise
        entry.stats.record(time.perf_counter() - start, True, rows, now_ns=time.time_ns())
        return entry, {k: np.asarray(v) for k, v in results.items()}

    def index(self) -> list[dict[str, Any]]:
        """Repository index rows: every model version with its state and reason."""
        rows = []
        for name in self.model_names():
            for version in self._versions(name):
                state, reason = self._states.get((name, version), ("UNAVAILABLE", "not loaded"))
                rows.append({"name": name, "version": str(version), "state": state, "reason": reason})
        return rows

    def close(self) -> None:
        """Unload everything."""
        for name in {entry.name for entry in self.loaded()}:
            self.unload(name)
