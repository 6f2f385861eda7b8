"""Overload, metrics (checked by promtool), ps, and weights shared between two server processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest

from edge_runner.cli.loadgen import build_infer_body
from tests.conftest import ServerProcess, free_env
from tests.unit.test_memory import make_mlp


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float = 30) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        err.read()
        return err.code, dict(err.headers)


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


def test_overload_gets_429_with_retry_after_never_500(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    env = {**free_env(tmp_path), "MAX_CONCURRENT_REQUESTS": "2"}
    server = start_server("--models", "digits", "--http-threads", "16", env=env)
    x = np.random.default_rng(0).random((256, 1, 8, 8), dtype=np.float32)
    body, headers = build_infer_body({"input": x}, {"input": "FP32"})
    url = server.url + "/v2/models/digits/infer"
    outcomes: list[tuple[int, str | None]] = []
    lock = threading.Lock()
    stop = time.monotonic() + 6.0
    rss_before = psutil.Process(server.proc.pid).memory_info().rss

    def client() -> None:
        while time.monotonic() < stop:
            status, hdrs = _post(url, body, headers)
            with lock:
                outcomes.append((status, hdrs.get("Retry-After")))

    clients = [threading.Thread(target=client) for _ in range(20)]  # 10x MAX_CONCURRENT_REQUESTS
    for c in clients:
        c.start()
    time.sleep(2.0)
    assert json.loads(_get(server.url + "/v2/health/live")) == {"live": True}  # health answers under overload
    assert b"edge_runner_requests_total" in _get(server.url + "/metrics")
    for c in clients:
        c.join()
    statuses = {s for s, _ in outcomes}
    assert statuses <= {200, 429, 503}, statuses
    assert 200 in statuses and 429 in statuses, statuses
    assert all(retry == "1" for s, retry in outcomes if s in (429, 503))
    rss_after = psutil.Process(server.proc.pid).memory_info().rss
    assert rss_after - rss_before < 200 * 2**20, (rss_before, rss_after)
    status, _ = _post(url, body, headers)  # serves normally afterwards
    assert status == 200
    metrics = _get(server.url + "/metrics").decode()
    assert 'edge_runner_rejected_requests_total{reason="max_concurrent_requests"}' in metrics


def test_metrics_pass_promtool_and_name_everything(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--models", "digits", "--enable-metrics")
    x = np.zeros((3, 1, 8, 8), np.float32)
    body, headers = build_infer_body({"input": x}, {"input": "FP32"})
    assert _post(server.url + "/v2/models/digits/infer", body, headers)[0] == 200
    assert _post(server.url + "/v2/models/digits/infer", b"{}", {})[0] == 400
    text = _get(server.url + "/metrics").decode()
    for name in (
        'edge_runner_requests_total{model="digits",status="ok",version="1"} 1.0',
        "edge_runner_request_duration_seconds_bucket",
        "edge_runner_batch_size_bucket",
        'edge_runner_queue_depth{model="digits",version="1"}',
        "edge_runner_model_memory_bytes",
        "edge_runner_process_resident_memory_bytes",
        "edge_runner_in_flight_requests",
    ):
        assert name in text, name
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (.ci/run installs Debian's prometheus package)")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_disable_metrics_removes_the_route(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--models", "digits", "--disable-metrics")
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(server.url + "/metrics")
    assert err.value.code == 404


def test_two_servers_share_mapped_weights(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    model = make_mlp(tmp_path / "src" / "big.onnx", 1024, 8, external=True)
    env = free_env(tmp_path)
    added = subprocess.run(
        [sys.executable, "-m", "edge_runner", "models", "add", str(model), "--name", "big"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert added.returncode == 0, added.stderr
    servers = [start_server("--models", "big", "--no-load-defaults", env=env) for _ in range(2)]
    x = np.ones((1, 1024), np.float32)
    body, headers = build_infer_body({"x": x}, {"x": "FP32"})
    for server in servers:  # both touch every weight page before either is measured
        assert _post(server.url + "/v2/models/big/infer", body, headers)[0] == 200
    rows = [json.loads(_get(server.url + "/api/ps"))["models"][0]["memory"] for server in servers]
    weights = 8 * 1024 * 1024 * 4
    for memory in rows:
        assert memory["mapped_size_bytes"] == weights
        # Proportional set size: each process is charged about half of the shared pages.
        assert memory["mapped_bytes"] == weights
        assert memory["mapped_pss_bytes"] < 0.75 * memory["mapped_bytes"], memory
        assert memory["rss_bytes"] < weights, memory  # private memory is less than one copy of the weights
