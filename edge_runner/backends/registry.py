"""One explicit table of backends, imported lazily by name, and every table derived from the classes.

Third-party backends register through the ``edge_runner.backends`` entry-point
group (value ``module:Class``). Formats by suffix, the default backend of a
format, profile option schemas and what the binary bundles are all read off
the backend classes (``Backend`` describes itself), so nothing is declared twice.
Backend modules import their runtime lazily: importing the classes is cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from importlib.metadata import entry_points

from edge_runner.backends.base import Backend, ProbeResult
from edge_runner.core.errors import BackendUnavailable
from edge_runner.core.schema import Checker

ENTRY_POINT_GROUP = "edge_runner.backends"

BUILTIN_BACKENDS: dict[str, str] = {
    "onnxruntime": "edge_runner.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "openvino": "edge_runner.backends.openvino_backend:OpenVinoBackend",
    "tflite": "edge_runner.backends.tflite_backend:TfliteBackend",
    "llama_cpp": "edge_runner.backends.llama_cpp.llama_cpp_backend:LlamaCppBackend",
    "fake": "edge_runner.backends.fake_backend:FakeBackend",
}


def all_backend_names() -> list[str]:
    """Built-in names first, then entry-point names."""
    names = list(BUILTIN_BACKENDS)
    names += [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTIN_BACKENDS]
    return names


def _target(name: str) -> str:
    if name in BUILTIN_BACKENDS:
        return BUILTIN_BACKENDS[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return str(ep.value)
    known = ", ".join(all_backend_names())
    raise BackendUnavailable(f"unknown backend {name!r}; known backends: {known}")


@cache
def get_backend(name: str) -> type[Backend]:
    """Import and return the backend class for ``name`` (cached)."""
    target = _target(name)
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend {name!r} cannot be imported ({exc}); install its extra, e.g. pip install 'edge-runner[{name}]'"
        ) from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendUnavailable(f"backend {name!r}: {target} is not a Backend subclass")
    return cls


def probe(name: str) -> ProbeResult:
    """Probe one backend without raising: unavailable backends say why."""
    try:
        return get_backend(name).probe()
    except BackendUnavailable as exc:
        return ProbeResult(available=False, reason=exc.message)


def backend_classes() -> list[type[Backend]]:
    """Every backend class that imports here (built-in first, then entry points), in registry order."""
    classes = []
    for name in all_backend_names():
        try:
            classes.append(get_backend(name))
        except BackendUnavailable:
            continue
    return classes


def format_for_suffix(suffix: str) -> str | None:
    """The manifest format of a bare artifact file with ``suffix`` (``.onnx`` -> ``onnx``), or None."""
    for cls in backend_classes():
        if suffix in cls.artifact_formats:
            return cls.artifact_formats[suffix]
    return None


def artifact_suffixes() -> list[str]:
    """Every suffix a bare artifact file may have."""
    return [suffix for cls in backend_classes() for suffix in cls.artifact_formats]


def default_backend_for_format(fmt: str) -> str | None:
    """The backend that serves ``fmt`` by default: the one whose own artifact format it is."""
    for cls in backend_classes():
        if fmt in cls.artifact_formats.values():
            return cls.name
    return None


def backends_serving(fmt: str) -> list[str]:
    """Every backend able to serve format ``fmt``, in registry order."""
    return [cls.name for cls in backend_classes() if fmt in cls.formats]


def option_schemas() -> dict[str, Mapping[str, Checker]]:
    """The profile table schema of every backend, by backend name."""
    return {cls.name: cls.option_schema for cls in backend_classes()}
