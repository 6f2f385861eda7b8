"""From a manifest to a serving ``LoadedModel``: backend choice, load options, queue policy, measured memory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edge_runner.backends.base import Backend, LoadOptions, ModelMetadata, SelectionStep
from edge_runner.backends.registry import get_backend
from edge_runner.config.profiles import Profile
from edge_runner.config.settings import Settings
from edge_runner.core.manifest import Manifest
from edge_runner.hardware.facts import cpu_quota_cores
from edge_runner.serving.loaded_model import LoadedModel
from edge_runner.serving.memory import mapped_files, process_rss
from edge_runner.serving.metrics import Metrics
from edge_runner.serving.scheduler import BatchPolicy, ModelScheduler
from edge_runner.serving.stats import LatencyStats


@dataclass(frozen=True)
class LoadPlan:
    """The backend class chosen for a model, why, and the options it will be loaded with."""

    backend: type[Backend]
    steps: tuple[SelectionStep, ...]
    options: LoadOptions


class ModelLoader:
    """Builds loaded models under one settings table and profile (the manager decides when and what)."""

    def __init__(self, settings: Settings, profile: Profile, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.profile = profile
        self.metrics = metrics

    def choose_backend(self, manifest: Manifest) -> tuple[type[Backend], tuple[SelectionStep, ...]]:
        """Manifest pin, then the --backend pin (when it serves the format), then the profile's order."""
        pinned = manifest.backend
        if not pinned and self.settings.backend and manifest.format in get_backend(self.settings.backend).formats:
            pinned = self.settings.backend
        name, steps = self.profile.choose_backend(manifest.format, pinned=pinned)
        return get_backend(name), steps

    def plan(self, name: str, version: int, manifest: Manifest) -> LoadPlan:
        """Which backend, with which options (profile table, then the settings that override it)."""
        cls, steps = self.choose_backend(manifest)  # probes, so the runtime's import is not charged to the model
        cache = self.settings.cache_root() / "compiled" / name / str(version) / cls.name
        # Runtimes size their thread pools from the node's cores; under a pod CPU limit that oversubscribes.
        threads = self.settings.threads or int(self.profile.settings.get("threads", 0)) or (cpu_quota_cores() or 0)
        options = self.profile.load_options(cls.name, threads=threads, cache_dir=cache)
        if self.settings.device:
            options = replace(options, devices=(*self.settings.device, *options.devices))
        # Settings that are also backend options win over the profile's backend table: they were layered
        # already (defaults < profile [settings] < file < env < CLI).
        merged = {
            **options.options,
            "graph_optimization_level": self.settings.graph_optimization_level,
            "max_seq_len": self.settings.max_seq_len,
            "mlock": self.settings.mlock,
            "kv_cache_type": self.settings.kv_cache_type,
            "kv_preallocate": self.settings.kv_preallocate,
        }
        options = replace(options, options=merged, use_mmap=self.settings.use_mmap and options.use_mmap)
        return LoadPlan(cls, steps, options)

    def open(self, name: str, version: int, folder: Path, manifest: Manifest, plan: LoadPlan) -> LoadedModel:
        """Load the artifact as planned and wrap it; the backend is freed if wrapping fails."""
        cls, backend_steps, options = plan.backend, plan.steps, plan.options
        rss_before = process_rss()
        backend = cls(manifest, folder, options)
        if self.metrics is not None:
            backend.on_first_token = self.metrics.ttft.labels(name).observe
            backend.on_token_time = self.metrics.time_per_token.labels(name).observe
        backend.load()
        try:
            return self._wrap(name, version, manifest, folder, backend, backend_steps, rss_before)
        except BaseException:
            backend.unload()  # a half-built entry must not keep the runtime's memory
            raise

    def _wrap(
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
        # Every model gets a queue: tensors and embeddings run through it; generation runs on the LLM
        # engine's own slots (continuous batching) and only its embeddings use this queue.
        scheduler = ModelScheduler(
            backend,
            self._policy(manifest, meta),
            meta.capabilities.batching and not meta.capabilities.generate,
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
