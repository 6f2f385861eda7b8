"""Keras applications (weights=None) to ONNX (tf2onnx), OpenVINO IR and TFLite."""

from __future__ import annotations

import numpy as np
import pytest

from tests.converters.checks import assert_parity

pytest.importorskip("tensorflow")


def keras_expected(path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(images, logits of the Keras model itself) on a fixed batch."""
    import keras

    x = np.random.default_rng(4).standard_normal((4, size, size, 3)).astype(np.float32)
    return x, np.asarray(keras.models.load_model(str(path), compile=False)(x, training=False))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3"])
@pytest.mark.parametrize("target", ["onnx", "openvino", "tflite"])
def test_keras_applications_convert_with_parity(convert, keras_zoo, name, target):
    result = convert(keras_zoo[name], "--to", target, "--task", "image-classification")
    x, expected = keras_expected(keras_zoo[name], 96 if name == "mobilenet_v2" else 64)
    assert_parity(result, expected, x, classifier=True)
    assert result.manifest["inputs"][0]["shape"][0] == -1
    assert result.manifest["source"]["framework"] == "tensorflow"


@pytest.mark.slow
def test_h5_to_tflite_int8_dynamic_range_and_full_integer(convert, keras_zoo, tmp_path):
    dynamic = convert(keras_zoo["mobilenet_v2_h5"], "--to", "tflite", "--quantize", "int8")
    x, expected = keras_expected(keras_zoo["mobilenet_v2"], 96)  # the .h5 holds the same model
    assert_parity(dynamic, expected, x, "int8", classifier=True)
    assert dynamic.manifest["extra"]["quantization_detail"]["flavour"] == "dynamic-range"
    calib = tmp_path / "images.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((8, 96, 96, 3)).astype(np.float32))
    full = convert(
        keras_zoo["mobilenet_v2"], "--to", "tflite", "--quantize", "int8", "--calibration", str(calib), "--allow-drift"
    )
    assert full.rc == 0
    assert full.manifest["extra"]["quantization_detail"]["flavour"] == "full-integer"
    # Full-integer INT8 of a random-weight net calibrated on noise drifts (~0.89 cosine here): the report
    # records it and --allow-drift keeps the artifact; real weights and data do much better.
    assert full.parity["mean_cosine"] > 0.8
    assert full.parity["passed"] is (full.parity["mean_cosine"] >= 0.99)
