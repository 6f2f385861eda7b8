"""One explicit table of backends, imported lazily by name.

Third-party backends register through the ``edge_runner.backends`` entry-point
group (value ``module:Class``). The PyInstaller spec builds its hidden imports
from ``BUILTIN_BACKENDS``.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from edge_runner.backends.base import Backend, ProbeResult
from edge_runner.errors import BackendUnavailable

ENTRY_POINT_GROUP = "edge_runner.backends"

BUILTIN_BACKENDS: dict[str, str] = {
    "onnxruntime": "edge_runner.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "openvino": "edge_runner.backends.openvino_backend:OpenVinoBackend",
    "tflite": "edge_runner.backends.tflite_backend:TfliteBackend",
    "llama_cpp": "edge_runner.backends.llama_cpp_backend:LlamaCppBackend",
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
