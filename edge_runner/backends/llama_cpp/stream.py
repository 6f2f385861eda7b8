"""The per-request state shared by the engine thread and the consumer of a generation stream."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from edge_runner.backends.llama_cpp.sampling import Sampler
from edge_runner.backends.llama_cpp.text import TextAssembler
from edge_runner.core.errors import EdgeRunnerError
from edge_runner.core.generation import GenerationChunk, SamplingParams, TokenLogprob, Usage

_Item = GenerationChunk | EdgeRunnerError


@dataclass(eq=False)
class Sequence:
    """One request inside the engine. Only ``cancelled`` and ``out`` are touched by other threads."""

    prompt: list[int]
    params: SamplingParams
    assembler: TextAssembler
    out: queue.SimpleQueue[_Item] = field(default_factory=queue.SimpleQueue)
    pending: list[int] = field(default_factory=list)
    sampler: Sampler | None = None
    last_token: int = -1
    completion_tokens: int = 0
    cached_tokens: int = 0
    cancelled: bool = False
    done: bool = False
    submitted_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    #: token log-probabilities not yet handed over (text held back by the assembler keeps them here)
    logprobs: list[TokenLogprob] = field(default_factory=list)

    def _taken_logprobs(self) -> tuple[TokenLogprob, ...]:
        taken = tuple(self.logprobs)
        self.logprobs.clear()
        return taken

    def emit(self, text: str) -> None:
        """Hand a piece of text (and the log-probabilities of the tokens behind it) to the consumer."""
        if text:
            self.out.put(GenerationChunk(text, logprobs=self._taken_logprobs()))

    def finish(self, reason: str, text: str = "") -> None:
        """Send the last chunk (with usage) and release the sampler."""
        usage = Usage(len(self.prompt), self.completion_tokens, self.cached_tokens)
        self.out.put(GenerationChunk(text, finish_reason=reason, usage=usage, logprobs=self._taken_logprobs()))
        self.release()

    def fail(self, error: EdgeRunnerError) -> None:
        """End the stream with an error the consumer re-raises."""
        self.out.put(error)
        self.release()

    def release(self) -> None:
        """Free native resources; the engine calls this exactly once per sequence."""
        self.done = True
        if self.sampler is not None:
            self.sampler.free()
            self.sampler = None


class Stream(Iterator[GenerationChunk]):
    """Iterator over the chunks of one request; ``close()`` cancels it and frees its slot."""

    def __init__(self, sequence: Sequence) -> None:
        self._seq = sequence
        self._finished = False

    @property
    def prompt_tokens(self) -> int:
        """Number of prompt tokens of this request."""
        return len(self._seq.prompt)

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> GenerationChunk:
        if self._finished:
            raise StopIteration
        item = self._seq.out.get()
        if isinstance(item, EdgeRunnerError):
            self._finished = True
            raise item
        if item.finish_reason is not None:
            self._finished = True
        return item

    def coalesced(self, linger_s: float = 0.002) -> Iterator[GenerationChunk]:
        """Like iterating, but chunks arriving within ``linger_s`` of the first are merged into one.

        Tiny models make a token every fraction of a millisecond; one HTTP event per token then costs more
        than the token (and takes the GIL from the engine thread). Lingering a couple of milliseconds sends
        a few tokens per event instead; for models slower than that every token still goes out alone.
        """
        while not self._finished:
            first = next(self, None)
            if first is None:
                return
            parts, last, logprobs = [first.text], first, list(first.logprobs)
            deadline = time.monotonic() + linger_s
            while last.finish_reason is None:
                try:
                    item = self._seq.out.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if isinstance(item, EdgeRunnerError):
                    self._seq.out.put(item)  # re-raised on the next round, after this text
                    break
                parts.append(item.text)
                logprobs += item.logprobs
                last = item
            if last.finish_reason is not None:
                self._finished = True
            yield GenerationChunk("".join(parts), last.finish_reason, last.usage, tuple(logprobs))

    def close(self) -> None:
        """Cancel generation (client went away); the engine frees the slot on its next step."""
        if not self._finished:
            self._seq.cancelled = True
            self._finished = True

    def __del__(self) -> None:
        self.close()
