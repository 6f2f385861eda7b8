"""``edge-runner run LLM [PROMPT]``: one-shot or interactive chat in the terminal, no server.

Tokens are printed as they are generated. Without a prompt, a read-eval loop keeps the conversation
(the engine's prompt-prefix reuse makes each turn decode only the new messages). ``/bye``, ``/exit``
or end-of-file leave; ``/reset`` forgets the conversation.
"""

from __future__ import annotations

import sys
from typing import TextIO

from edge_runner.core.errors import EdgeRunnerError
from edge_runner.core.generation import GenerationRequest, SamplingParams
from edge_runner.serving.service import ModelService

EXIT_WORDS = ("/bye", "/exit", "/quit")


class _Chat:
    """One conversation with ``name`` through the model service (same path as the HTTP routes)."""

    def __init__(self, service: ModelService, name: str, out: TextIO) -> None:
        self.service, self.name, self.out = service, name, out

    def answer(self, messages: list[dict[str, str]]) -> str:
        """Generate one assistant turn, printing it as it comes; return its text."""

        def build(context: int) -> GenerationRequest:
            params = SamplingParams(max_tokens=max(16, context // 4), temperature=0.7, top_p=0.95)
            return GenerationRequest(messages=tuple(messages), params=params)

        _, stream = self.service.generate(self.name, None, build)
        parts: list[str] = []
        try:
            for chunk in stream:
                if chunk.text:
                    parts.append(chunk.text)
                    self.out.write(chunk.text)
                    self.out.flush()
        finally:
            stream.close()
        self.out.write("\n")
        self.out.flush()
        return "".join(parts)


def run_chat(
    service: ModelService,
    name: str,
    prompt: str | None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Chat with the generating model ``name``; returns the process exit code."""
    inp, out = stdin or sys.stdin, stdout or sys.stdout
    chat = _Chat(service, name, out)
    try:
        if prompt is not None:
            chat.answer([{"role": "user", "content": prompt}])
            return 0
        return _interactive(chat, inp, out)
    except EdgeRunnerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        out.write("\n")
        return 130


def _interactive(chat: _Chat, inp: TextIO, out: TextIO) -> int:
    interactive = inp.isatty()
    if interactive:
        out.write(f"Chatting with {chat.name}. /reset forgets, /bye leaves.\n")
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
        answer = chat.answer(history)
        history.append({"role": "assistant", "content": answer})
