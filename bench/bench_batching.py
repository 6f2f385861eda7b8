"""Dynamic batching on vs off over HTTP, vs onnxruntime in-process at its best batch size (the limit).

The model is an ONNX MLP (MatMul chain) where batching matters: one GEMM over
many rows costs far less than many GEMVs. Prints requests/s at each
concurrency for both servers, the on/off ratio, and the fraction of the
in-process limit reached.
Usage: python -m bench.bench_batching [--concurrency 1,8,32] [--requests 600] [--width 1024] [--layers 6]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.common import closed_loop, start_server, stop
from edge_runner.cli.loadgen import build_infer_body, run_load


def make_model(folder: Path, width: int, layers: int) -> Path:
    """An ONNX MLP with GELU-free MatMul+Relu layers; weights as external data."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "x"
    for i in range(layers):
        weight = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"h{i}"]))
        prev = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", width])],
        inits,
    )
    path = folder / "mlp.onnx"
    onnx.save_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="mlp.onnx.data",
    )
    return path


def in_process_limit(model: Path, width: int, batches: list[int], requests: int) -> dict[str, float]:
    """Rows/s of onnxruntime in-process at the best batch size (single caller, all cores)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    best = {"rows_per_s": 0.0, "batch": 0.0}
    for batch in batches:
        x = np.ones((batch, width), np.float32)
        result = closed_loop(lambda x=x: session.run(None, {"x": x}), 1, max(20, requests // batch))
        rows = result["requests_per_s"] * batch
        if rows > best["rows_per_s"]:
            best = {"rows_per_s": rows, "batch": float(batch)}
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    x = np.random.default_rng(0).random((1, args.width), dtype=np.float32)
    body, headers = build_infer_body({"x": x}, {"x": "FP32"})
    results: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = make_model(folder, args.width, args.layers)
        env = {
            **os.environ,
            "EDGE_RUNNER_MODEL_REPOSITORY": str(folder / "repo"),
            "EDGE_RUNNER_CACHE_DIR": str(folder / "cache"),
        }
        from edge_runner.repository.store import ModelRepository

        ModelRepository(folder / "repo").add(model, "mlp")
        limit = in_process_limit(model, args.width, [1, 8, 16, 32], args.requests)
        for mode, flags in (
            ("batching on", ["--max-batch-size", "32", "--max-queue-delay-ms", "5"]),
            ("batching off", ["--no-dynamic-batching"]),
        ):
            proc, url = start_server(
                folder,
                [
                    "--models",
                    "mlp",
                    "--no-load-defaults",
                    "--http-threads",
                    "48",
                    "--max-concurrent-requests",
                    "256",
                    *flags,
                ],
                env,
            )
            try:
                results[mode] = {}
                for conc in concurrencies:
                    run_load(url, "/v2/models/mlp/infer", body, headers, conc, 2 * conc)  # warm-up
                    results[mode][conc] = run_load(url, "/v2/models/mlp/infer", body, headers, conc, args.requests)
            finally:
                stop(proc)
    if args.json:
        print(json.dumps({"results": results, "in_process_limit": limit}, indent=2))
        return 0
    print(f"MLP {args.layers}x{args.width}x{args.width} FP32, batch-1 requests, {args.requests} per cell")
    print(f"in-process onnxruntime limit: {limit['rows_per_s']:.0f} rows/s at batch {int(limit['batch'])}")
    print(f"{'conc':>4} | {'on req/s':>9} {'p50 ms':>7} | {'off req/s':>9} {'p50 ms':>7} | on/off | on/limit")
    for conc in concurrencies:
        on, off = results["batching on"][conc], results["batching off"][conc]
        print(
            f"{conc:>4} | {on['requests_per_s']:>9.0f} {on['p50_ms']:>7.2f} | {off['requests_per_s']:>9.0f} "
            f"{off['p50_ms']:>7.2f} | {on['requests_per_s'] / off['requests_per_s']:>6.2f} | "
            f"{on['requests_per_s'] / limit['rows_per_s']:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
