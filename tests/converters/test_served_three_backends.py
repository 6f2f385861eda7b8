"""A larger converted model (Keras MobileNetV2) served by ONNX Runtime, OpenVINO and TFLite from one server."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.conftest import LOCAL

pytest.importorskip("openvino")
pytest.importorskip("ai_edge_litert")


@pytest.mark.slow
def test_mobilenet_as_onnx_ir_tflite_answers_alike(convert: Any, keras_zoo: Any, tmp_path: Any) -> None:
    from falcon import testing

    from edge_runner.cli.serve import build_manager
    from edge_runner.config.profiles import load_profile
    from edge_runner.config.settings import Settings
    from edge_runner.server.app import create_app

    repo = tmp_path / "repo"
    names = {"onnx": "mnv2-onnx", "openvino": "mnv2-ir", "tflite": "mnv2-tflite"}
    for target, name in names.items():
        result = convert(keras_zoo["mobilenet_v2"], "--to", target, "--register", name, "--model-repository", str(repo))
        assert result.rc == 0, result.stderr
    settings = Settings(model_repository=str(repo), load_defaults=False)
    manager = build_manager(settings, load_profile("cpu"))
    client = testing.TestClient(create_app(manager, settings, {"ready": True}), headers=LOCAL)
    x = np.random.default_rng(3).random((2, 96, 96, 3), dtype=np.float32)
    outputs = {}
    for target, name in names.items():
        entry = manager.load(name)[0]
        assert entry.backend.name == {"onnx": "onnxruntime"}.get(target, target)
        spec = entry.metadata.inputs[0]
        body = {"inputs": [{"name": spec.name, "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
        resp = client.simulate_post(f"/v2/models/{name}/infer", json=body)
        assert resp.status_code == 200, resp.text
        out = resp.json["outputs"][0]
        outputs[target] = np.asarray(out["data"], np.float32).reshape(out["shape"])
    ref = outputs["onnx"]
    for target, got in outputs.items():
        cos = float(np.sum(ref * got) / (np.linalg.norm(ref) * np.linalg.norm(got)))
        assert cos > 0.99, (target, cos)
        assert (got.argmax(1) == ref.argmax(1)).all(), target
