"""Run a converted artifact on numpy feeds (ONNX Runtime, OpenVINO, LiteRT) for parity checks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from converters.sources.base import Feeds

Runner = Callable[[Feeds], list[np.ndarray]]


def onnx_runner(model_file: Path, threads: int = 0) -> Runner:
    """An ONNX Runtime CPU session (loaded from the path: see DEPENDENCIES.md)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}

    def run(feeds: Feeds) -> list[np.ndarray]:
        return [np.asarray(o) for o in session.run(None, {k: v for k, v in feeds.items() if k in wanted})]

    return run


def openvino_runner(xml_file: Path) -> Runner:
    """An OpenVINO CPU compiled model at f32 precision (the CPU defaults to bf16 here)."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(str(xml_file), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    wanted = {name for port in compiled.inputs for name in port.get_names()}
    request = compiled.create_infer_request()

    def run(feeds: Feeds) -> list[np.ndarray]:
        result = request.infer({k: v for k, v in feeds.items() if k in wanted})
        return [np.asarray(result[port]) for port in compiled.outputs]

    return run


def tflite_runner(model_file: Path) -> Runner:
    """A LiteRT interpreter (ai-edge-litert, else tflite-runtime), resized to each batch."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - fallback runtime
        from tflite_runtime.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_file))
    if interpreter.get_signature_list():
        signature = interpreter.get_signature_runner()

        def run_signature(feeds: Feeds) -> list[np.ndarray]:
            out = signature(**feeds)
            return [np.asarray(out[k]) for k in sorted(out)]

        return run_signature
    details = interpreter.get_input_details()

    def run(feeds: Feeds) -> list[np.ndarray]:
        values = list(feeds.values())
        for detail, value in zip(details, values, strict=False):
            if tuple(detail["shape"]) != value.shape:
                interpreter.resize_tensor_input(detail["index"], value.shape)
        interpreter.allocate_tensors()
        for detail, value in zip(interpreter.get_input_details(), values, strict=False):
            interpreter.set_tensor(detail["index"], _quantize_in(detail, value))
        interpreter.invoke()
        return [_dequantize_out(d, interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()]

    return run


def _quantize_in(detail: dict, value: np.ndarray) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if detail["dtype"] in (np.int8, np.uint8) and value.dtype.kind == "f" and scale:
        info = np.iinfo(detail["dtype"])
        return np.clip(np.round(value / scale + zero), info.min, info.max).astype(detail["dtype"])
    return value.astype(detail["dtype"])


def _dequantize_out(detail: dict, value: np.ndarray) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if detail["dtype"] in (np.int8, np.uint8) and scale:
        return (value.astype(np.float32) - zero) * scale
    return np.asarray(value)


def runner_for(fmt: str, primary: Path) -> Runner:
    """The runner for an artifact format."""
    if fmt == "onnx":
        return onnx_runner(primary)
    if fmt == "openvino":
        return openvino_runner(primary)
    if fmt == "tflite":
        return tflite_runner(primary)
    raise ValueError(f"no runner for format {fmt!r}")


def median_latency_ms(run: Runner, feeds: Feeds, repeats: int = 5) -> float:
    """Median wall time of ``run(feeds)`` in milliseconds, after one warm-up call."""
    run(feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))
