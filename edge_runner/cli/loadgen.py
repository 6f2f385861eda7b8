"""A small closed-loop HTTP load generator (``edge-runner bench`` and ``bench/``).

Each client thread keeps one persistent connection and sends the same binary
v2 infer request in a loop; latencies are measured per request.
"""

from __future__ import annotations

import json
import socket
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
        close = getattr(call, "close", None)
        if close is not None:
            close()
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


class RawConnection:
    """One keep-alive HTTP/1.1 connection that sends a prepared request and reads the answer.

    A load generator shares the machine with the server it measures: ``http.client`` spent ~0.25 ms of CPU a
    request building headers and parsing answers through the email parser, which the server under test
    then did not get. This sends the request's bytes, prepared once, in one call and reads the status line,
    ``Content-Length`` or chunked framing and nothing else. It reconnects when the server closes.
    """

    def __init__(self, host: str, port: int, request: bytes, timeout_s: float = 60.0) -> None:
        self.address = (host, port)
        self.request = request
        self.timeout_s = timeout_s
        self.sock: socket.socket | None = None
        self.buffer = b""

    def __call__(self) -> bool:
        """Send the request and read the whole answer; True when it is a 200."""
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=self.timeout_s)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buffer = b""
        try:
            self.sock.sendall(self.request)
            status, keep = self._read_answer()
        except (OSError, ValueError):
            self.close()
            return False
        if not keep:
            self.close()
        return status == 200

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _fill(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(262144)
        if not data:
            raise ValueError("the server closed the connection")
        self.buffer += data

    def _read_answer(self) -> tuple[int, bool]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4 :]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        keep = fields.get("connection", "").lower() != "close" and lines[0].startswith("HTTP/1.1")
        if fields.get("transfer-encoding", "").lower() == "chunked":
            self._skip_chunks()
        elif "content-length" in fields:
            self._skip(int(fields["content-length"]))
        elif status not in (204, 304) and status >= 200:
            raise ValueError("an answer without a length: the connection cannot be reused")
        return status, keep

    def _skip(self, size: int) -> None:
        while len(self.buffer) < size:
            self._fill()
        self.buffer = self.buffer[size:]

    def _skip_chunks(self) -> None:
        while True:
            while (end := self.buffer.find(b"\r\n")) < 0:
                self._fill()
            size = int(self.buffer[:end].split(b";")[0], 16)
            self.buffer = self.buffer[end + 2 :]
            if size == 0:  # trailers end with an empty line
                while (end := self.buffer.find(b"\r\n")) != 0:
                    if end < 0:
                        self._fill()
                    else:
                        self.buffer = self.buffer[end + 2 :]
                self.buffer = self.buffer[2:]
                return
            self._skip(size + 2)


def prepare_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The bytes of a POST with ``body`` (Host and Content-Length added)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def run_load(
    url: str, path: str, body: bytes, headers: dict[str, str], concurrency: int, requests: int
) -> dict[str, float]:
    """POST ``body`` ``requests`` times over ``concurrency`` persistent connections."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = prepare_request(host, port, path, body, headers)

    def make_call() -> Call:
        return RawConnection(host, port, request)

    return closed_loop(make_call, concurrency, requests)


def run_tensor_bench(url: str, model: str, concurrency: int, requests: int, batch: int) -> dict[str, float]:
    """Fetch metadata, build random inputs and run the load."""
    import urllib.request

    with urllib.request.urlopen(f"{url.rstrip('/')}/v2/models/{model}", timeout=10) as resp:
        metadata = json.loads(resp.read())
    inputs, types = random_inputs(metadata, batch)
    body, headers = build_infer_body(inputs, types)
    return run_load(url, f"/v2/models/{model}/infer", body, headers, concurrency, requests)
