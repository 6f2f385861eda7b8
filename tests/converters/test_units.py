"""Pure helpers: example-input syntax, parity metrics and thresholds, presets, calibration loading."""

from __future__ import annotations

import numpy as np
import pytest

from converters.calibration import load_calibration
from converters.errors import ConversionError
from converters.options import InputSpec, parse_example_input
from converters.parity import build_report, compare_outputs, mean_cosine, top1_agreement
from converters.presets import PRESETS, get_preset, int8_flavour


def test_parse_example_input():
    spec = parse_example_input("image:float32:1x3x224x224")
    assert spec == InputSpec("image", "float32", (1, 3, 224, 224))
    for bad in ("image", "image:float32", "x:float32:1xA", "x:float32:0x3", ":float32:1"):
        with pytest.raises(ConversionError):
            parse_example_input(bad)


def test_mean_cosine_and_top1():
    a = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    assert mean_cosine(a, a) == pytest.approx(1.0)
    assert mean_cosine(a, -a) == pytest.approx(-1.0)
    assert mean_cosine(np.zeros((2, 3)), np.zeros((2, 3))) == 1.0
    assert top1_agreement(a, np.array([[1.0, 0.0], [3.0, 0.0]])) == 0.5
    assert top1_agreement(np.zeros((2, 1)), np.zeros((2, 1))) is None


def test_report_thresholds_by_level():
    ref = [np.array([[1.0, 0.0, 0.2]] * 4, np.float32)]
    noisy = [ref[0] + np.array([[0.0, 0.05, 0.0]], np.float32)]
    outputs = compare_outputs(["logits"], ref, noisy, "image-classification")
    strict = build_report(outputs, "logits", "none", "image-classification", 4, (100, 50), (2.0, 1.0))
    assert strict["passed"] is False and "cosine" in strict["failures"][0]
    loose = build_report(outputs, "logits", "int8-static", "image-classification", 4, (100, 25), (2.0, 1.0))
    assert loose["passed"] is True
    assert loose["size_bytes"]["ratio"] == 0.25 and loose["latency_ms"]["speedup"] == 2.0


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="shape"):
        compare_outputs(["y"], [np.zeros((2, 3))], [np.zeros((2, 4))], "")


def test_presets_resolve_int8_flavours():
    cpu, vnni = get_preset(None), get_preset("avx512-vnni")
    assert int8_flavour(cpu, "onnx", "int8", has_calibration=False) == "dynamic"
    assert int8_flavour(cpu, "onnx", "int8", has_calibration=True) == "static"
    assert int8_flavour(vnni, "onnx", "int8", has_calibration=False) == "dynamic"
    assert int8_flavour(vnni, "openvino", "int8-static", has_calibration=False) == "full"
    assert int8_flavour(get_preset("arm64"), "tflite", "int8-dynamic", has_calibration=True) == "dynamic-range"
    assert get_preset("cuda").default_quantization == "fp16"
    assert {"cpu", "arm64", "avx512-vnni", "intel-npu"} <= set(PRESETS)
    with pytest.raises(ConversionError):
        get_preset("pdp-11")


def test_calibration_npz_folder_and_errors(tmp_path):
    inputs = [InputSpec("ids", "int64", (1, 8)), InputSpec("mask", "int64", (1, 8))]
    np.savez(tmp_path / "a.npz", ids=np.ones((3, 8)), mask=np.ones((3, 8)))
    np.savez(tmp_path / "b.npz", ids=np.ones(8), mask=np.ones(8))
    samples = load_calibration(tmp_path, inputs)
    assert len(samples) == 4 and samples[0]["ids"].shape == (1, 8) and samples[0]["ids"].dtype == np.int64
    np.save(tmp_path / "single.npy", np.ones((2, 8)))
    with pytest.raises(ConversionError, match="one array"):
        load_calibration(tmp_path / "single.npy", inputs)
    np.savez(tmp_path / "c.npz", ids=np.ones((2, 8)))
    with pytest.raises(ConversionError, match="lacks"):
        load_calibration(tmp_path / "c.npz", inputs)
    with pytest.raises(ConversionError, match="does not exist"):
        load_calibration(tmp_path / "nope.npz", inputs)
