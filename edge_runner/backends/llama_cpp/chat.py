"""Chat templates from GGUF metadata, rendered with a sandboxed Jinja2 environment.

GGUF files carry the Hugging Face chat template (``tokenizer.chat_template``), which is Jinja2; we
render it the way transformers does (``messages``, ``add_generation_prompt``, ``bos_token``,
``eos_token``, ``raise_exception``). Models without a template get a plain "role: content" layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from edge_runner.core.errors import InvalidInput

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
