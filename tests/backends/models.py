"""Builders of one tiny MLP as ONNX, OpenVINO IR and TFLite, plus its numpy reference.

Used by the backend contract suite and by ``bench/bench_backends.py``. The TFLite twin needs
tensorflow, which is only imported in a child process (``python -m tests.backends.models``) so the
test process never loads it.
"""

from __future__ import annotations

import importlib.util
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np

from edge_runner.core.manifest import Manifest, TensorSpec, file_entry

ROOT = Path(__file__).resolve().parents[2]
Weights = list[tuple[np.ndarray, np.ndarray]]


def mlp_weights(sizes: tuple[int, ...] = (16, 32, 4), seed: int = 0) -> Weights:
    """Dense layers ``sizes[i] -> sizes[i+1]`` with small random weights."""
    rng = np.random.default_rng(seed)
    return [
        (
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
            (rng.standard_normal(b) * 0.1).astype(np.float32),
        )
        for a, b in itertools.pairwise(sizes)
    ]


def reference(weights: Weights, x: np.ndarray) -> np.ndarray:
    """The MLP in numpy: ReLU between layers, none after the last."""
    h = x.astype(np.float32)
    for i, (w, b) in enumerate(weights):
        h = h @ w + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0)
    return h


def _manifest(folder: Path, name: str, fmt: str, files: list[str], weights: Weights) -> Manifest:
    width_in, width_out = weights[0][0].shape[0], weights[-1][0].shape[1]
    return Manifest(
        name=name,
        version=1,
        format=fmt,
        files=tuple(file_entry(folder, f) for f in files),
        inputs=(TensorSpec("x", "FP32", (-1, width_in)),),
        outputs=(TensorSpec("y", "FP32", (-1, width_out)),),
    )


def build_onnx(folder: Path, weights: Weights, name: str = "mlp") -> Manifest:
    """``folder/model.onnx`` with input ``x`` [N, in] and output ``y`` [N, out]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    nodes, inits, prev = [], [], "x"
    for i, (w, b) in enumerate(weights):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(weights) - 1
        out = "y" if last else f"r{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [out if last else f"a{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", weights[0][0].shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", weights[-1][0].shape[1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    return _manifest(folder, name, "onnx", ["model.onnx"], weights)


def build_ir(folder: Path, onnx_folder: Path, weights: Weights, name: str = "mlp") -> Manifest:
    """``folder/model.xml`` + ``model.bin`` converted from the ONNX twin, weights kept in FP32."""
    import openvino

    folder.mkdir(parents=True, exist_ok=True)
    model = openvino.convert_model(str(onnx_folder / "model.onnx"))
    openvino.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)
    return _manifest(folder, name, "openvino", ["model.xml", "model.bin"], weights)


def tensorflow_available() -> bool:
    """Whether the TFLite twin can be built here."""
    return importlib.util.find_spec("tensorflow") is not None


def build_tflite(folder: Path, weights: Weights, name: str = "mlp") -> Manifest:
    """``folder/model.tflite`` built by tensorflow in a child process (signature ``x`` -> ``y``)."""
    folder.mkdir(parents=True, exist_ok=True)
    npz = folder / "weights.npz"
    np.savez(npz, *[a for pair in weights for a in pair])
    cmd = [sys.executable, "-m", "tests.backends.models", str(npz), str(folder / "model.tflite")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building the TFLite twin failed:\n{done.stderr[-2000:]}")
    npz.unlink()
    return _manifest(folder, name, "tflite", ["model.tflite"], weights)


def _tflite_main(npz_path: str, out_path: str) -> None:
    import tensorflow as tf

    arrays = np.load(npz_path)
    flat = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    weights = list(zip(flat[0::2], flat[1::2], strict=True))

    class Mlp(tf.Module):  # type: ignore[misc]
        @tf.function(  # type: ignore[untyped-decorator,unused-ignore]
            input_signature=[tf.TensorSpec([None, weights[0][0].shape[0]], tf.float32, name="x")]
        )
        def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            h = x
            for i, (w, b) in enumerate(weights):
                h = tf.matmul(h, tf.constant(w)) + tf.constant(b)
                if i < len(weights) - 1:
                    h = tf.nn.relu(h)
            return {"y": h}

    module = Mlp()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    Path(out_path).write_bytes(converter.convert())


if __name__ == "__main__":
    _tflite_main(sys.argv[1], sys.argv[2])
