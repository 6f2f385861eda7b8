"""The embedded ``digits`` model and its OpenVINO and TFLite twins agree on the held-out digits."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runner.backends.base import LoadOptions
from edge_runner.backends.registry import get_backend, probe
from edge_runner.core.manifest import read_manifest
from edge_runner.core.paths import DEFAULTS_DIR

TWINS = [
    ("onnxruntime", "digits"),
    ("openvino", "digits"),
    ("openvino", "digits-openvino"),
    ("tflite", "digits-tflite"),
]


def _predict(backend_name: str, model: str, x: np.ndarray) -> np.ndarray:
    folder = DEFAULTS_DIR / model / "1"
    if not (folder / "manifest.json").is_file():
        pytest.skip(f"{model} is not in the embedded defaults")
    if not probe(backend_name).available:
        pytest.skip(f"{backend_name} unavailable")
    backend = get_backend(backend_name)(read_manifest(folder), folder, LoadOptions(threads=1))
    backend.load()
    try:
        name = backend.metadata().inputs[0].name
        predicted: np.ndarray = np.argmax(backend.infer({name: x})["logits"], axis=1)
        return predicted
    finally:
        backend.unload()


@pytest.mark.parametrize(("backend_name", "model"), TWINS, ids=[f"{b}-{m}" for b, m in TWINS])
def test_twin_is_accurate_and_agrees_with_onnxruntime(
    backend_name: str, model: str, digits_holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    x, labels = digits_holdout
    predicted = _predict(backend_name, model, x)
    baseline = _predict("onnxruntime", "digits", x)
    assert (predicted == labels).mean() >= 0.95
    assert (predicted == baseline).mean() >= 0.98
