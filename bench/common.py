"""Shared pieces of the benchmarks: a real server subprocess and an in-process baseline loop."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_runner.cli import loadgen


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
    """In-process baseline: ``call`` from ``concurrency`` threads (see ``edge_runner.cli.loadgen.closed_loop``)."""

    def succeed() -> bool:
        call()
        return True

    def make_call() -> Callable[[], bool]:
        return succeed

    return loadgen.closed_loop(make_call, concurrency, requests)
