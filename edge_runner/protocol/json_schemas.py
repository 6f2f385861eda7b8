"""JSON Schemas (2020-12, as OpenAPI 3.1 uses them) of every request and response body we speak.

The bounds are the ones the parsers in this package enforce (``kserve_codec``, ``openai``), so a client
or a fuzzer that follows the schema reaches the model instead of a 400. ``server/openapi.py`` puts them
under ``components/schemas`` and refers to them by name.
"""

from __future__ import annotations

from typing import Any

from edge_runner.core.datatypes import DATATYPES
from edge_runner.protocol.openai import (
    MAX_EMBEDDING_CHARS,
    MAX_EMBEDDING_INPUTS,
    MAX_LEGACY_LOGPROBS,
    MAX_LOGIT_BIAS,
    MAX_STOP_STRINGS,
    MAX_TOP_K,
    MAX_TOP_LOGPROBS,
    PENALTY_BOUNDS,
)

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
NUMBER: Schema = {"type": "number"}
#: at most 2**31 elements per tensor (``kserve_codec.MAX_ELEMENTS``); 8 dims is more than any model here has
MAX_DIMS = 8


def ref(name: str) -> Schema:
    """A reference to ``components/schemas/<name>``."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    """An object schema; extra properties are allowed (clients may send vendor fields)."""
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def array(items: Schema, **bounds: int) -> Schema:
    """An array schema with optional ``minItems`` / ``maxItems``."""
    return {"type": "array", "items": items, **bounds}


def nullable(schema: Schema) -> Schema:
    """``schema`` or ``null``."""
    return {"anyOf": [schema, {"type": "null"}]}


# --- KServe v2 -------------------------------------------------------------------------------------

V2_ERROR = obj({"error": STRING}, ("error",))
TENSOR_META = obj(
    {"name": STRING, "datatype": {"enum": list(DATATYPES)}, "shape": array({"type": "integer", "minimum": -1})},
    ("name", "datatype", "shape"),
)
INFER_INPUT = obj(
    {
        "name": STRING,
        "shape": array({"type": "integer", "minimum": 0}, maxItems=MAX_DIMS),
        "datatype": {"enum": list(DATATYPES)},
        "parameters": obj({"binary_data_size": {"type": "integer", "minimum": 0}}),
        "data": {"type": "array", "description": "row-major values, flat or nested; strings for BYTES"},
    },
    ("name", "shape", "datatype"),
)
INFER_OUTPUT_REQUEST = obj({"name": STRING, "parameters": obj({"binary_data": BOOLEAN})}, ("name",))
INFER_OUTPUT = obj(
    {
        "name": STRING,
        "datatype": {"enum": list(DATATYPES)},
        "shape": array({"type": "integer", "minimum": 0}),
        "data": {"type": "array"},
        "parameters": obj({"binary_data_size": {"type": "integer", "minimum": 0}}),
    },
    ("name", "datatype", "shape"),
)
INFER_RESPONSE = obj(
    {"model_name": STRING, "model_version": STRING, "id": STRING, "outputs": array(INFER_OUTPUT)},
    ("model_name", "outputs"),
)
MODEL_METADATA = obj(
    {
        "name": STRING,
        "versions": array(STRING),
        "platform": STRING,
        "inputs": array(TENSOR_META),
        "outputs": array(TENSOR_META),
        "parameters": {"type": "object"},
    },
    ("name", "platform", "inputs", "outputs"),
)
CONFIG_TENSOR = obj({"name": STRING, "data_type": STRING, "dims": array(INTEGER)}, ("name", "data_type", "dims"))
MODEL_CONFIG = obj(
    {
        "name": STRING,
        "platform": STRING,
        "backend": STRING,
        "max_batch_size": {"type": "integer", "minimum": 0},
        "input": array(CONFIG_TENSOR),
        "output": array(CONFIG_TENSOR),
        "dynamic_batching": nullable({"type": "object"}),
    },
    ("name", "platform", "max_batch_size", "input", "output"),
)
MODEL_STATS = obj(
    {
        "model_stats": array(
            obj(
                {
                    "name": STRING,
                    "version": STRING,
                    "last_inference": INTEGER,
                    "inference_count": INTEGER,
                    "execution_count": INTEGER,
                    "inference_stats": {"type": "object"},
                    "latency": {"type": "object"},
                },
                ("name", "version", "inference_count", "inference_stats"),
            )
        )
    },
    ("model_stats",),
)
INDEX_ROW = obj(
    {"name": STRING, "version": STRING, "state": {"enum": ["READY", "LOADING", "UNAVAILABLE"]}, "reason": STRING},
    ("name", "version", "state"),
)
DURATION: Schema = {
    "description": "a duration (5m, 30s, 250ms) or seconds; -1 keeps the model forever, 0 unloads it now",
    "anyOf": [{"type": "string", "pattern": r"^-?[0-9]{1,9}(\.[0-9]{1,6})?(ms|s|m|h)?$"}, NUMBER],
}
REPOSITORY_LOAD = obj({"parameters": obj({"keep_alive": DURATION})})


def infer_request(model_inputs: list[list[Schema]], output_names: list[str]) -> Schema:
    """The v2 infer body; ``model_inputs`` are the exact input lists of the loaded models, offered first."""
    generic = array(INFER_INPUT, minItems=1, maxItems=16)
    exact = [
        {"type": "array", "prefixItems": tensors, "minItems": len(tensors), "maxItems": len(tensors)}
        for tensors in model_inputs
    ]
    output = INFER_OUTPUT_REQUEST
    if output_names:
        named = {**INFER_OUTPUT_REQUEST, "properties": {**INFER_OUTPUT_REQUEST["properties"]}}
        named["properties"]["name"] = {"enum": sorted(set(output_names))}
        output = named
    return obj(
        {
            "id": STRING,
            "parameters": obj({"binary_data_output": BOOLEAN}),
            "inputs": {"anyOf": [*exact, generic]} if exact else generic,
            "outputs": array(output, maxItems=16),
        },
        ("inputs",),
    )


def concrete_input(name: str, datatype: str, shape: tuple[int, ...], max_elements: int = 4096) -> Schema | None:
    """An exact JSON tensor for one declared model input (dynamic dims as 1), or None when too large."""
    dims = [1 if d < 0 else d for d in shape]
    count = 1
    for d in dims:
        count *= d
    if count > max_elements or datatype == "BF16":
        return None
    value: Schema
    if datatype == "BYTES":
        value = {"type": "string", "maxLength": 256}
    elif datatype == "BOOL":
        value = BOOLEAN
    elif datatype.startswith("FP"):
        value = {"type": "number", "minimum": -1e4, "maximum": 1e4}
    else:
        value = {"type": "integer", "minimum": 0, "maximum": 127}
    return obj(
        {
            "name": {"const": name},
            "datatype": {"const": datatype},
            "shape": {"const": dims},
            "data": array(value, minItems=count, maxItems=count),
        },
        ("name", "datatype", "shape", "data"),
    )


# --- OpenAI ----------------------------------------------------------------------------------------

OPENAI_ERROR = obj(
    {
        "error": obj(
            {"message": STRING, "type": STRING, "code": nullable(STRING), "param": nullable(STRING)},
            ("message", "type", "code"),
        )
    },
    ("error",),
)
TEXT_PART = obj({"type": {"const": "text"}, "text": STRING}, ("type", "text"))
TOOL_CALL = obj({"id": STRING, "type": STRING, "function": obj({"name": STRING, "arguments": STRING})})
CHAT_MESSAGE = obj(
    {
        "role": {"type": "string", "examples": ["system", "user", "assistant"]},
        "content": {"anyOf": [STRING, array(TEXT_PART), {"type": "null"}]},
        "tool_calls": array(
            obj({"id": STRING, "type": STRING, "function": obj({"name": STRING, "arguments": STRING})})
        ),
        "tool_call_id": STRING,
    },
    ("role",),
)
USAGE = obj(
    {"prompt_tokens": INTEGER, "completion_tokens": INTEGER, "total_tokens": INTEGER},
    ("prompt_tokens", "total_tokens"),
)
FINISH = nullable({"type": "string", "examples": ["stop", "length"]})


def model_field(names: list[str]) -> Schema:
    """``model``: a served name (``name:latest`` and ``name:VERSION`` work too)."""
    return {"type": "string", "enum": names} if names else {"type": "string", "minLength": 1}


def sampling(max_tokens: int) -> dict[str, Schema]:
    """Sampling fields shared by chat and text completions, with the bounds ``openai.sampling_params`` checks."""
    tokens = {"type": "integer", "minimum": 1, "maximum": max_tokens}
    return {
        "max_tokens": tokens,
        "max_completion_tokens": tokens,
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "n": {"const": 1},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "stop": {"anyOf": [STRING, array(STRING, maxItems=MAX_STOP_STRINGS)]},
        "stream": BOOLEAN,
        "stream_options": obj({"include_usage": BOOLEAN}),
        "response_format": {
            "anyOf": [
                obj({"type": {"enum": ["text", "json_object"]}}, ("type",)),
                obj(
                    {
                        "type": {"const": "json_schema"},
                        "json_schema": obj({"name": STRING, "schema": {"type": "object"}, "strict": BOOLEAN}),
                    },
                    ("type", "json_schema"),
                ),
            ]
        },
        "top_k": {"type": "integer", "minimum": 0, "maximum": MAX_TOP_K},
        **{key: {"type": "number", "minimum": low, "maximum": high} for key, low, high in PENALTY_BOUNDS},
        "logprobs": {"anyOf": [BOOLEAN, {"type": "integer", "minimum": 0, "maximum": MAX_LEGACY_LOGPROBS}]},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": MAX_TOP_LOGPROBS},
        "ignore_eos": BOOLEAN,
        "logit_bias": {
            "type": "object",
            "maxProperties": MAX_LOGIT_BIAS,
            "propertyNames": {"pattern": "^[0-9]{1,9}$"},
            "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
        },
        "keep_alive": DURATION,
    }


FUNCTION = obj(
    {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
        "description": STRING,
        "parameters": {"type": "object"},
    },
    ("name",),
)
TOOLS: dict[str, Schema] = {
    "tools": array(obj({"type": {"const": "function"}, "function": FUNCTION}, ("type", "function")), maxItems=64),
    "tool_choice": {
        "anyOf": [
            {"enum": ["none", "auto", "required"]},
            obj({"type": {"const": "function"}, "function": obj({"name": STRING}, ("name",))}, ("type", "function")),
        ]
    },
    "parallel_tool_calls": BOOLEAN,
}


def chat_request(names: list[str], max_tokens: int) -> Schema:
    """``POST /v1/chat/completions`` (with ``openai_tools``' tool calling)."""
    fields = {"model": model_field(names), "messages": array(CHAT_MESSAGE, minItems=1, maxItems=32), **TOOLS}
    return obj({**fields, **sampling(max_tokens)}, ("model", "messages"))


def completion_request(names: list[str], max_tokens: int) -> Schema:
    """``POST /v1/completions`` (one prompt; ``echo`` is not supported)."""
    fields = {
        "model": model_field(names),
        "prompt": {"anyOf": [STRING, array(STRING, minItems=1, maxItems=1)]},
        "echo": {"const": False},
    }
    return obj({**fields, **sampling(max_tokens)}, ("model", "prompt"))


def embeddings_request(names: list[str]) -> Schema:
    """``POST /v1/embeddings`` with ``openai.embedding_texts``'s limits."""
    text = {"type": "string", "minLength": 1, "maxLength": MAX_EMBEDDING_CHARS}
    fields = {
        "model": model_field(names),
        "input": {"anyOf": [text, array(text, minItems=1, maxItems=MAX_EMBEDDING_INPUTS)]},
        "encoding_format": {"enum": ["float", "base64"]},
    }
    return obj(fields, ("model", "input"))


CHAT_RESPONSE = obj(
    {
        "id": STRING,
        "object": {"const": "chat.completion"},
        "created": INTEGER,
        "model": STRING,
        "choices": array(
            obj(
                {
                    "index": INTEGER,
                    "message": obj({"role": STRING, "content": nullable(STRING), "tool_calls": array(TOOL_CALL)}),
                    "finish_reason": FINISH,
                },
                ("index", "message", "finish_reason"),
            )
        ),
        "usage": USAGE,
    },
    ("id", "object", "created", "model", "choices"),
)
COMPLETION_RESPONSE = obj(
    {
        "id": STRING,
        "object": {"const": "text_completion"},
        "created": INTEGER,
        "model": STRING,
        "choices": array(obj({"index": INTEGER, "text": STRING, "finish_reason": FINISH}, ("index", "text"))),
        "usage": USAGE,
    },
    ("id", "object", "created", "model", "choices"),
)
EMBEDDINGS_RESPONSE = obj(
    {
        "object": {"const": "list"},
        "data": array(
            obj(
                {
                    "object": {"const": "embedding"},
                    "index": INTEGER,
                    "embedding": {"anyOf": [array(NUMBER), STRING]},
                },
                ("object", "index", "embedding"),
            )
        ),
        "model": STRING,
        "usage": USAGE,
    },
    ("object", "data", "model"),
)
SERVER_SENT_EVENT = obj(
    {
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "a chunk object (chat.completion.chunk or text_completion), an error object, or [DONE]",
        },
        "event": STRING,
    },
    ("data",),
)
MODEL_CARD = obj(
    {
        "id": STRING,
        "object": {"const": "model"},
        "created": INTEGER,
        "owned_by": STRING,
        "version": INTEGER,
        "capabilities": obj({"generate": BOOLEAN, "embed": BOOLEAN}),
        "loaded": BOOLEAN,
        "context_length": INTEGER,
        "size_bytes": INTEGER,
        "format": STRING,
        "quantization": STRING,
        "task": STRING,
    },
    ("id", "object", "created", "owned_by"),
)
MODEL_LIST = obj({"object": {"const": "list"}, "data": array(ref("ModelCard"))}, ("object", "data"))

# --- operations and health -------------------------------------------------------------------------

PS = obj(
    {
        "models": array({"type": "object"}),
        "process_rss_bytes": INTEGER,
        "memory_budget_bytes": INTEGER,
        "summary": STRING,
    },
    ("models",),
)
SERVER_METADATA = obj({"name": STRING, "version": STRING, "extensions": array(STRING)}, ("name", "version"))
LIVE = obj({"live": BOOLEAN}, ("live",))
READY = obj({"ready": BOOLEAN}, ("ready",))
MODEL_READY = obj({"name": STRING, "version": STRING, "ready": BOOLEAN}, ("name", "ready"))

#: every fixed schema, by its ``components/schemas`` name
COMPONENTS: dict[str, Schema] = {
    "V2Error": V2_ERROR,
    "OpenAIError": OPENAI_ERROR,
    "InferResponse": INFER_RESPONSE,
    "ModelMetadata": MODEL_METADATA,
    "ModelConfig": MODEL_CONFIG,
    "ModelStats": MODEL_STATS,
    "ModelReady": MODEL_READY,
    "RepositoryIndex": array(INDEX_ROW),
    "RepositoryIndexRequest": obj({"ready": BOOLEAN}),
    "RepositoryLoadRequest": REPOSITORY_LOAD,
    "Empty": {"type": "object"},
    "ChatCompletion": CHAT_RESPONSE,
    "Completion": COMPLETION_RESPONSE,
    "Embeddings": EMBEDDINGS_RESPONSE,
    "ServerSentEvent": SERVER_SENT_EVENT,
    "ModelCard": MODEL_CARD,
    "ModelList": MODEL_LIST,
    "Ps": PS,
    "ServerMetadata": SERVER_METADATA,
    "Live": LIVE,
    "Ready": READY,
}
