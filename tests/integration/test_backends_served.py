"""One server, three runtimes: digits as ONNX (ONNX Runtime), IR (OpenVINO) and TFLite, chosen through profiles."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tests.conftest import ServerProcess

pytest.importorskip("openvino")
pytest.importorskip("ai_edge_litert")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def _logits(url: str, model: str, x: np.ndarray) -> np.ndarray:
    body = json.dumps(
        {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    ).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{url}/v2/models/{model}/infer", data=body), timeout=60) as r:
        out = json.loads(r.read())["outputs"][0]
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])


def test_three_backends_in_one_server_agree(
    start_server: Callable[..., ServerProcess], digits_holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    server = start_server("--models", "digits,digits-openvino,digits-tflite")
    x, y = digits_holdout
    backends = {
        m: _get(f"{server.url}/v2/models/{m}")["parameters"]["backend"]
        for m in ("digits", "digits-openvino", "digits-tflite")
    }
    assert backends == {"digits": "onnxruntime", "digits-openvino": "openvino", "digits-tflite": "tflite"}
    preds = {m: _logits(server.url, m, x[:64]).argmax(1) for m in backends}
    for model, pred in preds.items():
        assert (pred == y[:64]).mean() >= 0.9, model
        assert (pred == preds["digits"]).mean() >= 0.95, model


def test_intel_npu_profile_serves_onnx_through_openvino_falling_back_to_cpu(
    start_server: Callable[..., ServerProcess], digits_holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    server = start_server("--models", "digits", "--profile", "intel-npu")
    meta = _get(f"{server.url}/v2/models/digits")["parameters"]
    assert meta["backend"] == "openvino" and meta["device"] == "CPU"
    skipped = {s["candidate"]: s["reason"] for s in meta["selection"] if not s["chosen"]}
    assert "NPU" in skipped and "not in Core().available_devices" in skipped["NPU"]
    x, y = digits_holdout
    assert (_logits(server.url, "digits", x[:32]).argmax(1) == y[:32]).mean() >= 0.9
    ps = _get(f"{server.url}/api/ps")["models"][0]
    assert ps["backend"] == "openvino" and any(not s["chosen"] for s in ps["selection"])


def test_cuda_profile_falls_back_to_cpu_with_reasons(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--models", "digits", "--profile", "cuda")
    meta = _get(f"{server.url}/v2/models/digits")["parameters"]
    assert meta["device"] == "CPUExecutionProvider"
    reasons = {s["candidate"]: s["reason"] for s in meta["selection"] if not s["chosen"]}
    assert (
        "CUDAExecutionProvider" in reasons
        and "not in onnxruntime.get_available_providers()" in reasons["CUDAExecutionProvider"]
    )
