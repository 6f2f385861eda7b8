"""The backend contract every runtime adapter implements.

Synchronous by design: waitress is threaded and the scheduler owns the worker
threads. A backend receives inputs that shared code (``edge_runner.validation``)
has already checked against ``metadata()`` and, for batching models, already
stacked along the batch axis. It turns its runtime's exceptions into typed
errors from ``edge_runner.errors`` at its boundary.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_runner.errors import UnsupportedOperation
from edge_runner.manifest import Manifest, TensorSpec

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class Capabilities:
    """What a loaded model can do; drives routing, batching and validation."""

    batching: bool = True
    batch_axis: int = 0
    max_concurrency: int = 1
    generate: bool = False
    embed: bool = False
    dynamic_shapes: bool = True
    devices: tuple[str, ...] = ("CPU",)


@dataclass(frozen=True)
class ProbeResult:
    """Cheap answer to "can this backend run here, and on what"."""

    available: bool
    version: str = ""
    devices: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class SelectionStep:
    """One candidate device/provider considered while loading, and why it was used or skipped."""

    candidate: str
    chosen: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "chosen": self.chosen, "reason": self.reason}


@dataclass(frozen=True)
class ModelMetadata:
    """Inputs, outputs, capabilities and the device that was picked."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    capabilities: Capabilities
    device: str = "CPU"
    selection: tuple[SelectionStep, ...] = ()


@dataclass(frozen=True)
class LoadOptions:
    """How to load: threads, cache folder, device preference and backend-specific knobs.

    ``devices`` is the ordered preference from the profile (ORT execution
    providers, OpenVINO device names, ...); ``options`` is the profile's table
    for this backend. Both may be empty: backends then use CPU defaults.
    """

    threads: int = 0
    cache_dir: Path | None = None
    devices: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    use_mmap: bool = True


class Backend(ABC):
    """A loaded (or loadable) model version on one runtime."""

    name: ClassVar[str]
    #: manifest formats this backend can serve (e.g. OpenVINO serves "openvino" and "onnx")
    formats: ClassVar[tuple[str, ...]]
    #: artifact file suffixes it opens
    suffixes: ClassVar[tuple[str, ...]]

    #: called with the seconds from submission to the first generated token (LLM backends), for metrics
    on_first_token: Callable[[float], None] | None = None

    def __init__(self, manifest: Manifest, folder: Path, options: LoadOptions) -> None:
        self.manifest = manifest
        self.folder = folder
        self.options = options

    @classmethod
    @abstractmethod
    def probe(cls) -> ProbeResult:
        """Whether the runtime is importable and which devices it sees. Never raises ImportError."""

    @abstractmethod
    def load(self) -> None:
        """Open the artifact; raise ModelLoadError (or a subclass) on failure."""

    @abstractmethod
    def metadata(self) -> ModelMetadata:
        """Inputs, outputs and capabilities of the loaded model."""

    @abstractmethod
    def infer(self, inputs: Tensors, outputs: Sequence[str] | None = None) -> Tensors:
        """Run validated inputs; return the requested outputs (all when None)."""

    def generate(self, request: Any) -> Iterator[Any]:
        """Stream generated tokens; only for models whose capabilities say ``generate``."""
        raise UnsupportedOperation(f"model {self.manifest.name!r} ({self.name}) does not generate text")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts; only for models whose capabilities say ``embed``."""
        raise UnsupportedOperation(f"model {self.manifest.name!r} ({self.name}) does not produce embeddings")

    def in_flight(self) -> int:
        """Requests the backend runs itself, outside the scheduler (LLM streams active or queued)."""
        return 0

    def runtime_stats(self) -> dict[str, float]:
        """Counters the backend keeps (LLM: slots, queue, tokens); empty for tensor backends."""
        return {}

    @abstractmethod
    def unload(self) -> None:
        """Release the runtime's resources. Idempotent."""
