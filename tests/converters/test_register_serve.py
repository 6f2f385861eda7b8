"""A model converted with --register is served by the ONNX Runtime backend with the source's outputs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import LOCAL

pytest.importorskip("falcon")
pytest.importorskip("onnxruntime")


def test_registered_conversion_answers_over_http(convert, torch_zoo, tmp_path):
    import torch
    from falcon import testing

    from edge_runner.cli.serve import build_manager
    from edge_runner.config.profiles import load_profile
    from edge_runner.config.settings import Settings
    from edge_runner.server.app import create_app

    repo = tmp_path / "repo"
    src = f"{torch_zoo['module']}:TinyMLP"
    result = convert(
        src,
        "--to",
        "onnx",
        "--state-dict",
        str(torch_zoo["mlp_state"]),
        "--example-input",
        "x:float32:1x16",
        "--register",
        "tiny-mlp",
        "--model-repository",
        str(repo),
    )
    assert result.rc == 0, result.stderr
    settings = Settings(model_repository=str(repo), load_defaults=False)
    manager = build_manager(settings, load_profile("cpu"))
    manager.load("tiny-mlp")
    client = testing.TestClient(create_app(manager, settings, {"ready": True}), headers=LOCAL)
    x = np.random.default_rng(7).standard_normal((3, 16)).astype(np.float32)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 16], "data": x.ravel().tolist()}]}
    response = client.simulate_post("/v2/models/tiny-mlp/infer", json=body)
    assert response.status_code == 200, response.text
    out = response.json["outputs"][0]
    got = np.asarray(out["data"], np.float32).reshape(out["shape"])
    model = torch.jit.load(str(torch_zoo["mlp_ts"]))  # traced from the same weights as mlp_state
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
