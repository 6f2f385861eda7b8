"""KServe v2 routes in-process: every route, the binary extension, and the bad-input table."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from falcon import testing

from edge_runner.protocol.kserve_codec import HEADER_LENGTH
from tests.conftest import LOCAL


def _infer_body(x: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
        **extra,
    }


def test_server_metadata_health_and_openapi(client: testing.TestClient) -> None:
    meta = client.simulate_get("/v2").json
    assert meta["name"] == "edge-runner" and "binary_tensor_data" in meta["extensions"]
    assert client.simulate_get("/v2/health/live").status_code == 200
    assert client.simulate_get("/v2/health/ready").status_code == 200
    spec = client.simulate_get("/openapi.json").json
    assert "/v2/models/{model}/versions/{version}/infer" in spec["paths"]
    assert "post" in spec["paths"]["/v2/models/{model}/infer"]
    assert "post" in spec["paths"]["/v1/chat/completions"] and "get" in spec["paths"]["/api/ps"]


def test_model_metadata_ready_config(client: testing.TestClient) -> None:
    meta = client.simulate_get("/v2/models/digits").json
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert meta["parameters"]["device"] == "CPUExecutionProvider"
    assert client.simulate_get("/v2/models/digits/versions/1").json["name"] == "digits"
    assert client.simulate_get("/v2/models/digits/ready").json["ready"] is True
    assert client.simulate_get("/v2/models/digits/versions/1/ready").status_code == 200
    config = client.simulate_get("/v2/models/digits/config").json
    assert config["max_batch_size"] == 8 and config["input"][0]["data_type"] == "TYPE_FP32"


def test_json_infer_with_and_without_version(
    client: testing.TestClient, digits_holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = digits_holdout
    for path in ("/v2/models/digits/infer", "/v2/models/digits/versions/1/infer"):
        resp = client.simulate_post(path, json=_infer_body(x[:16], id="req-1"))
        assert resp.status_code == 200, resp.text
        out = resp.json
        assert out["id"] == "req-1" and out["model_version"] == "1"
        logits = np.array(out["outputs"][0]["data"]).reshape(out["outputs"][0]["shape"])
        assert (logits.argmax(1) == y[:16]).mean() >= 0.9


def test_binary_request_and_binary_response(
    client: testing.TestClient, digits_holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    x = digits_holdout[0][:4]
    blob = x.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [4, 1, 8, 8],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()
    resp = client.simulate_post(
        "/v2/models/digits/infer",
        body=header + blob,
        headers={HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert resp.status_code == 200, resp.text
    json_len = int(resp.headers[HEADER_LENGTH.lower()])
    out = json.loads(resp.content[:json_len])["outputs"][0]
    logits = np.frombuffer(resp.content[json_len:], dtype=np.float32).reshape(out["shape"])
    assert out["parameters"]["binary_data_size"] == 4 * 10 * 4 and logits.shape == (4, 10)
    ref = client.simulate_post("/v2/models/digits/infer", json=_infer_body(x)).json["outputs"][0]["data"]
    np.testing.assert_allclose(logits.ravel(), ref, rtol=1e-6)


def test_stats_and_repository(client: testing.TestClient) -> None:
    client.simulate_post("/v2/models/digits/infer", json=_infer_body(np.zeros((2, 1, 8, 8), np.float32)))
    stats = client.simulate_get("/v2/models/digits/stats").json["model_stats"][0]
    assert stats["inference_count"] == 2 and stats["inference_stats"]["success"]["count"] == 1
    assert stats["latency"]["p50_ms"] > 0
    assert {s["name"] for s in client.simulate_get("/v2/models/stats").json["model_stats"]} >= {"digits", "fake"}
    index = client.simulate_post("/v2/repository/index").json
    assert {"name": "digits", "version": "1", "state": "READY", "reason": ""} in index
    assert client.simulate_post("/v2/repository/models/digits/unload").status_code == 200
    resp = client.simulate_get("/v2/models/digits/ready")
    assert resp.status_code == 503 and "not loaded" in resp.json["error"] and resp.headers["retry-after"] == "1"
    assert client.simulate_post("/v2/repository/models/digits/load").status_code == 200
    assert client.simulate_get("/v2/models/digits/ready").status_code == 200


def _post(
    client: testing.TestClient,
    path: str,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> testing.Result:
    if raw is not None:
        return client.simulate_post(path, body=raw, headers=headers or {})
    return client.simulate_post(path, json=body, headers=headers)


GOOD = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}
BAD_INPUTS = [
    ("malformed JSON", None, b"{not json", None, 400, "not valid JSON"),
    ("no inputs", {"inputs": []}, None, None, 400, "'inputs' must be a non-empty list"),
    (
        "wrong datatype",
        {"inputs": [{**GOOD, "datatype": "INT64", "data": [0] * 64}]},
        None,
        None,
        422,
        "expected datatype FP32, got INT64",
    ),
    ("unknown datatype", {"inputs": [{**GOOD, "datatype": "FLOAT"}]}, None, None, 422, "unknown datatype 'FLOAT'"),
    (
        "wrong shape",
        {"inputs": [{**GOOD, "shape": [1, 64], "data": [0.0] * 64}]},
        None,
        None,
        422,
        "expected rank 4 with shape [-1, 1, 8, 8]",
    ),
    (
        "wrong dim",
        {"inputs": [{**GOOD, "shape": [1, 1, 8, 4], "data": [0.0] * 32}]},
        None,
        None,
        422,
        "dimension 3 must be 8",
    ),
    (
        "count mismatch",
        {"inputs": [{**GOOD, "data": [0.0] * 10}]},
        None,
        None,
        422,
        "shape [1, 1, 8, 8] needs 64 elements, data has 10",
    ),
    ("strings for FP32", {"inputs": [{**GOOD, "data": ["a"] * 64}]}, None, None, 422, "FP32 data must be numbers"),
    (
        "unknown input",
        {"inputs": [{**GOOD, "name": "image"}]},
        None,
        None,
        422,
        "unknown input 'image'; the model's inputs are ['input']",
    ),
    ("unknown output", {"inputs": [GOOD], "outputs": [{"name": "probs"}]}, None, None, 422, "unknown output 'probs'"),
    ("negative dim", {"inputs": [{**GOOD, "shape": [-1, 1, 8, 8]}]}, None, None, 422, "non-negative integers"),
]


@pytest.mark.parametrize(
    ("case", "body", "raw", "headers", "status", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_table(
    client: testing.TestClient,
    case: str,
    body: Any,
    raw: bytes | None,
    headers: dict[str, str] | None,
    status: int,
    message: str,
) -> None:
    resp = _post(client, "/v2/models/digits/infer", body, raw, headers)
    assert resp.status_code == status, resp.text
    assert message in resp.json["error"], resp.json["error"]
    assert "Traceback" not in resp.text


def test_unknown_model_and_version(client: testing.TestClient) -> None:
    resp = _post(client, "/v2/models/nope/infer", {"inputs": [GOOD]})
    assert resp.status_code == 404 and "model 'nope' not found" in resp.json["error"]
    resp = _post(client, "/v2/models/digits/versions/9/infer", {"inputs": [GOOD]})
    assert resp.status_code == 404 and "no version 9" in resp.json["error"]
    resp = client.simulate_get("/v2/models/digits/versions/x")
    assert resp.status_code == 422 and "positive integer" in resp.json["error"]


def test_path_traversal_name_is_refused(client: testing.TestClient) -> None:
    resp = client.simulate_post("/v2/repository/models/..%2f..%2fetc/load")
    assert resp.status_code == 404  # the decoded slashes make it no route at all
    resp = client.simulate_post("/v2/repository/models/.hidden/load")
    assert resp.status_code == 400 and "invalid model name" in resp.json["error"]


def test_oversized_body_gets_413(client: testing.TestClient) -> None:
    resp = _post(client, "/v2/models/digits/infer", raw=b"{" + b" " * (2 << 20) + b"}")
    assert resp.status_code == 413 and "exceeds the 1048576-byte limit" in resp.json["error"]


def test_binary_size_mismatches(client: testing.TestClient) -> None:
    blob = np.zeros(64, np.float32).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "parameters": {"binary_data_size": 100}}
            ]
        }
    ).encode()
    resp = _post(client, "/v2/models/digits/infer", raw=header + blob[:100], headers={HEADER_LENGTH: str(len(header))})
    assert (
        resp.status_code == 422
        and "binary_data_size is 100 bytes, but shape [1, 1, 8, 8] of FP32 needs 256" in resp.json["error"]
    )
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "parameters": {"binary_data_size": 512}}
            ]
        }
    ).encode()
    resp = _post(client, "/v2/models/digits/infer", raw=header + blob, headers={HEADER_LENGTH: str(len(header))})
    assert resp.status_code == 422 and "exceeds the 256 binary bytes left" in resp.json["error"]
    resp = _post(client, "/v2/models/digits/infer", raw=header + blob, headers={HEADER_LENGTH: "99999"})
    assert resp.status_code == 400 and "Inference-Header-Content-Length is 99999" in resp.json["error"]


def test_unknown_route_and_method_use_error_shape(client: testing.TestClient) -> None:
    resp = client.simulate_get("/v2/nothing")
    assert resp.status_code == 404 and "error" in resp.json
    resp = client.simulate_get("/v2/models/digits/infer")
    assert resp.status_code == 405 and "error" in resp.json


def test_fake_model_doubles_fp32_and_rejects_other_datatypes(client: testing.TestClient) -> None:
    values = [1.5, -2.0, 3.25, 0.0]
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": values}]}
    assert client.simulate_post("/v2/models/fake/infer", json=body).json["outputs"][0]["data"] == [
        2 * v for v in values
    ]
    body["inputs"][0]["datatype"] = "INT64"
    body["inputs"][0]["data"] = [1, -2, 3, 4]
    resp = client.simulate_post("/v2/models/fake/infer", json=body)
    assert resp.status_code == 422 and "expected datatype FP32, got INT64" in resp.json["error"]


def test_api_key_protects_all_but_liveness(manager: Any) -> None:
    from dataclasses import replace

    from edge_runner.server.app import create_app

    app = testing.TestClient(create_app(manager, replace(manager.settings, api_key="k3y")), headers=LOCAL)
    assert app.simulate_get("/v2/health/live").status_code == 200
    resp = app.simulate_get("/v2/models/digits")
    assert resp.status_code == 401 and "Bearer" in resp.json["error"]
    assert app.simulate_get("/v2/models/digits", headers={"Authorization": "Bearer k3y"}).status_code == 200


def test_load_with_keep_alive(client: testing.TestClient, manager: Any) -> None:
    resp = client.simulate_post("/v2/repository/models/digits/load", json={"parameters": {"keep_alive": "5m"}})
    assert resp.status_code == 200
    assert manager.get("digits").keep_alive_s == 300.0
    ps = client.simulate_get("/api/ps").json["models"]
    assert {"digits": "300s"}.items() <= {m["name"]: m["keep_alive"] for m in ps}.items()
    resp = client.simulate_post("/v2/repository/models/digits/load", json={"parameters": {"keep_alive": "soon"}})
    assert resp.status_code == 422 and "keep_alive" in resp.json["error"]
    resp = client.simulate_post("/v2/repository/models/digits/load", json={"parameters": {"keep_alive": 0}})
    assert resp.status_code == 200 and client.simulate_get("/v2/models/digits/ready").status_code == 503


def test_status_reads_do_not_keep_a_model_alive(client: testing.TestClient, manager: Any) -> None:
    """Readiness, metadata and config reads (probes poll them) leave the idle clock alone; an infer moves it."""
    entry = manager.get("digits")
    entry.last_used = 0.0
    for path in ("/v2/models/digits/ready", "/v2/models/digits", "/v2/models/digits/config"):
        assert client.simulate_get(path).status_code == 200
    assert entry.last_used == 0.0
    body = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]}
    assert client.simulate_post("/v2/models/digits/infer", json=body).status_code == 200
    assert entry.last_used > 0.0
