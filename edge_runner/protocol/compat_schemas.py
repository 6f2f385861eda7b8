"""JSON Schemas of the Ollama (``/api/*``) and Anthropic (``/v1/messages``) bodies, with the bounds their
parsers (``protocol/ollama.py``, ``protocol/anthropic.py``) enforce; ``server/openapi.py`` merges
``COMPONENTS`` into the document next to ``json_schemas.COMPONENTS``.
"""

from __future__ import annotations

from edge_runner.protocol.anthropic import MAX_STOP_SEQUENCES as ANTHROPIC_STOP_SEQUENCES
from edge_runner.protocol.json_schemas import (
    BOOLEAN,
    DURATION,
    FUNCTION,
    INTEGER,
    NUMBER,
    STRING,
    TEXT_PART,
    Schema,
    array,
    model_field,
    nullable,
    obj,
)
from edge_runner.protocol.ollama import MAX_STOP_STRINGS as OLLAMA_STOP_STRINGS
from edge_runner.protocol.openai import MAX_EMBEDDING_CHARS, MAX_EMBEDDING_INPUTS, MAX_TOP_K, PENALTY_BOUNDS
from edge_runner.protocol.openai_tools import MAX_TOOLS

# --- Ollama ----------------------------------------------------------------------------------------

OLLAMA_ERROR = obj({"error": STRING}, ("error",))
OLLAMA_FORMAT: Schema = {"anyOf": [{"const": "json"}, {"type": "object"}, {"const": ""}]}


def ollama_options(max_tokens: int) -> Schema:
    """``options`` with the bounds ``ollama.sampling_params`` checks; other Modelfile options are ignored."""
    predict = {"anyOf": [{"enum": [-1, -2]}, {"type": "integer", "minimum": 1, "maximum": max_tokens}]}
    return obj(
        {
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
            "num_predict": predict,
            "stop": {"anyOf": [STRING, array(STRING, maxItems=OLLAMA_STOP_STRINGS)]},
            "top_k": {"type": "integer", "minimum": 0, "maximum": MAX_TOP_K},
            **{key: {"type": "number", "minimum": low, "maximum": high} for key, low, high in PENALTY_BOUNDS},
        }
    )


def ollama_generation(names: list[str], max_tokens: int) -> dict[str, Schema]:
    """Fields shared by ``/api/chat`` and ``/api/generate``."""
    return {
        "model": model_field(names),
        "stream": BOOLEAN,
        "format": OLLAMA_FORMAT,
        "options": ollama_options(max_tokens),
        "keep_alive": DURATION,
    }


#: an assistant's earlier call, as Ollama sends it back: arguments are an object
OLLAMA_TOOL_CALL = obj(
    {"function": obj({"index": INTEGER, "name": STRING, "arguments": {"type": "object"}}, ("name", "arguments"))},
    ("function",),
)


def ollama_chat_request(names: list[str], max_tokens: int) -> Schema:
    """``POST /api/chat``; an empty ``messages`` only loads (or with keep_alive 0 unloads) the model.
    ``tools`` as OpenAI's functions (``openai_tools``); results come back as ``tool`` messages."""
    message = obj(
        {
            "role": {"enum": ["system", "user", "assistant", "tool"]},
            "content": STRING,
            "tool_calls": array(OLLAMA_TOOL_CALL),
            "tool_name": STRING,
        },
        ("role",),
    )
    tool = obj({"type": {"const": "function"}, "function": FUNCTION}, ("type", "function"))
    fields = {
        **ollama_generation(names, max_tokens),
        "messages": array(message, maxItems=32),
        "tools": array(tool, maxItems=MAX_TOOLS),
    }
    return obj(fields, ("model",))


def ollama_generate_request(names: list[str], max_tokens: int) -> Schema:
    """``POST /api/generate``; an empty ``prompt`` only loads (or unloads) the model."""
    fields = {**ollama_generation(names, max_tokens), "prompt": STRING, "system": STRING, "raw": BOOLEAN}
    return obj(fields, ("model",))


def ollama_embed_request(names: list[str]) -> Schema:
    """``POST /api/embed``: the OpenAI embedding limits, plus ``dimensions`` and ``keep_alive``."""
    text = {"type": "string", "minLength": 1, "maxLength": MAX_EMBEDDING_CHARS}
    fields = {
        "model": model_field(names),
        "input": {"anyOf": [text, array(text, minItems=1, maxItems=MAX_EMBEDDING_INPUTS)]},
        "dimensions": {"type": "integer", "minimum": 1},
        "keep_alive": DURATION,
    }
    return obj(fields, ("model", "input"))


def ollama_embeddings_request(names: list[str]) -> Schema:
    """``POST /api/embeddings`` (the older API): one ``prompt``."""
    prompt = {"type": "string", "minLength": 1, "maxLength": MAX_EMBEDDING_CHARS}
    return obj({"model": model_field(names), "prompt": prompt, "keep_alive": DURATION}, ("model", "prompt"))


def ollama_model_request(names: list[str]) -> Schema:
    """``POST /api/show`` and ``/api/pull``: a model name."""
    return obj({"model": model_field(names), "stream": BOOLEAN}, ("model",))


OLLAMA_DETAILS = obj({"format": STRING, "family": STRING, "families": array(STRING), "quantization_level": STRING})
OLLAMA_GENERATION = obj(
    {
        "model": STRING,
        "created_at": STRING,
        "message": obj({"role": STRING, "content": STRING, "tool_calls": array(OLLAMA_TOOL_CALL)}, ("role", "content")),
        "response": STRING,
        "done": BOOLEAN,
        "done_reason": STRING,
        "total_duration": INTEGER,
        "load_duration": INTEGER,
        "prompt_eval_count": INTEGER,
        "prompt_eval_duration": INTEGER,
        "eval_count": INTEGER,
        "eval_duration": INTEGER,
    },
    ("model", "created_at", "done"),
)
OLLAMA_NDJSON = {
    "type": "string",
    "description": "one JSON object per line: OllamaGeneration objects with done false, the last with done true",
}
OLLAMA_EMBED = obj(
    {"model": STRING, "embeddings": array(array(NUMBER)), "total_duration": INTEGER, "prompt_eval_count": INTEGER},
    ("model", "embeddings"),
)
OLLAMA_TAG = obj(
    {
        "name": STRING,
        "model": STRING,
        "modified_at": STRING,
        "size": INTEGER,
        "digest": STRING,
        "details": OLLAMA_DETAILS,
    },
    ("name", "model"),
)
OLLAMA_SHOW = obj(
    {
        "modelfile": STRING,
        "details": OLLAMA_DETAILS,
        "model_info": {"type": "object"},
        "capabilities": array(STRING),
        "modified_at": STRING,
    },
    ("details", "model_info", "capabilities"),
)

# --- Anthropic -------------------------------------------------------------------------------------

ANTHROPIC_ERROR = obj(
    {"type": {"const": "error"}, "error": obj({"type": STRING, "message": STRING}, ("type", "message"))},
    ("type", "error"),
)


ANTHROPIC_TOOL_USE = obj(
    {"type": {"const": "tool_use"}, "id": STRING, "name": STRING, "input": {"type": "object"}},
    ("type", "id", "name", "input"),
)
ANTHROPIC_TOOL_RESULT = obj(
    {
        "type": {"const": "tool_result"},
        "tool_use_id": STRING,
        "content": {"anyOf": [STRING, array(TEXT_PART)]},
        "is_error": BOOLEAN,
    },
    ("type", "tool_use_id"),
)
ANTHROPIC_TOOLS: dict[str, Schema] = {
    "tools": array(
        obj(
            {
                "name": FUNCTION["properties"]["name"],
                "description": STRING,
                "input_schema": {"type": "object"},
                "type": {"const": "custom"},
            },
            ("name", "input_schema"),
        ),
        maxItems=MAX_TOOLS,
    ),
    "tool_choice": {
        "anyOf": [
            obj({"type": {"enum": ["auto", "any", "none"]}, "disable_parallel_tool_use": BOOLEAN}, ("type",)),
            obj(
                {"type": {"const": "tool"}, "name": STRING, "disable_parallel_tool_use": BOOLEAN},
                ("type", "name"),
            ),
        ]
    },
}


def anthropic_messages_request(names: list[str], max_tokens: int) -> Schema:
    """``POST /v1/messages`` with the bounds ``anthropic.messages_request`` checks (text blocks, and the
    tool_use / tool_result blocks of a tool round trip)."""
    content = {"anyOf": [STRING, array(TEXT_PART, maxItems=16)]}
    blocks = {"anyOf": [TEXT_PART, ANTHROPIC_TOOL_USE, ANTHROPIC_TOOL_RESULT]}
    turn = {"anyOf": [STRING, array(blocks, maxItems=16)]}
    message = obj({"role": {"enum": ["user", "assistant"]}, "content": turn}, ("role", "content"))
    unit = {"type": "number", "minimum": 0, "maximum": 1}
    fields = {
        "model": model_field(names),
        "messages": array(message, minItems=1, maxItems=32),
        "system": content,
        "max_tokens": {"type": "integer", "minimum": 0, "maximum": max_tokens},
        "temperature": unit,
        "top_p": unit,
        "top_k": {"type": "integer", "minimum": 0, "maximum": MAX_TOP_K},
        "output_config": obj(
            {"format": obj({"type": {"const": "json_schema"}, "schema": {"type": "object"}}, ("type", "schema"))}
        ),
        "stop_sequences": array(STRING, maxItems=ANTHROPIC_STOP_SEQUENCES),
        "stream": BOOLEAN,
        **ANTHROPIC_TOOLS,
    }
    return obj(fields, ("model", "messages", "max_tokens"))


ANTHROPIC_MESSAGE = obj(
    {
        "id": STRING,
        "type": {"const": "message"},
        "role": {"const": "assistant"},
        "model": STRING,
        "content": array({"anyOf": [TEXT_PART, ANTHROPIC_TOOL_USE]}),
        "stop_reason": nullable(STRING),
        "stop_sequence": nullable(STRING),
        "usage": obj({"input_tokens": INTEGER, "output_tokens": INTEGER}, ("input_tokens", "output_tokens")),
    },
    ("id", "type", "role", "model", "content", "stop_reason", "usage"),
)


#: every fixed schema of this module, by its ``components/schemas`` name
COMPONENTS: dict[str, Schema] = {
    "OllamaError": OLLAMA_ERROR,
    "OllamaGeneration": OLLAMA_GENERATION,
    "OllamaNdjson": OLLAMA_NDJSON,
    "OllamaEmbed": OLLAMA_EMBED,
    "OllamaEmbedding": obj({"embedding": array(NUMBER)}, ("embedding",)),
    "OllamaTags": obj({"models": array(OLLAMA_TAG)}, ("models",)),
    "OllamaShow": OLLAMA_SHOW,
    "OllamaVersion": obj({"version": STRING}, ("version",)),
    "OllamaStatus": obj({"status": STRING}, ("status",)),
    "AnthropicError": ANTHROPIC_ERROR,
    "AnthropicMessage": ANTHROPIC_MESSAGE,
}
