"""Shared pieces of the benchmarks: a real server subprocess and an in-process baseline loop."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def start_server(
    tmp: Path, args: list[str], env: dict[str, str] | None = None, command: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``edge-runner serve`` on a free port; returns (process, base URL) once ready."""
    ready = tmp / f"port-{time.monotonic_ns()}"
    cmd = command or [sys.executable, "-m", "edge_runner"]
    proc = subprocess.Popen(
        [*cmd, "serve", "--port", "0", "--ready-file", str(ready), "--log-level", "warning", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if ready.exists() and ready.read_text():
            url = f"http://127.0.0.1:{ready.read_text()}"
            try:
                with urllib.request.urlopen(url + "/v2/health/ready", timeout=1):
                    return proc, url
            except OSError:
                pass
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("server did not become ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM and wait."""
    proc.terminate()
    proc.wait(30)


def closed_loop(call: Callable[[], Any], concurrency: int, requests: int) -> dict[str, float]:
    """Run ``call`` ``requests`` times over ``concurrency`` threads; throughput and percentiles."""
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(count: int) -> None:
        mine = []
        for _ in range(count):
            start = time.perf_counter()
            call()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(max(1, requests // concurrency),)) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }
