"""Per-model request statistics with percentiles, for users without Prometheus."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np


class LatencyStats:
    """Counts and a window of recent latencies; thread-safe."""

    def __init__(self, window: int = 2048) -> None:
        self._lock = threading.Lock()
        self._recent: deque[float] = deque(maxlen=window)
        self.success = 0
        self.failure = 0
        self.total_s = 0.0
        self.inferences = 0
        self.batches = 0
        self.last_request_ns = 0

    def record(self, seconds: float, ok: bool, rows: int = 1, now_ns: int = 0) -> None:
        """Record one request."""
        with self._lock:
            if ok:
                self.success += 1
                self.inferences += rows
                self.total_s += seconds
                self._recent.append(seconds)
            else:
                self.failure += 1
            self.last_request_ns = now_ns

    def record_batch(self) -> None:
        """Record one backend execution."""
        with self._lock:
            self.batches += 1

    def percentiles(self) -> dict[str, float]:
        """p50/p95/p99 in milliseconds over the recent window (0 when empty)."""
        with self._lock:
            values = np.array(self._recent, dtype=np.float64)
        if not values.size:
            return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0}
        p50, p95, p99 = np.percentile(values * 1000.0, [50, 95, 99])
        return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3)}

    def to_json(self) -> dict[str, Any]:
        """The KServe-style statistics object plus percentiles."""
        with self._lock:
            data: dict[str, Any] = {
                "last_inference": self.last_request_ns // 1_000_000,
                "inference_count": self.inferences,
                "execution_count": self.batches,
                "inference_stats": {
                    "success": {"count": self.success, "ns": int(self.total_s * 1e9)},
                    "fail": {"count": self.failure, "ns": 0},
                },
            }
        data["latency"] = self.percentiles()
        return data
