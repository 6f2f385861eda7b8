"""A small closed-loop HTTP load generator (``edge-runner bench`` and ``bench/``).

Each client thread keeps one persistent connection and sends the same binary
v2 infer request in a loop; latencies are measured per request.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from edge_runner.core.datatypes import to_numpy
from edge_runner.protocol.kserve_codec import HEADER_LENGTH


def build_infer_body(inputs: dict[str, np.ndarray], datatypes: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """A binary-extension v2 request for ``inputs``; returns (body, headers)."""
    entries, blobs = [], []
    for name, array in inputs.items():
        blob = np.ascontiguousarray(array).tobytes()
        entries.append(
            {
                "name": name,
                "datatype": datatypes[name],
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    header = json.dumps({"inputs": entries}).encode()
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return header + b"".join(blobs), headers


def random_inputs(metadata: dict[str, Any], batch: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Random arrays matching the model's metadata (dynamic dims: batch for axis 0, else 8)."""
    rng = np.random.default_rng(seed)
    arrays, types = {}, {}
    for spec in metadata["inputs"]:
        shape = [batch if i == 0 and d < 0 else (d if d >= 0 else 8) for i, d in enumerate(spec["shape"])]
        dtype = to_numpy(spec["datatype"])
        data = rng.random(shape) if dtype.kind == "f" else rng.integers(0, 2, size=shape)
        arrays[spec["name"]] = np.asarray(data).astype(dtype)
        types[spec["name"]] = spec["datatype"]
    return arrays, types


Call = Callable[[], bool]


def closed_loop(make_call: Callable[[], Call], concurrency: int, requests: int) -> dict[str, float]:
    """``concurrency`` threads, each with its own ``make_call()``, share ``requests`` calls.

    A call returns True on success; failures are counted, not timed. Returns throughput and percentiles.
    """
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()

    def worker(count: int) -> None:
        call, mine, failed = make_call(), [], 0
        for _ in range(count):
            start = time.perf_counter()
            if call():
                mine.append(time.perf_counter() - start)
            else:
                failed += 1
        with lock:
            latencies.extend(mine)
            errors.append(failed)

    threads = [threading.Thread(target=worker, args=(max(1, requests // concurrency),)) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000.0 if latencies else np.zeros(1)
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": float(sum(errors)),
        "completed": float(len(latencies)),
        "seconds": elapsed,
    }


def run_load(
    url: str, path: str, body: bytes, headers: dict[str, str], concurrency: int, requests: int
) -> dict[str, float]:
    """POST ``body`` ``requests`` times over ``concurrency`` persistent connections."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    def make_call() -> Call:
        conn = http.client.HTTPConnection(host, port, timeout=60)

        def call() -> bool:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200

        return call

    return closed_loop(make_call, concurrency, requests)


def run_tensor_bench(url: str, model: str, concurrency: int, requests: int, batch: int) -> dict[str, float]:
    """Fetch metadata, build random inputs and run the load."""
    import urllib.request

    with urllib.request.urlopen(f"{url.rstrip('/')}/v2/models/{model}", timeout=10) as resp:
        metadata = json.loads(resp.read())
    inputs, types = random_inputs(metadata, batch)
    body, headers = build_infer_body(inputs, types)
    return run_load(url, f"/v2/models/{model}/infer", body, headers, concurrency, requests)
