"""Every KServe datatype through a real ONNX Runtime model (Identity per dtype), JSON and binary."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from falcon import testing

from edge_runner.config.settings import Settings
from edge_runner.core.datatypes import to_numpy
from edge_runner.protocol.kserve_codec import HEADER_LENGTH, decode_request, encode_response, serialize_bytes
from edge_runner.repository.store import ModelRepository
from edge_runner.server.app import create_app
from edge_runner.serving.model_manager import ModelManager
from tests.conftest import LOCAL

onnx = pytest.importorskip("onnx")

ONNX_TYPES = {
    "BOOL": 9,
    "UINT8": 2,
    "UINT16": 4,
    "UINT32": 12,
    "UINT64": 13,
    "INT8": 3,
    "INT16": 5,
    "INT32": 6,
    "INT64": 7,
    "FP16": 10,
    "FP32": 1,
    "FP64": 11,
    "BYTES": 8,
}


def _values(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([b"edge", b"runner", "\u00e9t\u00e9".encode(), b""], dtype=np.object_).reshape(1, 4)
    if datatype == "BOOL":
        return np.array([[True, False, True, True]])
    return np.array([[0, 1, 2, 3]]).astype(to_numpy(datatype))


@pytest.fixture
def identity_client(
    tmp_path: Path, settings: Settings, make_manager: Callable[..., ModelManager]
) -> testing.TestClient:
    from onnx import helper

    inputs, outputs, nodes = [], [], []
    for name, code in ONNX_TYPES.items():
        inputs.append(helper.make_tensor_value_info(f"in_{name}", code, ["N", 4]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", code, ["N", 4]))
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
    model = helper.make_model(
        helper.make_graph(nodes, "ident", inputs, outputs), opset_imports=[helper.make_opsetid("", 17)]
    )
    onnx.save_model(model, str(tmp_path / "ident.onnx"))
    ModelRepository(Path(settings.model_repository)).add(tmp_path / "ident.onnx", "ident")
    manager = make_manager(load_defaults=False)
    manager.load("ident")
    return testing.TestClient(create_app(manager, manager.settings), headers=LOCAL)


def _json_input(name: str, array: np.ndarray) -> dict[str, object]:
    data = [v.decode() for v in array.ravel()] if name == "BYTES" else array.ravel().tolist()
    return {"name": f"in_{name}", "shape": list(array.shape), "datatype": name, "data": data}


def test_every_datatype_json_roundtrip(identity_client: testing.TestClient) -> None:
    body = {"inputs": [_json_input(n, _values(n)) for n in ONNX_TYPES]}
    resp = identity_client.simulate_post("/v2/models/ident/infer", json=body)
    assert resp.status_code == 200, resp.text
    outputs = {o["name"]: o for o in resp.json["outputs"]}
    for name in ONNX_TYPES:
        out = outputs[f"out_{name}"]
        assert out["datatype"] == name and out["shape"] == [1, 4]
        expected = [v.decode() for v in _values(name).ravel()] if name == "BYTES" else _values(name).ravel().tolist()
        assert out["data"] == expected, name


def test_every_datatype_binary_roundtrip(identity_client: testing.TestClient) -> None:
    entries, blobs = [], []
    for name in ONNX_TYPES:
        array = _values(name)
        blob = serialize_bytes(array) if name == "BYTES" else array.tobytes()
        entries.append(
            {"name": f"in_{name}", "shape": [1, 4], "datatype": name, "parameters": {"binary_data_size": len(blob)}}
        )
        blobs.append(blob)
    header = json.dumps({"inputs": entries, "parameters": {"binary_data_output": True}}).encode()
    resp = identity_client.simulate_post(
        "/v2/models/ident/infer", body=header + b"".join(blobs), headers={HEADER_LENGTH: str(len(header))}
    )
    assert resp.status_code == 200, resp.text
    json_len = int(resp.headers[HEADER_LENGTH.lower()])
    offset = json_len
    for out in json.loads(resp.content[:json_len])["outputs"]:
        size = out["parameters"]["binary_data_size"]
        raw = resp.content[offset : offset + size]
        offset += size
        name = out["datatype"]
        expected = _values(name)
        if name == "BYTES":
            assert raw == serialize_bytes(expected)
        else:
            np.testing.assert_array_equal(np.frombuffer(raw, dtype=to_numpy(name)).reshape(1, 4), expected)
    assert offset == len(resp.content)


def test_nan_outputs_are_refused_in_json_and_served_in_binary(identity_client: testing.TestClient) -> None:
    """Real ONNX Runtime returns NaN / inf as given: JSON cannot carry them (Python would write a bare
    ``NaN`` that client parsers reject), so the JSON answer is a 422 that names the binary extension, and
    the binary answer carries them bit for bit."""
    odd = np.array([[np.nan, np.inf, -np.inf, 1.0]], np.float32)
    entries, blobs = [], []
    for name in ONNX_TYPES:
        array = odd if name == "FP32" else _values(name)
        blob = serialize_bytes(array) if name == "BYTES" else array.tobytes()
        entries.append(
            {"name": f"in_{name}", "shape": [1, 4], "datatype": name, "parameters": {"binary_data_size": len(blob)}}
        )
        blobs.append(blob)
    for binary_out in (False, True):
        header = json.dumps({"inputs": entries, "parameters": {"binary_data_output": binary_out}}).encode()
        resp = identity_client.simulate_post(
            "/v2/models/ident/infer", body=header + b"".join(blobs), headers={HEADER_LENGTH: str(len(header))}
        )
        if not binary_out:
            assert resp.status_code == 422, resp.text
            assert "['out_FP32'] holds NaN or infinite values" in resp.json["error"], resp.text
            continue
        assert resp.status_code == 200, resp.text
        json_len = int(resp.headers[HEADER_LENGTH.lower()])
        offset = json_len
        for out in json.loads(resp.content[:json_len])["outputs"]:
            size = out["parameters"]["binary_data_size"]
            if out["name"] == "out_FP32":
                got = np.frombuffer(resp.content[offset : offset + size], np.float32)
                assert np.isnan(got[0]) and got[1:].tolist() == [np.inf, -np.inf, 1.0]
            offset += size


def test_bf16_codec_roundtrip() -> None:
    body = json.dumps(
        {
            "inputs": [{"name": "x", "shape": [3], "datatype": "BF16", "data": [1.0, -2.5, 0.15625]}],
            "outputs": [{"name": "x"}],
        }
    ).encode()
    request = decode_request(body, None)
    bits = request.inputs["x"]
    assert bits.dtype == np.uint16 and bits.tolist() == [0x3F80, 0xC020, 0x3E20]
    encoded, _ = encode_response("m", "1", request, {"x": bits}, {"x": "BF16"})
    assert json.loads(encoded)["outputs"][0]["data"] == [1.0, -2.5, 0.15625]


def test_bool_json_rejects_numbers(identity_client: testing.TestClient) -> None:
    body = {
        "inputs": [
            {**_json_input(n, _values(n)), **({"data": [1, 0, 1, 1]} if n == "BOOL" else {})} for n in ONNX_TYPES
        ]
    }
    resp = identity_client.simulate_post("/v2/models/ident/infer", json=body)
    assert resp.status_code == 422 and "BOOL data must be true/false" in resp.json["error"]
