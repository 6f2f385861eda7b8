"""Chat templates from GGUF metadata, rendered with a sandboxed Jinja2 environment.

GGUF files carry the Hugging Face chat template (``tokenizer.chat_template``), which is Jinja2; we
render it the way transformers does (``messages``, ``add_generation_prompt``, ``bos_token``,
``eos_token``, ``raise_exception``). Models without a template get a plain "role: content" layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from edge_runner.errors import InvalidInput

FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def _raise(message: str) -> None:
    raise InvalidInput(f"chat template: {message}")


@lru_cache(maxsize=16)
def _compiled(template: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def _content(message: dict[str, Any]) -> str:
    """OpenAI content may be a string or a list of parts; only text parts are supported."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise InvalidInput("only text content parts are supported by this model")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise InvalidInput("message content must be a string or a list of text parts")


def normalize_messages(messages: Sequence[Any]) -> list[dict[str, str]]:
    """Validate OpenAI chat messages and flatten their content to strings."""
    if not messages:
        raise InvalidInput("'messages' must be a non-empty list")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidInput(f"messages[{i}] must be an object with a string 'role'")
        out.append({"role": message["role"], "content": _content(message)})
    return out


def render_chat(
    template: str | None, messages: Sequence[dict[str, Any]], bos_token: str = "", eos_token: str = ""
) -> str:
    """The prompt text for ``messages``, ending with the assistant's turn header."""
    compiled = _compiled(template or FALLBACK_TEMPLATE)
    try:
        return str(
            compiled.render(
                messages=list(messages), add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token
            )
        )
    except InvalidInput:
        raise
    except Exception as exc:  # a broken template in a model file is the model's fault, not a crash
        raise InvalidInput(f"the model's chat template failed to render: {exc}") from exc
