"""The per-model scheduler and dynamic batcher, on the fake backend (no runtime needed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from edge_runner.backends.base import LoadOptions
from edge_runner.backends.fake_backend import FakeBackend
from edge_runner.core.errors import InferenceError, ModelNotReady, Overloaded, RequestTimeout
from edge_runner.core.manifest import read_manifest
from edge_runner.serving.scheduler import BatchPolicy, ModelScheduler
from tests.conftest import write_fake_model


def _backend(tmp_path: Path, **extra: object) -> FakeBackend:
    folder = write_fake_model(tmp_path, "f", **extra)
    backend = FakeBackend(read_manifest(folder), folder, LoadOptions())
    backend.load()
    return backend


def test_concurrent_requests_are_stacked_and_split_back(tmp_path: Path) -> None:
    backend = _backend(tmp_path, delay_ms=30)
    sched = ModelScheduler(backend, BatchPolicy(max_batch_size=8, max_queue_delay_ms=20), batching=True)
    inputs = [np.full((1, 4), i, dtype=np.float32) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda x: sched.submit({"x": x}, timeout_s=10), inputs))
    sched.close()
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], np.full((1, 4), 2 * i, dtype=np.float32))
    assert max(backend.batch_sizes) > 1, backend.batch_sizes
    assert sum(backend.batch_sizes) == 8


def test_batching_off_runs_one_request_per_call(tmp_path: Path) -> None:
    backend = _backend(tmp_path, delay_ms=5)
    sched = ModelScheduler(backend, BatchPolicy(enabled=False), batching=True)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: sched.submit({"x": np.ones((1, 4), np.float32)}), range(8)))
    sched.close()
    assert backend.batch_sizes == [1] * 8


def test_incompatible_shapes_are_not_mixed(tmp_path: Path) -> None:
    backend = _backend(tmp_path, delay_ms=20)
    sched = ModelScheduler(backend, BatchPolicy(max_batch_size=8, max_queue_delay_ms=30), batching=True)
    shapes = [(1, 4), (1, 3), (1, 4), (1, 3)]
    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(lambda s: sched.submit({"x": np.ones(s, np.float32)}), shapes))
    sched.close()
    assert [o["y"].shape for o in out] == shapes


def test_request_larger_than_max_batch_is_split(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    sched = ModelScheduler(backend, BatchPolicy(max_batch_size=4), batching=True)
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    out = sched.submit({"x": x})
    sched.close()
    np.testing.assert_array_equal(out["y"], x * 2)
    assert backend.batch_sizes == [4, 4, 2]


def test_full_queue_raises_overloaded(tmp_path: Path) -> None:
    backend = _backend(tmp_path, delay_ms=200)
    sched = ModelScheduler(backend, BatchPolicy(enabled=False, max_queue_size=2), batching=True)
    errors: list[Exception] = []

    def call() -> None:
        try:
            sched.submit({"x": np.ones((1, 4), np.float32)}, timeout_s=10)
        except Overloaded as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sched.close()
    assert errors and all(e.retry_after_s >= 1 for e in errors)


def test_deadline_gives_request_timeout(tmp_path: Path) -> None:
    sched = ModelScheduler(_backend(tmp_path, delay_ms=500), BatchPolicy(enabled=False), batching=False)
    with pytest.raises(RequestTimeout, match="did not finish"):
        sched.submit({"x": np.ones((1, 4), np.float32)}, timeout_s=0.05)
    sched.close()


def test_backend_failure_reaches_every_caller_and_worker_survives(tmp_path: Path) -> None:
    sched = ModelScheduler(_backend(tmp_path, fail_infer=True), BatchPolicy(), batching=True)
    for _ in range(2):
        with pytest.raises(InferenceError):
            sched.submit({"x": np.ones((1, 4), np.float32)})
    sched.close()


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_close_drains_queued_work(tmp_path: Path) -> None:
    backend = _backend(tmp_path, delay_ms=50)
    sched = ModelScheduler(backend, BatchPolicy(enabled=False), batching=False)
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(sched.submit, {"x": np.ones((1, 4), np.float32)}) for _ in range(3)]
        _wait_for(lambda: sched.in_flight == 3)  # all three queued or running before the close
        sched.close()
        results = [f.result() for f in futures]
    assert len(results) == 3 and backend.batch_sizes == [1, 1, 1]


def test_close_past_its_drain_time_fails_queued_requests_as_not_ready(tmp_path: Path) -> None:
    backend = _backend(tmp_path, delay_ms=300)
    sched = ModelScheduler(backend, BatchPolicy(enabled=False), batching=False)
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(sched.submit, {"x": np.ones((1, 4), np.float32)}) for _ in range(3)]
        _wait_for(lambda: sched.in_flight == 3)
        sched.close(drain_timeout_s=0.05)
        outcomes = []
        for future in futures:
            try:
                future.result()
                outcomes.append("ok")
            except ModelNotReady:
                outcomes.append("not ready")
    assert outcomes.count("ok") == 1 and outcomes.count("not ready") == 2


@pytest.mark.parametrize("instances", [1, 2])
def test_instances_bound_concurrent_backend_calls(tmp_path: Path, instances: int) -> None:
    backend = _backend(tmp_path, delay_ms=100)
    sched = ModelScheduler(backend, BatchPolicy(enabled=False, instances=instances), batching=False)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: sched.submit({"x": np.ones((1, 4), np.float32)}), range(4)))
    sched.close()
    assert backend.max_active == instances
