"""The backend contract every runtime adapter implements.

Synchronous by design: waitress is threaded and the scheduler owns the worker
threads. A backend receives inputs that shared code (``edge_runner.serving.validation``)
has already checked against ``metadata()`` and, for batching models, already
stacked along the batch axis. It turns its runtime's exceptions into typed
errors from ``edge_runner.core.errors`` at its boundary.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_runner.core.errors import UnsupportedOperation
from edge_runner.core.manifest import Manifest, TensorSpec
from edge_runner.core.schema import STRINGS, Checker

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
    """A loaded (or loadable) model version on one runtime.

    The class describes itself (as Triton's backends fill in their own config): the formats and file
    suffixes it serves, the profile table it accepts, the runtime package to bundle, and how it explains a
    device choice. ``edge_runner.backends.registry`` derives every table of the runtime from these, so a
    backend installed through the ``edge_runner.backends`` entry-point group is a first-class citizen.
    """

    name: ClassVar[str]
    #: manifest formats this backend can serve (e.g. OpenVINO serves "openvino" and "onnx")
    formats: ClassVar[tuple[str, ...]]
    #: artifact file suffixes it opens
    suffixes: ClassVar[tuple[str, ...]]
    #: artifact suffix -> format, for the formats this backend is the default server of (files without manifest)
    artifact_formats: ClassVar[Mapping[str, str]] = {}
    #: the profile table ``[<name>]`` this backend reads: key -> checker (``edge_runner.core.schema``)
    option_schema: ClassVar[Mapping[str, Checker]] = {"devices": STRINGS}
    #: the Python package of the runtime (what the binary must bundle with its native libraries)
    runtime_package: ClassVar[str] = ""
    #: modules the runtime loads by name at run time (plugins, frontends) that a freezer cannot see
    hidden_imports: ClassVar[tuple[str, ...]] = ()
    #: the device that always works, tried last
    cpu_device: ClassVar[str] = "CPU"

    #: called with the seconds from submission to the first generated token (LLM backends), for metrics
    on_first_token: Callable[[float], None] | None = None
    #: called with a finished generation's mean seconds per output token after the first (LLM backends)
    on_token_time: Callable[[float], None] | None = None

    def __init__(self, manifest: Manifest, folder: Path, options: LoadOptions) -> None:
        self.manifest = manifest
        self.folder = folder
        self.options = options

    @classmethod
    @abstractmethod
    def probe(cls) -> ProbeResult:
        """Whether the runtime is importable and which devices it sees. Never raises ImportError."""

    @classmethod
    def profile_options(cls, table: Mapping[str, Any], profile_settings: Mapping[str, Any]) -> dict[str, Any]:
        """This backend's options from its profile table; may fill defaults from the profile's settings."""
        return dict(table)

    @classmethod
    def working_memory_bytes(cls, manifest: Manifest, folder: Path, options: LoadOptions) -> int:
        """Memory a load allocates beyond its weights (an LLM's KV cache), known before loading; for admission."""
        return 0

    @classmethod
    def wanted_devices(cls, options: LoadOptions) -> list[str]:
        """Devices to try in order (the profile's list); the CPU device is appended by the caller."""
        return list(options.devices)

    @classmethod
    def device_unavailable(cls, device: str, available: Sequence[str], options: LoadOptions) -> str:
        """Why ``device`` cannot be used given what ``probe()`` saw; empty when it can."""
        if device in available or device == cls.cpu_device:
            return ""
        return f"not in {cls.name} devices ({', '.join(available) or 'none'})"

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

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens ``texts`` take (the ``usage`` of embeddings); whitespace words where there is no tokenizer."""
        return sum(len(t.split()) for t in texts)

    def context_length(self) -> int:
        """Tokens one generation stream may hold (prompt + output); 0 for models that do not generate."""
        return 0

    def in_flight(self) -> int:
        """Requests the backend runs itself, outside the scheduler (LLM streams active or queued)."""
        return 0

    def runtime_stats(self) -> dict[str, float]:
        """Counters the backend keeps (LLM: slots, queue, tokens); empty for tensor backends."""
        return {}

    @abstractmethod
    def unload(self) -> None:
        """Release the runtime's resources. Idempotent."""
