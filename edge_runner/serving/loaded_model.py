"""One loaded model version: its backend, scheduler, stats, memory and idle time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from edge_runner.backends.base import Backend, ModelMetadata
from edge_runner.core.manifest import Manifest
from edge_runner.serving.memory import MappedFiles, mapped_files
from edge_runner.serving.scheduler import ModelScheduler
from edge_runner.serving.stats import LatencyStats


@dataclass(eq=False)
class LoadedModel:
    """One model version that is loaded and serving."""

    name: str
    version: int
    manifest: Manifest
    folder: Path
    backend: Backend
    metadata: ModelMetadata
    scheduler: ModelScheduler
    keep_alive_s: float
    resident_bytes: int = 0
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    stats: LatencyStats = field(default_factory=LatencyStats)

    def touch(self) -> None:
        """Mark as used now (for idle unload and LRU eviction)."""
        self.last_used = time.monotonic()

    @property
    def busy(self) -> bool:
        """Requests queued or running (LLM engines report their active streams)."""
        return self.in_flight() > 0

    def in_flight(self) -> int:
        """Requests queued or running on this model (scheduler jobs and backend-run streams)."""
        return self.scheduler.in_flight + self.backend.in_flight()

    def footprint(self, mapped: MappedFiles | None = None) -> int:
        """Bytes charged to the memory budget: measured anonymous growth + resident mapped weights."""
        return self.resident_bytes + (mapped or mapped_files(self.folder)).rss_bytes

    def memory(self, mapped: MappedFiles | None = None) -> dict[str, int]:
        """Resident (measured at load) and mapped (live) bytes; pass ``mapped`` when already read."""
        mapped = mapped or mapped_files(self.folder)
        return {
            "rss_bytes": self.resident_bytes,
            "mapped_bytes": mapped.rss_bytes,
            "mapped_pss_bytes": mapped.pss_bytes,
            "mapped_size_bytes": mapped.size_bytes,
        }
