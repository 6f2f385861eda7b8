"""``edge-runner run LLM [PROMPT]``: one-shot or interactive chat in the terminal, no server.

Tokens are printed as they are generated. Without a prompt, a read-eval loop keeps the conversation
(the engine's prompt-prefix reuse makes each turn decode only the new messages). ``/bye``, ``/exit``
or end-of-file leave; ``/reset`` forgets the conversation.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from edge_runner.errors import EdgeRunnerError
from edge_runner.llm.types import GenerationRequest, SamplingParams

EXIT_WORDS = ("/bye", "/exit", "/quit")


def _stream_answer(backend: Any, messages: list[dict[str, str]], params: SamplingParams, out: TextIO) -> str:
    """Generate one assistant turn, printing it as it comes; return its text."""
    stream = backend.generate(GenerationRequest(messages=tuple(messages), params=params))
    parts: list[str] = []
    try:
        for chunk in stream:
            if chunk.text:
                parts.append(chunk.text)
                out.write(chunk.text)
                out.flush()
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    out.write("\n")
    out.flush()
    return "".join(parts)


def _params(settings: Any) -> SamplingParams:
    max_tokens = int(getattr(settings, "max_seq_len", 2048)) // 4
    return SamplingParams(max_tokens=max(16, max_tokens), temperature=0.7, top_p=0.95)


def run_chat(
    entry: Any,
    prompt: str | None,
    settings: Any = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Chat with a loaded generating model (``entry.backend``); returns the process exit code."""
    inp, out = stdin or sys.stdin, stdout or sys.stdout
    params = _params(settings)
    backend = entry.backend
    try:
        if prompt is not None:
            _stream_answer(backend, [{"role": "user", "content": prompt}], params, out)
            return 0
        return _interactive(backend, params, inp, out, getattr(entry, "name", "model"))
    except EdgeRunnerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        out.write("\n")
        return 130


def _interactive(backend: Any, params: SamplingParams, inp: TextIO, out: TextIO, name: str) -> int:
    interactive = inp.isatty()
    if interactive:
        out.write(f"Chatting with {name}. /reset forgets, /bye leaves.\n")
    history: list[dict[str, str]] = []
    while True:
        if interactive:
            out.write(">>> ")
            out.flush()
        line = inp.readline()
        if not line:
            return 0
        text = line.strip()
        if not text:
            continue
        if text in EXIT_WORDS:
            return 0
        if text == "/reset":
            history.clear()
            continue
        history.append({"role": "user", "content": text})
        answer = _stream_answer(backend, history, params, out)
        history.append({"role": "assistant", "content": answer})
