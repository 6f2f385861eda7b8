"""Same model on ONNX Runtime, OpenVINO and TFLite, in one process on this CPU: p50 latency and throughput.

Models: the embedded ``digits`` (ONNX, its IR twin and its TFLite twin) and a larger MLP
(784-1024-1024-512-10, about 9.5 MB of FP32 weights) built here as ONNX, IR and, when tensorflow is
installed, TFLite. Every backend gets the same threads and the same inputs; ratios are against
ONNX Runtime on the same model in the same run.

    .venv/bin/python -m bench.bench_backends [--threads 2] [--iterations 300] [--batch 32] [--seconds 1]
        [--repeats 3] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from edge_runner.backends.base import Backend, LoadOptions  # noqa: E402
from edge_runner.backends.registry import get_backend, probe  # noqa: E402
from edge_runner.core.manifest import Manifest, read_manifest  # noqa: E402
from tests.backends import models  # noqa: E402

DEFAULTS = ROOT / "edge_runner" / "defaults"
Case = tuple[str, str, Path, Manifest]  # label, backend, folder, manifest


def digits_cases() -> list[Case]:
    """The committed digits model and its twins (skipping any that is missing)."""
    cases = []
    for label, backend, model in (
        ("onnxruntime/onnx", "onnxruntime", "digits"),
        ("openvino/onnx", "openvino", "digits"),
        ("openvino/ir", "openvino", "digits-openvino"),
        ("tflite", "tflite", "digits-tflite"),
    ):
        folder = DEFAULTS / model / "1"
        if (folder / "manifest.json").is_file():
            cases.append((label, backend, folder, read_manifest(folder)))
    return cases


def mlp_cases(work: Path) -> list[Case]:
    """A larger MLP as ONNX, IR and (with tensorflow) TFLite."""
    weights = models.mlp_weights((784, 1024, 1024, 512, 10), seed=0)
    onnx_manifest = models.build_onnx(work / "onnx", weights, "mlp-large")
    cases = [("onnxruntime/onnx", "onnxruntime", work / "onnx", onnx_manifest)]
    if probe("openvino").available:
        cases.append(("openvino/onnx", "openvino", work / "onnx", onnx_manifest))
        cases.append(("openvino/ir", "openvino", work / "ir", models.build_ir(work / "ir", work / "onnx", weights)))
    if models.tensorflow_available() and probe("tflite").available:
        cases.append(("tflite", "tflite", work / "tflite", models.build_tflite(work / "tflite", weights)))
    return cases


def measure(backend: Backend, x1: np.ndarray, xb: np.ndarray, iterations: int, seconds: float) -> dict[str, float]:
    """p50/p95 of single-row calls and rows/s of batched calls (a timed loop of at least ``seconds``)."""
    name = backend.metadata().inputs[0].name
    for _ in range(20):
        backend.infer({name: x1})
        backend.infer({name: xb})
    latencies = []
    for _ in range(iterations):
        start = time.perf_counter()
        backend.infer({name: x1})
        latencies.append(time.perf_counter() - start)
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        backend.infer({name: xb})
        calls += 1
    q = statistics.quantiles(latencies, n=100)
    return {"p50_ms": q[49] * 1e3, "p95_ms": q[94] * 1e3, "rows_per_s": calls * len(xb) / elapsed}


def best_of(backend: Backend, x1: np.ndarray, xb: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    """Median of ``--repeats`` runs: the machine is shared, single runs are noisy."""
    runs = [measure(backend, x1, xb, args.iterations, args.seconds) for _ in range(args.repeats)]
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def run_model(title: str, cases: list[Case], args: argparse.Namespace) -> list[str]:
    """Benchmark each case; return markdown table lines."""
    lines = [
        f"### {title}",
        "",
        "| backend/format | device | p50 ms (batch 1) | p95 ms | rows/s (batch "
        f"{args.batch}) | p50 vs ORT | rows/s vs ORT |",
        "|---|---|---|---|---|---|---|",
    ]
    baseline: dict[str, float] | None = None
    rng = np.random.default_rng(0)
    for label, backend_name, folder, manifest in cases:
        if not probe(backend_name).available:
            continue
        backend = get_backend(backend_name)(manifest, folder, LoadOptions(threads=args.threads))
        backend.load()
        spec = backend.metadata().inputs[0]
        shape = [d if d > 0 else 1 for d in spec.shape[1:]]
        x1 = rng.random((1, *shape), dtype=np.float32)
        xb = rng.random((args.batch, *shape), dtype=np.float32)
        result = best_of(backend, x1, xb, args)
        device = backend.metadata().device
        backend.unload()
        baseline = baseline or result
        lat_ratio = baseline["p50_ms"] / result["p50_ms"]
        tput_ratio = result["rows_per_s"] / baseline["rows_per_s"]
        lines.append(
            f"| {label} | {device} | {result['p50_ms']:.3f} | {result['p95_ms']:.3f} | "
            f"{result['rows_per_s']:.0f} | {lat_ratio:.2f}x | {tput_ratio:.2f}x |"
        )
    return [*lines, ""]


def main() -> None:
    """Parse flags, run both models, print (and optionally write) the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each throughput loop")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; the median is reported")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables to this file")
    args = parser.parse_args()
    versions = ", ".join(f"{n} {probe(n).version}" for n in ("onnxruntime", "openvino", "tflite") if probe(n).available)
    lines = [f"Runtimes: {versions}; threads={args.threads}; ratios > 1 mean faster than ONNX Runtime.", ""]
    lines += run_model("digits (8x8 digits MLP, INT8)", digits_cases(), args)
    with tempfile.TemporaryDirectory() as tmp:
        lines += run_model("mlp-large (784-1024-1024-512-10, FP32, 9.5 MB)", mlp_cases(Path(tmp)), args)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
