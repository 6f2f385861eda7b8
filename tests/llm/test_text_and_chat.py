"""Unit tests of the pure-Python LLM pieces: text assembly, stop strings, chat templates, OpenAI parsing."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from edge_runner.backends.llama_cpp.chat import render_chat
from edge_runner.backends.llama_cpp.text import TextAssembler, common_prefix_len
from edge_runner.core.errors import InvalidInput, MalformedRequest
from edge_runner.core.generation import GenerationChunk, Usage
from edge_runner.protocol import openai as proto
from edge_runner.protocol.openai import normalize_messages

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_utf8_split_across_tokens_is_reassembled() -> None:
    text = "héllo ✓"
    data = text.encode()
    asm = TextAssembler()
    out = "".join(asm.feed(data[i : i + 1]) for i in range(len(data))) + asm.flush()
    assert out == text


def test_stop_string_straddling_tokens_is_cut_and_never_emitted() -> None:
    asm = TextAssembler(("STOP",))
    pieces = [asm.feed(b) for b in (b"abc S", b"TO", b"P tail")]
    assert "".join(pieces) == "abc "
    assert asm.stopped
    assert asm.feed(b"more") == ""


def test_partial_stop_prefix_is_released_when_it_diverges() -> None:
    asm = TextAssembler(("</end>",))
    assert asm.feed(b"x </e") == "x "
    assert asm.feed(b"nd") == ""
    assert asm.feed(b"ure") == "</endure"
    assert not asm.stopped


def test_common_prefix_len() -> None:
    assert common_prefix_len([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_len([], [1]) == 0


def test_render_chatml_template_with_generation_prompt() -> None:
    prompt = render_chat(CHATML, [{"role": "user", "content": "hi"}])
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_fallback_template_and_content_parts() -> None:
    messages = normalize_messages(
        [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    )
    assert render_chat(None, messages).endswith("user: ab\nassistant: ")


def test_template_raise_exception_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="no system"):
        render_chat("{{ raise_exception('no system') }}", [{"role": "system", "content": "x"}])


@pytest.mark.parametrize(
    "body",
    [
        {"messages": "hi"},
        {"messages": [{"content": "x"}]},
        {"messages": [{"role": "user", "content": "x"}], "temperature": 3},
        {"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]},
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        {"messages": [{"role": "user", "content": "x"}], "n": 2},
        {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}},
    ],
)
def test_bad_chat_bodies_are_rejected(body: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        proto.chat_request(body, 100)


def test_chat_body_maps_to_sampling_params() -> None:
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 500,
        "temperature": 0,
        "top_p": 0.5,
        "seed": 7,
        "stop": "END",
        "response_format": {"type": "json_object"},
    }
    params = proto.chat_request(body, 100).params
    assert (params.max_tokens, params.temperature, params.top_p, params.seed) == (100, 0.0, 0.5, 7)
    assert params.stop == ("END",) and params.json_mode


def test_responder_shapes() -> None:
    responder = proto.Responder("m", chat=True)
    chunks = iter([GenerationChunk("a"), GenerationChunk("b", "length", Usage(3, 2, 1))])
    body = responder.complete(chunks)
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "ab"}
    assert body["usage"]["total_tokens"] == 5 and body["usage"]["prompt_tokens_details"]["cached_tokens"] == 1
    assert responder.chunk(None, first=True)["choices"][0]["delta"]["role"] == "assistant"
    assert responder.usage_chunk(Usage(1, 1))["choices"] == []


def test_embeddings_base64_round_trip() -> None:
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    body = proto.embeddings_response("m", vectors, "base64", 4)
    decoded = np.frombuffer(base64.b64decode(body["data"][1]["embedding"]), dtype="<f4")
    assert decoded.tolist() == [3.0, 4.0, 5.0]
    with pytest.raises(MalformedRequest):
        proto.embedding_texts({"input": []})


def test_json_schema_keywords_the_grammar_cannot_enforce_are_named() -> None:
    from edge_runner.backends.llama_cpp.sampling import unenforced_keywords

    schema = {
        "type": "object",
        "title": "fine",
        "properties": {
            "a": {"type": "string", "maxLength": 10**9},
            "b": {"type": "string", "pattern": "x{5000}"},
            "c": {"type": "integer", "minimum": 1},
            "d": {"type": "string", "pattern": "^[a-z]{1,5}$", "maxLength": 8},
        },
        "anyOf": [{"not": {}}],
    }
    assert unenforced_keywords(schema) == [
        "schema.anyOf[0].not",
        "schema.properties.a.maxLength (over 1024)",
        "schema.properties.b.pattern (over 1024)",
        "schema.properties.c.minimum",
    ]


def test_sampler_extras_are_bounded() -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "top_k": 40, "min_p": 0.05, "frequency_penalty": -1}
    params = proto.chat_request(body, 10).params
    assert (params.top_k, params.min_p, params.frequency_penalty, params.repeat_penalty) == (40, 0.05, -1.0, 1.0)
    for bad in ({"top_k": -1}, {"top_k": 1.5}, {"min_p": 2}, {"presence_penalty": 3}, {"repeat_penalty": True}):
        with pytest.raises(MalformedRequest, match=next(iter(bad))):
            proto.chat_request({**body, **bad}, 10)
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object", "required": ["a"]}}}
    params = proto.chat_request({**body, "response_format": fmt}, 10).params
    assert params.json_mode and params.json_schema == '{"type":"object","required":["a"]}'
