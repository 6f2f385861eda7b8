"""The committed ``digits`` defaults: checksums, held-out accuracy and cross-runtime agreement.

Each artifact is run by the runtime that serves it (onnxruntime, OpenVINO, LiteRT) on the held-out
split rebuilt from its manifest's ``extra.holdout``. Artifacts are rebuilt by
``scripts/train_digits.py``, which calls the converter pipeline: every manifest carries the shared
parity report, measured on the held-out split, with the held-out accuracy in ``details``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_runner.backends.registry import default_backend_for_format
from edge_runner.core.manifest import Manifest, read_manifest, verify_files
from edge_runner.core.parity import ParityReport

DEFAULTS = Path(__file__).resolve().parents[2] / "edge_runner" / "defaults"
ARTIFACTS = {
    "digits": DEFAULTS / "digits" / "1",
    "digits-openvino": DEFAULTS / "digits-openvino" / "1",
    "digits-tflite": DEFAULTS / "digits-tflite" / "1",
}
MIN_ACCURACY = 0.9
MAX_DRIFT_FROM_MANIFEST = 0.01
MIN_TWIN_AGREEMENT = 0.98
MAX_ARTIFACT_BYTES = 200 * 1024

Predict = Callable[[np.ndarray], np.ndarray]


def heldout(manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """Rebuild the held-out images [N, 1, 8, 8] and labels exactly as the manifest records the split."""
    datasets = pytest.importorskip("sklearn.datasets")
    model_selection = pytest.importorskip("sklearn.model_selection")
    spec = manifest.extra["holdout"]
    assert spec["scale"] == "x/16"
    digits = datasets.load_digits()
    x = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target
    _, x_test, _, y_test = model_selection.train_test_split(
        x, y, test_size=spec["test_size"], random_state=spec["random_state"], stratify=y if spec["stratify"] else None
    )
    return x_test, y_test


def onnx_predictor(folder: Path, manifest: Manifest) -> Predict:
    """Logits through an onnxruntime CPU session."""
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(folder / manifest.primary_file), providers=["CPUExecutionProvider"])
    return lambda x: session.run(["logits"], {"input": x})[0]


def openvino_predictor(folder: Path, manifest: Manifest) -> Predict:
    """Logits through OpenVINO on CPU, in f32 (this CPU would otherwise run bf16)."""
    ov = pytest.importorskip("openvino")
    compiled = ov.Core().compile_model(str(folder / manifest.primary_file), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda x: compiled(x)[compiled.output("logits")]


def tflite_predictor(folder: Path, manifest: Manifest) -> Predict:
    """Logits through the LiteRT interpreter's signature runner."""
    interpreter = pytest.importorskip("ai_edge_litert.interpreter")
    runner = interpreter.Interpreter(model_path=str(folder / manifest.primary_file)).get_signature_runner(
        manifest.extra["tflite_signature"]
    )
    return lambda x: runner(input=x)["logits"]


PREDICTORS: dict[str, Callable[[Path, Manifest], Predict]] = {
    "onnx": onnx_predictor,
    "openvino": openvino_predictor,
    "tflite": tflite_predictor,
}


def predict(name: str) -> tuple[np.ndarray, np.ndarray, Manifest]:
    """Held-out logits and labels of one committed artifact, with its manifest."""
    folder = ARTIFACTS[name]
    manifest = read_manifest(folder)
    x, y = heldout(manifest)
    return PREDICTORS[manifest.format](folder, manifest)(x), y, manifest


@pytest.mark.parametrize("name", list(ARTIFACTS))
def test_manifest_matches_files(name: str) -> None:
    folder = ARTIFACTS[name]
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    assert manifest.name == name
    assert manifest.version == 1
    assert manifest.quantization == "int8"
    assert manifest.task == "image-classification"
    assert manifest.extra["labels"] == [str(d) for d in range(10)]
    assert [(t.name, t.datatype, t.shape) for t in manifest.inputs] == [("input", "FP32", (-1, 1, 8, 8))]
    assert [(t.name, t.datatype, t.shape) for t in manifest.outputs] == [("logits", "FP32", (-1, 10))]
    for entry in manifest.files:
        assert entry.size < MAX_ARTIFACT_BYTES


def test_onnx_manifest_records_both_precisions() -> None:
    manifest = read_manifest(ARTIFACTS["digits"])
    assert manifest.format == "onnx"
    assert manifest.backend == ""
    assert default_backend_for_format(manifest.format) == "onnxruntime"
    report = ParityReport.from_json(manifest.parity)
    assert report.passed and report.kind == "tensor" and report.measured_with.startswith("onnxruntime")
    assert report.details["heldout_accuracy_source"] >= MIN_ACCURACY  # the torch FP32 model
    assert report.top1_agreement is not None and report.top1_agreement >= MIN_TWIN_AGREEMENT  # FP32 vs INT8
    assert manifest.source["dataset"] == "sklearn.datasets.load_digits"


@pytest.mark.parametrize("name", list(ARTIFACTS))
def test_every_default_has_a_passing_parity_report(name: str) -> None:
    manifest = read_manifest(ARTIFACTS[name])
    report = ParityReport.from_json(manifest.parity)
    assert report.passed, report.failures
    assert report.samples == report.details["heldout_samples"]
    assert report.thresholds.min_top1 is not None  # a classifier: top-1 agreement was enforced
    assert report.to_json() == manifest.parity  # written in the one documented format


@pytest.mark.parametrize("name", list(ARTIFACTS))
def test_heldout_accuracy_matches_manifest(name: str) -> None:
    logits, labels, manifest = predict(name)
    assert logits.shape == (len(labels), 10)
    details = ParityReport.from_json(manifest.parity).details
    assert len(labels) == details["heldout_samples"]
    measured = float(np.mean(logits.argmax(axis=1) == labels))
    assert measured >= MIN_ACCURACY
    assert abs(measured - details["heldout_accuracy"]) <= MAX_DRIFT_FROM_MANIFEST


@pytest.mark.parametrize("twin", ["digits-openvino", "digits-tflite"])
def test_twins_agree_with_onnx(twin: str) -> None:
    onnx_logits, _, _ = predict("digits")
    twin_logits, _, _ = predict(twin)
    agreement = float(np.mean(onnx_logits.argmax(axis=1) == twin_logits.argmax(axis=1)))
    assert agreement >= MIN_TWIN_AGREEMENT


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_accepts_any_batch_size(batch: int) -> None:
    manifest = read_manifest(ARTIFACTS["digits"])
    x, _ = heldout(manifest)
    logits = onnx_predictor(ARTIFACTS["digits"], manifest)(x[:batch])
    assert logits.shape == (batch, 10)
    assert logits.dtype == np.float32
