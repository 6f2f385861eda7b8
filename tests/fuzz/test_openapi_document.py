"""The generated /openapi.json, in process: every route, real model names, error shapes, and a schema
that schemathesis loads; the live fuzzing is in ``test_schemathesis.py``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from falcon import testing

from edge_runner.server.app import create_app
from edge_runner.serving.model_manager import ModelManager
from tests.conftest import LOCAL


@pytest.fixture
def document(make_manager: Callable[..., ModelManager]) -> dict[str, Any]:
    manager = make_manager(max_seq_len=64)
    manager.load("digits")
    client = testing.TestClient(create_app(manager, manager.settings), headers=LOCAL)
    spec: dict[str, Any] = client.simulate_get("/openapi.json").json
    return spec


def _enum(operation: dict[str, Any], name: str) -> list[str]:
    return next(p["schema"]["enum"] for p in operation["parameters"] if p["name"] == name)


def test_every_route_has_request_and_response_schemas(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert document["openapi"] == "3.1.0" and len(paths) >= 23  # /metrics only with a metrics registry
    for path, methods in paths.items():
        for method, operation in methods.items():
            assert "$ref" in str(operation["responses"]["200"]["content"]) or path == "/metrics", (path, method)
            if method == "post" and path != "/v2/repository/index" and "/repository/" not in path:
                assert operation["requestBody"]["required"], path
    if "/metrics" in paths:
        assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
    infer = paths["/v2/models/{model}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert "Inference-Header-Content-Length" in infer["responses"]["200"]["headers"]
    assert "Retry-After" in infer["responses"]["429"]["headers"]
    assert {"400", "404", "413", "415", "422", "429", "503", "504"} <= set(infer["responses"])
    assert "422" not in paths["/v1/chat/completions"]["post"]["responses"]  # OpenAI answers 400


def test_model_names_and_bounds(document: dict[str, Any]) -> None:
    paths, schemas = document["paths"], document["components"]["schemas"]
    names = _enum(paths["/v2/models/{model}"]["get"], "model")
    assert {"digits", "tiny-llm"} <= set(names)
    assert "digits" in _enum(paths["/v2/models/{model}/infer"]["post"], "model")
    assert _enum(paths["/v2/models/{model}/versions/{version}"]["get"], "version") == ["1"]
    chat = schemas["ChatRequest"]["properties"]
    assert chat["max_tokens"] == {"type": "integer", "minimum": 1, "maximum": 64}
    assert "digits" not in chat["model"]["enum"] and "tiny-llm" in chat["model"]["enum"]  # digits is loaded
    embed_input = schemas["EmbeddingsRequest"]["properties"]["input"]["anyOf"][1]
    assert embed_input["maxItems"] == 2048 and embed_input["minItems"] == 1
    digits_input = schemas["InferRequest"]["properties"]["inputs"]["anyOf"][0]["prefixItems"][0]["properties"]
    assert digits_input["shape"] == {"const": [1, 1, 8, 8]} and digits_input["data"]["minItems"] == 64
    load = schemas["RepositoryLoadRequest"]["properties"]["parameters"]["properties"]
    assert "keep_alive" in load
    assert schemas["OpenAIError"]["properties"]["error"]["required"] == ["message", "type", "code"]
    assert schemas["V2Error"]["required"] == ["error"]


def test_schemathesis_loads_every_operation(document: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(methods) for methods in document["paths"].values())
