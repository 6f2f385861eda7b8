"""Overload: 10x max_concurrent_requests for 60 s on digits and tiny-llm at once.

Only 2xx, 429 or 503 (both with Retry-After) come back, liveness keeps answering fast, memory does not
grow, and the server is fully serviceable afterwards.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from tests.conftest import ServerProcess

pytest.importorskip("llama_cpp")

LIMIT = 4
DURATION_S = 60.0
DIGITS = json.dumps(
    {"inputs": [{"name": "input", "shape": [4, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 256}]}
).encode()
CHAT = json.dumps(
    {"model": "tiny-llm", "messages": [{"role": "user", "content": "What is def?"}], "max_tokens": 12}
).encode()


def _call(url: str, body: bytes) -> str:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            resp.read()
            return str(resp.status)
    except urllib.error.HTTPError as err:
        retry = err.headers.get("Retry-After")
        return f"{err.code}{'' if retry else ' without Retry-After'}"
    except OSError as err:
        return f"error {err!r}"


@pytest.mark.slow
def test_ten_times_the_limit_for_a_minute(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--models", "digits,tiny-llm", "--max-concurrent-requests", str(LIMIT))
    assert _call(server.url + "/v2/models/digits/infer", DIGITS) == "200"
    assert _call(server.url + "/v1/chat/completions", CHAT) == "200"
    # the LLM's KV cache grows with the streams in use (up to its 4 slots): grow it first, so the RSS check
    # below looks for leaks, not for that designed growth
    with ThreadPoolExecutor(LIMIT) as pool:
        assert set(pool.map(lambda _: _call(server.url + "/v1/chat/completions", CHAT), range(LIMIT))) == {"200"}
    process = psutil.Process(server.proc.pid)
    rss_start = process.memory_info().rss
    outcomes: Counter[str] = Counter()
    live_ms: list[float] = []
    lock = threading.Lock()
    end = time.monotonic() + DURATION_S

    def client(url: str, body: bytes) -> None:
        while time.monotonic() < end:
            outcome = _call(url, body)
            with lock:
                outcomes[outcome] += 1

    def prober() -> None:
        while time.monotonic() < end:
            start = time.perf_counter()
            with urllib.request.urlopen(server.url + "/v2/health/live", timeout=10) as resp:
                assert resp.status == 200
            live_ms.append(1000 * (time.perf_counter() - start))
            time.sleep(0.05)

    targets = [(server.url + "/v2/models/digits/infer", DIGITS), (server.url + "/v1/chat/completions", CHAT)]
    threads = [threading.Thread(target=client, args=targets[i % 2]) for i in range(10 * LIMIT)]
    threads.append(threading.Thread(target=prober))
    for t in threads:
        t.start()
    for t in threads:
        t.join(DURATION_S + 120)
    rss_end = process.memory_info().rss
    live_ms.sort()
    p99 = live_ms[int(0.99 * (len(live_ms) - 1))]
    print(
        f"outcomes {dict(outcomes)}; liveness p50 {live_ms[len(live_ms) // 2]:.1f} ms p99 {p99:.1f} ms "
        f"over {len(live_ms)} probes; RSS {rss_start / 1e6:.0f} -> {rss_end / 1e6:.0f} MB"
    )
    assert set(outcomes) <= {"200", "429", "503"}, outcomes
    assert outcomes["200"] > 0 and outcomes["429"] > 0
    # Measured here: p99 79 ms with 40 clients spinning on 429s (docs/benchmarks.md); the bound leaves room
    # for a CI box that runs other work at the same time.
    assert p99 < 250, live_ms[-10:]
    assert rss_end < rss_start * 1.10
    assert _call(server.url + "/v2/models/digits/infer", DIGITS) == "200"
    assert _call(server.url + "/v1/chat/completions", CHAT) == "200"
