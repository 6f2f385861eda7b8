"""Regressions: hostile input never reaches a 500, bad artifacts never leave state behind."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from falcon import testing

from edge_runner.core.errors import ManifestError, ModelLoadError
from edge_runner.core.manifest import read_manifest
from edge_runner.repository.store import ModelRepository
from edge_runner.server.app import create_app
from edge_runner.serving.model_manager import ModelManager
from tests.conftest import LOCAL, write_fake_model

GOOD = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (
            "/v2/models/digits/infer",
            {"inputs": [GOOD], "outputs": [{"name": "logits", "parameters": [1]}]},
            400,
            "'parameters' must be an object",
        ),
        (
            "/v2/models/digits/infer",
            {"inputs": [{"name": "input", "shape": [2**32, 2**32], "datatype": "FP32", "data": []}]},
            422,
            "has more than",
        ),
        ("/v2/models/digits/versions/%C2%B2/infer", {"inputs": [GOOD]}, 422, "positive integer"),
        ("/v2/models/tiny-llm/infer", {"inputs": [GOOD]}, 400, "generates text: use /v1/chat/completions"),
    ],
)
def test_hostile_requests_get_precise_4xx(
    client: testing.TestClient, manager: ModelManager, path: str, body: dict[str, Any], status: int, message: str
) -> None:
    if "tiny-llm" in path:
        pytest.importorskip("llama_cpp")
        manager.load("tiny-llm")
    resp = client.simulate_post(path, json=body)
    assert resp.status_code == status, resp.text
    assert message in resp.json["error"]


def test_load_with_bad_keep_alive_does_not_load(client: testing.TestClient, manager: ModelManager) -> None:
    manager.unload("digits")
    resp = client.simulate_post("/v2/repository/models/digits/load", json={"parameters": {"keep_alive": "soon"}})
    assert resp.status_code == 422
    assert client.simulate_get("/v2/models/digits/ready").status_code == 503


def test_failed_validation_is_counted_as_a_failure(client: testing.TestClient, manager: ModelManager) -> None:
    client.simulate_post("/v2/models/digits/infer", json={"inputs": [{**GOOD, "datatype": "INT64", "data": [0] * 64}]})
    stats = client.simulate_get("/v2/models/digits/stats").json["model_stats"][0]
    assert stats["inference_stats"]["fail"]["count"] == 1


def test_manifest_paths_cannot_leave_the_version_folder(tmp_path: Path) -> None:
    folder = write_fake_model(tmp_path / "src", "evil")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][0]["path"] = "../payload.txt"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="must be relative and stay inside"):
        ModelRepository(tmp_path / "repo").add(folder, "evil")
    with pytest.raises(ManifestError, match="must be relative"):  # what 'models import' reads first
        read_manifest(folder)
    assert not (tmp_path / "repo" / "payload.txt").exists() and not (tmp_path / "payload.txt").exists()


def test_unexpected_error_while_building_marks_unavailable_and_keeps_serving(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    repo = tmp_path / "repo"
    write_fake_model(repo, "bad", batching={"max_batch_size": "eight"})
    write_fake_model(repo, "good")
    manager = make_manager(model_repository=str(repo), load_defaults=False)
    with pytest.raises(ModelLoadError, match="ValueError"):
        manager.load("bad")
    assert {r["name"]: r["state"] for r in manager.index()} == {"bad": "UNAVAILABLE", "good": "UNAVAILABLE"}
    manager.load("good")
    assert [m.name for m in manager.loaded()] == ["good"]


def test_openai_requests_are_counted_in_stats(client: testing.TestClient, manager: ModelManager) -> None:
    pytest.importorskip("llama_cpp")
    manager.load("tiny-llm")
    body = {"model": "tiny-llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    assert client.simulate_post("/v1/chat/completions", json=body).status_code == 200
    streamed = client.simulate_post("/v1/chat/completions", json={**body, "stream": True})
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    too_long = {**body, "messages": [{"role": "user", "content": "word " * 5000}]}
    assert client.simulate_post("/v1/chat/completions", json=too_long).status_code == 400
    stats = client.simulate_get("/v2/models/tiny-llm/stats").json["model_stats"][0]["inference_stats"]
    assert (stats["success"]["count"], stats["fail"]["count"]) == (2, 1)


def _digits_data(number: bytes) -> bytes:
    """A digits request whose first pixel is ``number`` as written."""
    data = b",".join([number] + [b"0"] * 63)
    return b'{"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [' + data + b"]}]}"


@pytest.mark.parametrize(
    ("path", "raw", "status", "message"),
    [
        ("/v2/models/digits/infer", b"[" * 100_000, 400, "nests arrays or objects too deeply"),
        (
            "/v2/models/digits/infer",
            b'{"inputs": [{"name": "input", "shape": [1], "datatype": "INT64", "data": [' + b"9" * 5000 + b"]}]}",
            400,
            "not valid JSON",
        ),
        (
            "/v2/models/digits/infer",
            b'{"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [4000000000]}]}',
            422,
            "BYTES data in JSON must be strings",
        ),
        ("/v1/chat/completions", b'{"model": "tiny-llm:\xc2\xb2", "messages": []}', 404, "tags are 'latest'"),
        ("/v1/chat/completions", b'{"model": "../etc", "messages": []}', 400, "invalid model name"),
        ("/v1/embeddings", b'{"model": "digits", "input": [' + b'"a",' * 2048 + b'"a"]}', 400, "at most 2048"),
        ("/v1/chat/completions", b'{"model": "tiny-llm", "temperature": NaN, "messages": []}', 400, "not valid JSON"),
        ("/v2/models/digits/infer", _digits_data(b"1e999"), 400, "number is infinity"),
        ("/v2/models/digits/infer", _digits_data(b"1e39"), 422, "a number overflows FP32"),
        (
            "/v2/models/digits/infer",
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP16", "data": [70000]}]}',
            422,
            "a number overflows FP16",
        ),
        (
            "/v2/models/digits/infer",
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["'
            + b"a" * (16 * 2**20 + 1)
            + b'"]}]}',
            422,
            "at most 16777216 per element",
        ),
    ],
    ids=[
        *("nested-100k", "5000-digit-int", "bytes-from-int", "non-ascii-tag", "path-in-model", "2049-inputs"),
        *("nan-literal", "1e999", "fp32-overflow", "fp16-overflow", "bytes-element-cap"),
    ],
)
def test_issue_12_inputs_that_used_to_answer_500(
    make_manager: Callable[..., ModelManager], path: str, raw: bytes, status: int, message: str
) -> None:
    manager = make_manager(max_body_bytes=64 * 2**20)
    manager.load("digits")
    client = testing.TestClient(create_app(manager, manager.settings))
    resp = client.simulate_post(path, body=raw, headers={"Content-Type": "application/json", **LOCAL})
    assert resp.status_code == status, resp.text
    error = resp.json["error"]
    assert message in (error["message"] if isinstance(error, dict) else error)


def test_embedding_inputs_are_bounded_before_any_work(make_manager: Callable[..., ModelManager]) -> None:
    manager = make_manager(max_body_bytes=4 << 20)
    client = testing.TestClient(create_app(manager, manager.settings))
    long_text = {"model": "digits", "input": ["a" * 40_000]}
    resp = client.simulate_post("/v1/embeddings", json=long_text, headers=LOCAL)
    assert resp.status_code == 400 and "at most 32768" in resp.json["error"]["message"]
    many = {"model": "digits", "input": ["b" * 30_000] * 40}
    resp = client.simulate_post("/v1/embeddings", json=many, headers=LOCAL)
    assert resp.status_code == 400 and "totals more than" in resp.json["error"]["message"]


def test_subnormal_temperature_with_json_mode_does_not_abort_the_server(
    start_server: Callable[..., Any],
) -> None:
    """Found by schemathesis: temperature 1.4e-45 made the softmax NaN, the draw picked a token the JSON
    grammar forbids and llama.cpp aborted the whole process. Now such temperatures draw greedily."""
    pytest.importorskip("llama_cpp")
    import urllib.request

    server = start_server("--models", "tiny-llm", "--max-seq-len", "32")
    body = {
        "model": "tiny-llm",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 1.4e-45,
        "response_format": {"type": "json_object"},
        "max_tokens": 24,
    }
    for _ in range(3):
        request = urllib.request.Request(
            server.url + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            answer = json.loads(resp.read())
        text = answer["choices"][0]["message"]["content"]
        assert text.startswith("{"), text  # the grammar still holds: an object (cut at max_tokens)
    assert server.proc.poll() is None, server.log_path.read_text()[-3000:]
