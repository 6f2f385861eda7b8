"""A web page cannot drive a loopback server: Host (DNS rebinding), Origin (CSRF) and content-type checks."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from falcon import testing

from edge_runner.server.app import create_app
from edge_runner.server.security import is_loopback
from edge_runner.serving.model_manager import ModelManager

BODY = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]}
INFER = "/v2/models/digits/infer"
RAW = json.dumps(BODY)


def _client(manager: ModelManager, **settings: object) -> testing.TestClient:
    return testing.TestClient(create_app(manager, replace(manager.settings, **settings)))


def test_rebound_host_names_are_refused_on_loopback(manager: ModelManager) -> None:
    client = _client(manager)
    assert client.simulate_post(INFER, json=BODY, headers={"Host": "localhost:8000"}).status_code == 200
    assert client.simulate_post(INFER, json=BODY, headers={"Host": "127.0.0.1:8000"}).status_code == 200
    rebound = client.simulate_post(INFER, json=BODY, headers={"Host": "attacker.example:8000"})
    assert rebound.status_code == 403 and "DNS-rebinding" in rebound.json["error"]
    read = client.simulate_get("/v2/models/digits", headers={"Host": "attacker.example"})
    assert read.status_code == 403  # a rebound page cannot read answers either
    # liveness always answers (probes come with whatever Host they have)
    assert client.simulate_get("/v2/health/live", headers={"Host": "10.1.2.3:8000"}).status_code == 200
    # bound to every address, host names are not checked
    public = _client(manager, host="0.0.0.0")
    assert public.simulate_post(INFER, json=BODY, headers={"Host": "edge-box.lan:8000"}).status_code == 200


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://evil.example", 403),
        ("http://localhost:3000", 200),
        ("http://127.0.0.1:5173", 200),
        ("http://ui.example", 200),  # configured below
        ("null", 403),
    ],
)
def test_foreign_origins_are_refused(manager: ModelManager, origin: str, status: int) -> None:
    client = _client(manager, allowed_origins=("http://ui.example",))
    resp = client.simulate_post(INFER, json=BODY, headers={"Host": "localhost", "Origin": origin})
    assert resp.status_code == status, resp.text
    if status == 200:
        assert resp.headers["Access-Control-Allow-Origin"] == origin
    else:
        assert "allowed_origins" in resp.json["error"]


def test_simple_cross_site_bodies_are_refused(manager: ModelManager) -> None:
    """The content types a page can send without a CORS preflight never reach the model."""
    client = _client(manager)
    local = {"Host": "localhost"}
    for kind in ("text/plain", "multipart/form-data; boundary=x"):
        resp = client.simulate_post(INFER, body=RAW, headers={**local, "Content-Type": kind})
        assert resp.status_code == 415 and "application/json" in resp.json["error"], kind
    form = {**local, "Content-Type": "application/x-www-form-urlencoded"}
    assert client.simulate_post(INFER, body=RAW, headers=form).status_code == 200  # curl -d
    from_page = {**form, "Origin": "http://localhost:3000"}
    assert client.simulate_post(INFER, body=RAW, headers=from_page).status_code == 415
    assert client.simulate_post(INFER, body=RAW, headers=local).status_code == 200  # no type: JSON


def test_preflight_of_an_allowed_page(manager: ModelManager) -> None:
    client = _client(manager, allowed_origins=("http://ui.example",))
    resp = client.simulate_options(
        "/v1/chat/completions",
        headers={"Host": "localhost", "Origin": "http://ui.example", "Access-Control-Request-Headers": "content-type"},
    )
    assert resp.headers["Access-Control-Allow-Origin"] == "http://ui.example"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("127.1.2.3", True),
        ("0.0.0.0", False),
        ("10.0.0.2", False),
        ("localhost.evil.example", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
