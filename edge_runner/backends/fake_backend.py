"""A runtime-free backend for testing the scheduler, batcher and server plumbing.

Its "model" is a manifest with format ``fake``: output ``y = x * scale`` after
sleeping ``delay_ms`` per call (both from ``manifest.extra``). It records the
batch size of every call so tests can see what the batcher did. With
``extra['generate']`` (a text) it is a generating model that streams that text
word by word; with ``extra['overloaded_retry_after_s']`` every generation is
refused as overloaded. It is never a substitute for the real backends' own tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from edge_runner.backends.base import Backend, Capabilities, ModelMetadata, ProbeResult, Tensors
from edge_runner.core.errors import InferenceError, ModelLoadError, Overloaded
from edge_runner.core.generation import GenerationChunk, Usage


class FakeBackend(Backend):
    """Multiplies its single input by ``extra['scale']``; optional delay and failure."""

    name = "fake"
    formats = ("fake",)
    suffixes = (".fake",)
    artifact_formats = {".fake": "fake"}

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.loaded = False
        self.batch_sizes: list[int] = []
        self.active = 0
        self.max_active = 0  # high-water mark of concurrent infer calls
        self._lock = threading.Lock()

    @classmethod
    def probe(cls) -> ProbeResult:
        return ProbeResult(True, version="1", devices=("CPU",))

    def load(self) -> None:
        if self.manifest.extra.get("fail_load"):
            raise ModelLoadError(f"fake model {self.manifest.name!r} was told to fail loading")
        if len(self.manifest.inputs) != 1 or len(self.manifest.outputs) != 1:
            raise ModelLoadError("fake models have exactly one input and one output")
        time.sleep(float(self.manifest.extra.get("load_delay_ms", 0)) / 1000.0)  # a large model's load time
        self.loaded = True

    def metadata(self) -> ModelMetadata:
        batching = self.manifest.inputs[0].shape[:1] == (-1,)
        generates = "generate" in self.manifest.extra
        caps = Capabilities(
            batching=batching and not generates,
            max_concurrency=int(self.manifest.extra.get("instances", 1)),
            generate=generates,
        )
        return ModelMetadata(inputs=self.manifest.inputs, outputs=self.manifest.outputs, capabilities=caps)

    def context_length(self) -> int:
        return 64 if "generate" in self.manifest.extra else 0

    def generate(self, request: Any) -> Iterator[GenerationChunk]:
        if "generate" not in self.manifest.extra:
            return super().generate(request)
        retry = self.manifest.extra.get("overloaded_retry_after_s")
        if retry is not None:
            raise Overloaded("every fake generation slot is busy", retry_after_s=int(retry))
        words = str(self.manifest.extra["generate"]).split()
        return self._stream(words)

    @staticmethod
    def _stream(words: list[str]) -> Iterator[GenerationChunk]:
        for word in words:
            yield GenerationChunk(word + " ")
        yield GenerationChunk("", "stop", Usage(prompt_tokens=1, completion_tokens=len(words)))

    def infer(self, inputs: Tensors, outputs: Sequence[str] | None = None) -> Tensors:
        if not self.loaded:
            raise ModelLoadError(f"fake model {self.manifest.name!r} is not loaded")
        (value,) = inputs.values()
        with self._lock:
            self.batch_sizes.append(int(value.shape[0]) if value.ndim else 1)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.manifest.extra.get("fail_infer"):
                raise InferenceError("fake backend was told to fail")
            time.sleep(float(self.manifest.extra.get("delay_ms", 0)) / 1000.0)
        finally:
            with self._lock:
                self.active -= 1
        out = self.manifest.outputs[0]
        result = (value * self.manifest.extra.get("scale", 2)).astype(value.dtype)
        return {out.name: np.asarray(result)}

    def unload(self) -> None:
        self.loaded = False
