"""OpenAI routes in-process (Falcon TestClient over the real manager): 429 + Retry-After, errors, SSE, chat CLI."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import falcon
import falcon.testing
import pytest

pytest.importorskip("llama_cpp")

from edge_runner.cli.run_llm import run_chat
from edge_runner.config.settings import Settings
from edge_runner.server.app import create_app
from edge_runner.serving.model_manager import ModelManager
from tests.conftest import LOCAL, write_fake_model


@pytest.fixture
def client(settings: Settings, make_manager: Callable[..., ModelManager]) -> falcon.testing.TestClient:
    """The real app over the real manager: tiny-llm (embedded) and a fake model whose slots are always full."""
    write_fake_model(Path(settings.model_repository), "busy", generate="never", overloaded_retry_after_s=3)
    manager = make_manager(max_body_bytes=1 << 20)
    manager.load("tiny-llm")
    return falcon.testing.TestClient(create_app(manager, manager.settings), headers=LOCAL)


def chat_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "What is pass?"}], "max_tokens": 8, **extra}


def test_overloaded_is_429_with_retry_after(client: falcon.testing.TestClient) -> None:
    result = client.simulate_post("/v1/chat/completions", json=chat_body("busy"))
    assert result.status_code == 429
    assert result.headers["Retry-After"] == "3"
    assert result.json["error"]["code"] == "overloaded"


def test_unknown_model_and_bad_json(client: falcon.testing.TestClient) -> None:
    missing = client.simulate_post("/v1/chat/completions", json=chat_body("nope"))
    assert missing.status_code == 404 and set(missing.json["error"]) >= {"message", "type", "code"}
    broken = client.simulate_post("/v1/completions", body="{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400


def test_sse_framing_ends_with_done(client: falcon.testing.TestClient) -> None:
    body = chat_body("tiny-llm", stream=True, stream_options={"include_usage": True}, temperature=0)
    result = client.simulate_post("/v1/chat/completions", json=body)
    assert result.headers["Content-Type"].startswith("text/event-stream")
    events = [e for e in result.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    usage = json.loads(events[-2][6:])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] >= 1
    first = json.loads(events[0][6:])
    assert first["choices"][0]["delta"]["role"] == "assistant"


def test_models_card_shows_engine_slots(client: falcon.testing.TestClient) -> None:
    card = client.simulate_get("/v1/models/tiny-llm").json
    assert card["engine"]["slots"] == 4 and card["engine"]["active"] == 0


def test_run_chat_one_shot_and_interactive(make_manager: Callable[..., ModelManager]) -> None:
    manager = make_manager()
    out = io.StringIO()
    assert run_chat(manager, "tiny-llm", "What is if?", stdout=out) == 0
    assert out.getvalue().endswith("\n") and len(out.getvalue()) > 1
    out = io.StringIO()
    assert run_chat(manager, "tiny-llm", None, stdin=io.StringIO("hello\n/reset\nagain\n/bye\n"), stdout=out) == 0
    assert out.getvalue().count("\n") >= 2
    # the chat went through the service: both runs are counted in the model's stats
    assert manager.get("tiny-llm").stats.to_json()["inference_stats"]["success"]["count"] >= 3


def test_logit_bias_bans_and_forces_tokens(client: falcon.testing.TestClient) -> None:
    """OpenAI ``logit_bias``: -100 on end-of-sequence keeps a greedy completion going that otherwise stops at
    once; +100 on one token makes every generated token that one; an id past the vocabulary is a 400."""
    prompt = {"model": "tiny-llm", "prompt": "Tell me about the import statement.", "max_tokens": 6, "temperature": 0}
    plain = client.simulate_post("/v1/completions", json=prompt).json
    assert plain["usage"]["completion_tokens"] == 0 and plain["choices"][0]["finish_reason"] == "stop"
    banned = client.simulate_post("/v1/completions", json={**prompt, "logit_bias": {"2": -100}}).json
    assert banned["usage"]["completion_tokens"] == 6 and banned["choices"][0]["finish_reason"] == "length"
    forced = client.simulate_post("/v1/completions", json={**prompt, "logit_bias": {"436": 100}, "logprobs": 1}).json[
        "choices"
    ][0]
    assert forced["logprobs"]["tokens"] == [forced["logprobs"]["tokens"][0]] * 6
    assert forced["text"] == forced["logprobs"]["tokens"][0] * 6
    too_far = client.simulate_post("/v1/completions", json={**prompt, "logit_bias": {"99999999": 5}})
    assert too_far.status_code == 400 and "vocabulary" in too_far.json["error"]["message"]
    for bad in ({"x": 1}, {"5": 101}, [1, 2], {"5": "a"}, {"5": None}, {"-5": 1}):
        result = client.simulate_post("/v1/completions", json={**prompt, "logit_bias": bad})
        assert result.status_code == 400 and "logit_bias" in result.json["error"]["message"], bad
