"""digits over HTTP (edge-runner serve) vs in-process onnxruntime, same inputs, same run.

Prints requests/s and p50/p99 at each concurrency, and the ratio server / in-process.
Usage: python bench/bench_digits.py [--requests 2000] [--concurrency 1,8] [--batch 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edge_runner.loadgen import build_infer_body, run_load
from edge_runner.model_manager import DEFAULTS_DIR

MODEL = DEFAULTS_DIR / "digits" / "1" / "model.onnx"


def in_process(x: np.ndarray, concurrency: int, requests: int) -> dict[str, float]:
    """Closed loop on one shared onnxruntime session, ``concurrency`` threads."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(count: int) -> None:
        mine = []
        for _ in range(count):
            start = time.perf_counter()
            session.run(None, {"input": x})
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(requests // concurrency,)) for _ in range(concurrency)]
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


def start_server(tmp: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """A real edge-runner serve on a free port, digits only."""
    ready = tmp / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_runner",
            "serve",
            "--port",
            "0",
            "--models",
            "digits",
            "--ready-file",
            str(ready),
            "--log-level",
            "warning",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ready.exists() and ready.read_text():
            url = f"http://127.0.0.1:{ready.read_text()}"
            import urllib.request

            try:
                with urllib.request.urlopen(url + "/v2/health/ready", timeout=1):
                    return proc, url
            except OSError:
                pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--server-args", default="", help="extra serve flags, e.g. '--no-dynamic-batching'")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    x = np.random.default_rng(0).random((args.batch, 1, 8, 8), dtype=np.float32)
    body, headers = build_infer_body({"input": x}, {"input": "FP32"})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp), args.server_args.split())
        try:
            for conc in (int(c) for c in args.concurrency.split(",")):
                run_load(url, "/v2/models/digits/infer", body, headers, conc, 100)  # warm-up
                server = run_load(url, "/v2/models/digits/infer", body, headers, conc, args.requests)
                local = in_process(x, conc, args.requests)
                rows.append(
                    {
                        "concurrency": conc,
                        "server": server,
                        "in_process": local,
                        "ratio_rps": server["requests_per_s"] / local["requests_per_s"],
                    }
                )
        finally:
            proc.terminate()
            proc.wait(30)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"digits batch {args.batch}, {args.requests} requests per cell")
    print(
        f"{'conc':>4} | {'server req/s':>12} {'p50 ms':>7} {'p99 ms':>7} | {'in-proc req/s':>13} {'p50 ms':>7} "
        f"{'p99 ms':>7} | ratio"
    )
    for r in rows:
        s, i = r["server"], r["in_process"]
        print(
            f"{r['concurrency']:>4} | {s['requests_per_s']:>12.0f} {s['p50_ms']:>7.3f} {s['p99_ms']:>7.3f} | "
            f"{i['requests_per_s']:>13.0f} {i['p50_ms']:>7.3f} {i['p99_ms']:>7.3f} | {r['ratio_rps']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
