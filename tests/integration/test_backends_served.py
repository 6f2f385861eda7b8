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


#: a shared library of each runtime, as it appears in /proc/PID/maps once the runtime is imported
RUNTIME_LIBS = {
    "onnxruntime": "onnxruntime/capi",
    "openvino": "libopenvino",
    "tflite": "ai_edge_litert",
    "llama_cpp": "libllama",
}


def _runtimes_mapped(server: ServerProcess) -> set[str]:
    with open(f"/proc/{server.proc.pid}/maps") as maps:
        text = maps.read()
    return {name for name, lib in RUNTIME_LIBS.items() if lib in text}


def _index(url: str) -> dict[str, str]:
    request = urllib.request.Request(f"{url}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        return {row["name"]: row["state"] for row in json.loads(resp.read())}


def test_default_start_leaves_the_twins_to_their_first_request(
    start_server: Callable[..., ServerProcess], digits_holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    """No models named: digits and tiny-llm load at start; the OpenVINO/TFLite twins are listed, their
    runtimes not even imported, until a v2 infer on each loads it."""
    server = start_server()
    states = _index(server.url)
    assert states["digits"] == "READY" and states["tiny-llm"] == "READY"
    assert states["digits-openvino"] == states["digits-tflite"] == "UNAVAILABLE"
    assert _runtimes_mapped(server) == {"onnxruntime", "llama_cpp"}
    x, y = digits_holdout
    reference = _logits(server.url, "digits", x[:64]).argmax(1)
    for model in ("digits-openvino", "digits-tflite"):
        pred = _logits(server.url, model, x[:64]).argmax(1)
        assert (pred == y[:64]).mean() >= 0.9 and (pred == reference).mean() >= 0.95, model
    assert _index(server.url)["digits-openvino"] == _index(server.url)["digits-tflite"] == "READY"
    assert _runtimes_mapped(server) == set(RUNTIME_LIBS)


def test_empty_lazy_models_loads_every_default_at_start(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--lazy-models", "")
    assert set(_index(server.url).values()) == {"READY"}
    assert _runtimes_mapped(server) == set(RUNTIME_LIBS)


def test_an_onnx_only_server_imports_no_other_runtime(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--models", "digits")
    for path in ("/metrics", "/v1/models", "/api/tags", "/api/ps", "/v2/health/ready"):
        with urllib.request.urlopen(server.url + path, timeout=30) as resp:
            assert resp.status == 200, path
    assert _runtimes_mapped(server) == {"onnxruntime"}


def test_a_twin_answers_ready_and_metadata_before_any_infer(start_server: Callable[..., ServerProcess]) -> None:
    """tritonclient's usual first calls (is_model_ready, get_model_metadata, get_model_config) on a lazy twin
    load it, instead of a 503 that would make the client give up before its first infer."""
    server = start_server()
    with urllib.request.urlopen(f"{server.url}/v2/models/digits-tflite/ready", timeout=60) as resp:
        assert json.loads(resp.read())["ready"] is True
    with urllib.request.urlopen(f"{server.url}/v2/models/digits-openvino", timeout=60) as resp:
        assert json.loads(resp.read())["inputs"][0]["shape"] == [-1, 1, 8, 8]
    assert _index(server.url)["digits-openvino"] == _index(server.url)["digits-tflite"] == "READY"
