"""fold_weight_decompression: int8/uint8 MatMul weights dequantized at run time become f32 constants.

OpenVINO 2026.4's ARM CPU plugin applies the first output channel's scale to every channel of such a MatMul
(measured under qemu-aarch64 10: the digits IR's logits off by up to 29); the backend folds them on aarch64.
Here (any CPU) the fold must keep the model's answers: the folded graph is compared with numpy's evaluation of
the same dequantization and with the unfolded graph compiled by this machine's CPU plugin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.backends.conftest import make_backend

ov = pytest.importorskip("openvino")
opset = pytest.importorskip("openvino.opset13")


def _quantized_fc(zero_point: bool) -> tuple[object, np.ndarray]:
    """x[?, 6] @ dequant(W[5, 6]).T with a per-output-channel scale (and a uint8 zero point when asked)."""
    rng = np.random.default_rng(3)
    scale = rng.uniform(0.01, 0.05, size=(5, 1)).astype(np.float32)  # five different scales: the ARM bug's trigger
    x = opset.parameter([-1, 6], np.float32, name="x")
    if zero_point:
        q = rng.integers(0, 256, size=(5, 6)).astype(np.uint8)
        zp = rng.integers(100, 156, size=(5, 1)).astype(np.uint8)
        centred = opset.subtract(opset.convert(opset.constant(q), "f32"), opset.convert(opset.constant(zp), "f32"))
        dequant = (q.astype(np.float32) - zp.astype(np.float32)) * scale
    else:
        q = rng.integers(-127, 128, size=(5, 6)).astype(np.int8)
        centred = opset.convert(opset.constant(q), "f32")
        dequant = q.astype(np.float32) * scale
    weights = opset.multiply(centred, opset.constant(scale))
    y = opset.matmul(x, weights, transpose_a=False, transpose_b=True)
    return ov.Model([opset.result(y)], [x], "quantized_fc"), dequant


def _run(model: object, x: np.ndarray) -> np.ndarray:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled({0: x})[0])


@pytest.mark.parametrize("zero_point", [False, True], ids=["int8-scale", "uint8-zero-point-scale"])
def test_fold_keeps_the_answers(zero_point: bool) -> None:
    from edge_runner.backends.openvino_weights import fold_weight_decompression

    model, dequant = _quantized_fc(zero_point)
    x = np.random.default_rng(4).standard_normal((3, 6)).astype(np.float32)
    unfolded = _run(model, x)
    assert fold_weight_decompression(model) == 1
    kinds = {op.get_type_name() for op in model.get_ordered_ops()}
    assert kinds == {"Parameter", "Constant", "MatMul", "Result"}, kinds
    (weights,) = [op.get_data() for op in model.get_ordered_ops() if op.get_type_name() == "Constant"]
    np.testing.assert_array_equal(weights, dequant)
    folded = _run(model, x)
    np.testing.assert_allclose(folded, x.astype(np.float64) @ dequant.T.astype(np.float64), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(folded, unfolded, rtol=1e-5, atol=1e-5)
    assert fold_weight_decompression(model) == 0  # nothing left to fold


def test_float_weights_are_left_alone() -> None:
    from edge_runner.backends.openvino_weights import fold_weight_decompression

    x = opset.parameter([-1, 4], np.float32, name="x")
    w = opset.multiply(opset.constant(np.ones((4, 2), np.float32)), opset.constant(np.float32(2)))
    model = ov.Model([opset.result(opset.matmul(x, w, False, False))], [x], "float_fc")
    assert fold_weight_decompression(model) == 0


def test_backend_option_folds_on_load(tmp_path: Path) -> None:
    """The option reaches load(): an IR written to disk serves the same answers folded and unfolded."""
    from edge_runner.repository.external import manifest_for_path

    model, dequant = _quantized_fc(zero_point=False)
    ov.save_model(model, tmp_path / "fc.xml", compress_to_fp16=False)
    artifact = manifest_for_path(tmp_path / "fc.xml", "fc")
    x = np.random.default_rng(5).standard_normal((2, 6)).astype(np.float32)
    answers = {}
    for fold in (True, False):
        backend = make_backend("openvino", artifact, options={"fold_weight_decompression": fold})
        backend.load()
        (name,) = [t.name for t in backend.metadata().outputs]
        input_name = backend.metadata().inputs[0].name
        answers[fold] = backend.infer({input_name: x})[name]
        backend.unload()
    np.testing.assert_allclose(answers[True], x.astype(np.float64) @ dequant.T.astype(np.float64), atol=1e-5)
    np.testing.assert_allclose(answers[True], answers[False], rtol=1e-5, atol=1e-5)
