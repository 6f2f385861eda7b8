"""OpenAI routes in-process (Falcon TestClient): 429 + Retry-After, error shapes, SSE framing, chat CLI."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import falcon
import falcon.testing
import pytest

pytest.importorskip("llama_cpp")

from edge_runner.backends.base import Capabilities, LoadOptions, ModelMetadata
from edge_runner.backends.llama_cpp_backend import LlamaCppBackend
from edge_runner.cli_run_llm import run_chat
from edge_runner.errors import ModelNotFound, Overloaded
from edge_runner.manifest import read_manifest
from edge_runner.server import errors as server_errors
from edge_runner.server.openai_routes import add_openai_routes


@dataclass
class Entry:
    name: str
    backend: Any
    metadata: ModelMetadata
    version: int = 1
    loaded_at: float = 0.0


@dataclass
class Manager:
    entries: dict[str, Entry] = field(default_factory=dict)

    def get(self, name: str, version: int | None = None) -> Entry:
        if name not in self.entries:
            raise ModelNotFound(f"model {name!r} not found")
        return self.entries[name]

    def loaded(self) -> list[Entry]:
        return list(self.entries.values())


class BusyBackend:
    """Always full: every generate() is refused."""

    max_seq_len = 128

    def generate(self, request: Any) -> Iterator[Any]:
        raise Overloaded("all slots busy", retry_after_s=3)


@pytest.fixture(scope="module")
def tiny(tiny_llm_dir: Path) -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(read_manifest(tiny_llm_dir), tiny_llm_dir, LoadOptions(threads=2))
    backend.load()
    yield backend
    backend.unload()


@pytest.fixture
def client(tiny: LlamaCppBackend) -> falcon.testing.TestClient:
    busy_meta = ModelMetadata((), (), Capabilities(generate=True, batching=False))
    manager = Manager(
        {"tiny-llm": Entry("tiny-llm", tiny, tiny.metadata()), "busy": Entry("busy", BusyBackend(), busy_meta)}
    )
    app = falcon.App()
    server_errors.install(app)
    add_openai_routes(app, manager)
    return falcon.testing.TestClient(app)


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


def test_run_chat_one_shot_and_interactive(tiny: LlamaCppBackend) -> None:
    entry = Entry("tiny-llm", tiny, tiny.metadata())
    out = io.StringIO()
    assert run_chat(entry, "What is if?", None, stdout=out) == 0
    assert out.getvalue().endswith("\n") and len(out.getvalue()) > 1
    out = io.StringIO()
    assert run_chat(entry, None, None, stdin=io.StringIO("hello\n/reset\nagain\n/bye\n"), stdout=out) == 0
    assert out.getvalue().count("\n") >= 2
