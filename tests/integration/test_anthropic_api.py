"""The official ``anthropic`` client, unmodified, against a real ``edge-runner serve`` subprocess.

The Messages API (``POST /v1/messages``) over the embedded ``tiny-llm``: a message, a streamed message
(the documented event sequence), and errors in Anthropic's shape. Greedy answers are checked against
``/v1/chat/completions`` of the same server. The current SDK has no ``temperature`` argument any more;
the tests send it (as older SDKs and other clients do) through ``extra_body``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
pytest.importorskip("llama_cpp")

from tests.conftest import ServerProcess, free_env  # noqa: E402

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "user", "content": "What is assert?"}]
GREEDY = {"temperature": 0}
#: the server requires a key: the Anthropic client sends it as ``x-api-key``, the helpers below as Bearer
KEY = "anthropic-test-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("anthropic")
    env = {**free_env(tmp), "EDGE_RUNNER_API_KEY": KEY}
    proc = ServerProcess(["--models", "tiny-llm,digits", "--threads", "2"], env, tmp)
    try:
        proc.wait_ready(180)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Any:
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0, timeout=120)


def _post(server: ServerProcess, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    request = urllib.request.Request(server.url + path, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _openai_chat(server: ServerProcess, messages: list[dict[str, str]], max_tokens: int) -> str:
    body = {"model": "tiny-llm", "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    status, data = _post(server, "/v1/chat/completions", body)
    assert status == 200
    return str(json.loads(data)["choices"][0]["message"]["content"])


def test_message_greedy_equals_openai(server: ServerProcess, client: Any) -> None:
    message = client.messages.create(
        model="tiny-llm", max_tokens=24, system="Answer briefly.", messages=MESSAGES, extra_body=GREEDY
    )
    assert message.type == "message" and message.role == "assistant" and message.model == "tiny-llm"
    assert message.id.startswith("msg_")
    assert len(message.content) == 1 and message.content[0].type == "text"
    assert message.stop_reason in ("end_turn", "max_tokens")
    usage = message.usage
    assert usage.input_tokens + (usage.cache_read_input_tokens or 0) > 0 and 0 < usage.output_tokens <= 24
    expected = _openai_chat(server, [{"role": "system", "content": "Answer briefly."}, *MESSAGES], 24)
    assert message.content[0].text == expected
    blocks = [{"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "assert?"}]}]
    same = client.messages.create(model="tiny-llm:latest", max_tokens=24, messages=blocks, extra_body=GREEDY)
    assert same.content[0].text == _openai_chat(server, MESSAGES, 24)


def test_streamed_message_equals_the_whole_one(client: Any) -> None:
    whole = client.messages.create(model="tiny-llm", max_tokens=16, messages=MESSAGES, extra_body=GREEDY)
    with client.messages.stream(model="tiny-llm", max_tokens=16, messages=MESSAGES, extra_body=GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and text == whole.content[0].text
    assert final.stop_reason == whole.stop_reason and final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens == whole.usage.output_tokens > 0
    assert final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) > 0


def test_stream_event_sequence(server: ServerProcess) -> None:
    body = {"model": "tiny-llm", "max_tokens": 8, "messages": MESSAGES, "stream": True, "temperature": 0}
    status, data = _post(server, "/v1/messages", body)
    assert status == 200
    events = [block.split("\n", 1)[0].removeprefix("event: ") for block in data.decode().strip().split("\n\n")]
    assert events[:3] == ["message_start", "content_block_start", "ping"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(events[3:-3]) == {"content_block_delta"}
    last = json.loads(data.decode().strip().split("\n\n")[-2].split("data: ", 1)[1])
    assert last["delta"]["stop_reason"] == "max_tokens" and last["usage"]["output_tokens"] == 8


def test_stop_sequences_and_prewarm(client: Any) -> None:
    full = client.messages.create(model="tiny-llm", max_tokens=24, messages=MESSAGES, extra_body=GREEDY)
    word = full.content[0].text.split()[1]
    stopped = client.messages.create(
        model="tiny-llm", max_tokens=24, messages=MESSAGES, stop_sequences=[word], extra_body=GREEDY
    )
    assert stopped.content[0].text == full.content[0].text[: full.content[0].text.index(word)]
    assert stopped.stop_reason == "end_turn"  # the engine does not say which stop string matched
    warm = client.messages.create(model="tiny-llm", max_tokens=0, messages=MESSAGES)
    assert warm.content == [] and warm.usage.output_tokens == 0 and warm.stop_reason == "max_tokens"


def test_errors_are_anthropic_shaped(server: ServerProcess, client: Any) -> None:
    stranger = anthropic.Anthropic(base_url=server.url, api_key="wrong-key", max_retries=0, timeout=30)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        stranger.messages.create(model="tiny-llm", max_tokens=8, messages=MESSAGES)
    assert refused.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no-such-model", max_tokens=8, messages=MESSAGES)
    assert missing.value.body["type"] == "error"
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as image:
        client.messages.create(
            model="tiny-llm",
            max_tokens=8,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "aGk="}}
                    ],
                }
            ],
        )
    assert image.value.body["error"]["type"] == "invalid_request_error"
    assert "only text content blocks" in image.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="digits", max_tokens=8, messages=MESSAGES)  # not a generating model
    with pytest.raises(anthropic.BadRequestError) as prefill:
        client.messages.create(
            model="tiny-llm", max_tokens=8, messages=[*MESSAGES, {"role": "assistant", "content": "It is"}]
        )
    assert "prefill" in prefill.value.body["error"]["message"]
    status, data = _post(server, "/v1/messages", {"model": "tiny-llm", "messages": MESSAGES})
    assert status == 400
    assert json.loads(data) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "'max_tokens' is required: a non-negative integer"},
    }
    status, data = _post(
        server, "/v1/messages", {"model": "tiny-llm", "max_tokens": 8, "messages": MESSAGES, "temperature": 3}
    )
    assert status == 400 and json.loads(data)["error"]["type"] == "invalid_request_error"


WEATHER = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}
#: what a grammar enforces of WEATHER's schema (``minimum``/``maximum`` are left to the client, as OpenAI's strict mode)
ENFORCED = {
    **WEATHER["input_schema"],  # type: ignore[dict-item]
    "properties": {**WEATHER["input_schema"]["properties"], "days": {"type": "integer"}},  # type: ignore[index]
}


def _check_tool_use(block: Any) -> None:
    import jsonschema

    assert block.type == "tool_use" and block.name == "get_weather" and block.id.startswith("toolu_")
    assert isinstance(block.input, dict)
    jsonschema.validate(block.input, ENFORCED)


def test_tool_use_plain_streamed_and_a_tool_result_round_trip(server: ServerProcess, client: Any) -> None:
    """``tool_choice: any``: a ``tool_use`` block whose input follows the declared ``input_schema`` (checked
    with jsonschema) and ``stop_reason: tool_use``; streamed, the SDK assembles the same block from
    ``input_json_delta``; the ``tool_result`` goes back in a user turn and the model answers in text."""
    asked = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = {"model": "tiny-llm", "max_tokens": 160, "tools": [WEATHER], "tool_choice": {"type": "any"}}
    message = client.messages.create(messages=asked, extra_body=GREEDY, **kwargs)
    assert message.stop_reason == "tool_use" and len(message.content) == 1
    (use,) = message.content
    _check_tool_use(use)

    with client.messages.stream(messages=asked, extra_body=GREEDY, **kwargs) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and len(final.content) == 1
    _check_tool_use(final.content[0])
    status, data = _post(server, "/v1/messages", {**kwargs, "messages": asked, "stream": True, **GREEDY})
    assert status == 200
    frames = [block.split("\n", 1) for block in data.decode().strip().split("\n\n")]
    names = [head.removeprefix("event: ") for head, _ in frames]
    block = ["content_block_start", "content_block_delta", "content_block_stop"]  # one tool_use block
    assert names == ["message_start", "ping", *block, "message_delta", "message_stop"]
    payloads = [json.loads(body.removeprefix("data: ")) for _, body in frames]
    started, delta = payloads[2]["content_block"], payloads[3]["delta"]
    assert started["type"] == "tool_use" and started["input"] == {} and started["name"] == "get_weather"
    assert delta["type"] == "input_json_delta" and isinstance(json.loads(delta["partial_json"]), dict)
    assert payloads[5]["delta"]["stop_reason"] == "tool_use"

    history = [
        *asked,
        {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}]},
    ]
    answer = client.messages.create(
        model="tiny-llm", max_tokens=12, tools=[WEATHER], tool_choice={"type": "none"}, messages=history
    )
    assert answer.stop_reason in ("end_turn", "max_tokens") and answer.content[0].type == "text"
    assert answer.content[0].text
    unanswered = client.messages.create(model="tiny-llm", max_tokens=1, messages=asked)
    assert answer.usage.input_tokens + (answer.usage.cache_read_input_tokens or 0) > (
        unanswered.usage.input_tokens + (unanswered.usage.cache_read_input_tokens or 0) + 10
    )  # the call and its result reached the model
    named = client.messages.create(
        messages=asked, extra_body=GREEDY, **{**kwargs, "tool_choice": {"type": "tool", "name": "get_weather"}}
    )
    assert named.stop_reason == "tool_use"
    _check_tool_use(named.content[0])
    with pytest.raises(anthropic.BadRequestError) as unknown:
        client.messages.create(messages=asked, **{**kwargs, "tool_choice": {"type": "tool", "name": "nope"}})
    assert "not in 'tools'" in unknown.value.body["error"]["message"]
