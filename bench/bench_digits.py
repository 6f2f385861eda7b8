"""digits over HTTP (edge-runner serve) vs in-process onnxruntime, same inputs, same run.

Prints requests/s and p50/p99 at each concurrency, and the ratio server / in-process.
Usage: python -m bench.bench_digits [--requests 2000] [--concurrency 1,8] [--batch 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.common import closed_loop, start_server, stop
from edge_runner.cli.loadgen import build_infer_body, run_load
from edge_runner.core.paths import DEFAULTS_DIR

MODEL = DEFAULTS_DIR / "digits" / "1" / "model.onnx"


def in_process(x: np.ndarray, concurrency: int, requests: int) -> dict[str, float]:
    """Closed loop on one shared onnxruntime session, ``concurrency`` threads."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    return closed_loop(lambda: session.run(None, {"input": x}), concurrency, requests)


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
        proc, url = start_server(Path(tmp), ["--models", "digits", *args.server_args.split()])
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
            stop(proc)
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
