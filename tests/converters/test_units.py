"""Pure helpers: example-input syntax, parity metrics and thresholds, presets, calibration loading."""

from __future__ import annotations

import numpy as np
import pytest

from converters.calibration import load_calibration
from converters.errors import ConversionError
from converters.options import InputSpec, parse_example_input
from converters.presets import PRESETS, get_preset, int8_flavour
from edge_runner.core.parity import (
    THRESHOLDS,
    ParityReport,
    Thresholds,
    compare_outputs,
    mean_cosine,
    thresholds_for,
    top1_agreement,
)


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


def _report(outputs, quantization, sizes=(100, 50), kind="tensor", task="image-classification"):
    return ParityReport.measure(
        kind=kind,
        quantization=quantization,
        task=task,
        outputs=outputs,
        primary="logits",
        samples=4,
        sizes=sizes,
        latency_ms=(2.0, 1.0),
        measured_with="test",
    )


def test_report_thresholds_by_level():
    ref = [np.array([[1.0, 0.0, 0.2]] * 4, np.float32)]
    noisy = [ref[0] + np.array([[0.0, 0.05, 0.0]], np.float32)]
    outputs = compare_outputs(["logits"], ref, noisy, "image-classification")
    strict = _report(outputs, "none")
    assert strict.passed is False and "cosine" in strict.failures[0]
    loose = _report(outputs, "int8-static", (100, 25))
    assert loose.passed is True
    data = loose.to_json()
    assert data["size_bytes"]["ratio"] == 0.25 and data["latency_ms"]["speedup"] == 2.0
    assert data["thresholds"] == {"min_cosine": 0.99, "min_top1": 0.9, "min_sample_cosine": None}


def test_report_round_trips_through_json():
    ref = [np.array([[1.0, 0.0, 0.2], [0.0, 1.0, 0.0]], np.float32)]
    report = _report(compare_outputs(["logits"], ref, ref, "image-classification"), "none").with_details({"n": 1})
    assert ParityReport.from_json(report.to_json()) == report
    assert report.to_json()["passed"] is True and report.to_json()["top1_agreement"] == 1.0


def test_one_threshold_table_for_every_kind():
    assert thresholds_for("decoder", "q8_0") == Thresholds(0.99, 0.85)
    assert thresholds_for("decoder", "q4_k_m") == THRESHOLDS[("decoder", "q8_0")]  # K-quants: the Q8_0 row
    assert thresholds_for("encoder", "f16").min_sample_cosine == 0.99
    assert thresholds_for("tensor", "int8-dynamic", "image-classification").min_top1 == 0.90
    assert thresholds_for("tensor", "none", task="feature-extraction").min_top1 is None  # not a classifier
    with pytest.raises(ValueError):
        thresholds_for("vision", "none")


def test_decoder_top1_and_encoder_worst_sample_are_enforced():
    logits = np.eye(4, dtype=np.float32)
    flipped = logits[[1, 0, 2, 3]]
    decoder = _report(compare_outputs(["logits"], [logits], [flipped], "text-generation"), "q8_0", kind="decoder")
    assert not decoder.passed and any(f.startswith("top1_agreement") for f in decoder.failures)
    emb = np.ones((3, 4), np.float32)
    bad = emb.copy()
    bad[2] = [1.0, -1.0, 1.0, -1.0]
    encoder = _report(compare_outputs(["logits"], [emb], [bad], "feature-extraction"), "q8_0", kind="encoder")
    assert any(f.startswith("min_cosine") for f in encoder.failures)


def test_earlier_manifests_still_read():
    gguf = {
        "kind": "decoder",
        "positions": 101,
        "top1_agreement": 0.96,
        "mean_cosine": 0.9999,
        "max_abs_err": 0.2,
        "tokenizer_agreement": 1.0,
        "latency_ms_before": 7.8,
        "latency_ms_after": 1.7,
        "size_bytes_before": 4000,
        "size_bytes_after": 1000,
        "thresholds": {"top1_agreement": 0.85, "mean_cosine": 0.99},
        "passed": True,
    }
    report = ParityReport.from_json(gguf)
    assert (report.samples, report.latency_artifact_ms, report.size_source_bytes) == (101, 1.7, 4000)
    assert report.thresholds == Thresholds(0.99, 0.85) and report.details["tokenizer_agreement"] == 1.0
    digits = {"heldout_accuracy": 0.97, "heldout_samples": 450}
    old = ParityReport.from_json(digits)
    assert old.samples == 450 and old.details["heldout_accuracy"] == 0.97
    assert old.passed is False and old.mean_cosine is None  # never checked against thresholds


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
