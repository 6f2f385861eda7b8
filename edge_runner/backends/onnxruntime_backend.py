"""ONNX Runtime backend: execution-provider selection with fallback, session options from config."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runner.backends.base import Capabilities, LoadOptions, ModelMetadata, ProbeResult, SelectionStep, Tensors
from edge_runner.backends.text_encoder import TextEmbeddingBackend, can_embed
from edge_runner.core.errors import BackendUnavailable, InferenceError, InvalidInput, ModelLoadError
from edge_runner.core.manifest import TensorSpec
from edge_runner.core.schema import SCALARS, STRINGS, boolean, integer, table_of

log = logging.getLogger("edge_runner.backends.onnxruntime")

_ORT_TYPES = {
    "tensor(float)": "FP32",
    "tensor(float16)": "FP16",
    "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}

_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def _spec(arg: Any) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise ModelLoadError(f"tensor {arg.name!r} has type {arg.type}, which edge-runner cannot serve")
    dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, dtype, dims)


def _strings_for_ort(name: str, array: np.ndarray) -> np.ndarray:
    """ORT string tensors take ``str``; BYTES arrive as ``bytes`` and must be UTF-8 for it."""
    try:
        flat = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.ravel()]
    except UnicodeDecodeError:
        raise InvalidInput(f"input {name!r}: this model's string tensors need UTF-8 text") from None
    return np.array(flat, dtype=np.object_).reshape(array.shape)


def _bytes_from_ort(array: np.ndarray) -> np.ndarray:
    """String outputs back to BYTES (``bytes`` elements)."""
    if array.dtype != np.object_:
        return array
    flat = [v.encode("utf-8") if isinstance(v, str) else v for v in array.ravel()]
    return np.array(flat, dtype=np.object_).reshape(array.shape)


def _settle(step: SelectionStep, active: Sequence[str]) -> SelectionStep:
    """After the session exists: the first active provider is the choice; others are fallbacks or failures."""
    if not step.chosen:
        return step
    if step.candidate == active[0]:
        return SelectionStep(step.candidate, True, "selected: first available provider in the profile's order")
    if step.candidate in active:
        return SelectionStep(step.candidate, False, "active as fallback for nodes the first provider cannot run")
    return SelectionStep(step.candidate, False, "failed to initialise in the session; fell back")


class OnnxRuntimeBackend(TextEmbeddingBackend):
    """Serves ``.onnx`` / ``.ort`` files through an ``onnxruntime.InferenceSession``."""

    name = "onnxruntime"
    formats = ("onnx", "ort")
    suffixes = (".onnx", ".ort")
    artifact_formats = {".onnx": "onnx", ".ort": "ort"}
    option_schema = {
        "devices": STRINGS,
        "provider_options": table_of(SCALARS, "provider tables"),
        "inter_op_threads": integer,
        "allow_spinning": boolean,
        "spin_between_runs": boolean,
        "use_mmap": boolean,
    }
    runtime_package = "onnxruntime"
    cpu_device = "CPUExecutionProvider"

    @classmethod
    def device_unavailable(cls, device: str, available: Sequence[str], options: LoadOptions) -> str:
        """Execution providers are usable when ``onnxruntime.get_available_providers()`` lists them."""
        if device in available:
            return ""
        return f"not in onnxruntime.get_available_providers() ({', '.join(available) or 'none'})"

    _session: Any = None
    _meta: ModelMetadata | None = None

    @classmethod
    def probe(cls) -> ProbeResult:
        if importlib.util.find_spec("onnxruntime") is None:
            return ProbeResult(False, reason="onnxruntime is not installed (pip install 'edge-runner[onnx]')")
        import onnxruntime as ort

        return ProbeResult(True, version=str(ort.__version__), devices=tuple(ort.get_available_providers()))

    def _session_options(self, level_override: str | None = None) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        opts = self.options.options
        if self.options.threads > 0:
            so.intra_op_num_threads = self.options.threads
        so.inter_op_num_threads = int(opts.get("inter_op_threads", 1))
        level = level_override or str(opts.get("graph_optimization_level", "all"))
        if level not in _OPT_LEVELS:
            raise ModelLoadError(f"graph_optimization_level {level!r}: expected one of {', '.join(_OPT_LEVELS)}")
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[level])
        if self.options.use_mmap and self._has_external_data():
            # External-data initializers are memory-mapped by ORT only when it does not pre-pack them into
            # private buffers; mapped weights are shared with the page cache and other processes.
            so.add_session_config_entry("session.disable_prepacking", "1")
        # ORT's intra-op threads spin between the parallel sections of a run (waking a sleeping thread for each
        # costs MiniLM 0.8 ms a request) and, by default, after the run too: in a server they would then hold the
        # cores the HTTP threads need to answer and read the next request (c=8 MiniLM 36-56 -> 91 items/s without
        # spinning at all). Spinning stops the moment a run returns unless spin_between_runs.
        spin = bool(opts.get("allow_spinning", True))
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        if spin and not bool(opts.get("spin_between_runs", False)):
            so.add_session_config_entry("session.force_spinning_stop", "1")
        so.log_severity_level = 3
        return so

    def _has_external_data(self) -> bool:
        """Weights stored beside the graph (``model.onnx.data`` and the like), which ORT can memory-map."""
        primary = self.manifest.primary_file
        return any(
            f.path != primary and (f.path.startswith(primary) or f.path.endswith(".data")) for f in self.manifest.files
        )

    def _cache_path(self, provider: str) -> Path | None:
        """Optimized-graph cache file; none for external-data or .ort models.

        The name carries the artifact's identity (sha256, or size and mtime for unregistered paths), the
        provider and the optimization level, so a replaced model or a changed setting never reuses a stale
        graph. External-data models stay uncached so their weights keep being memory-mapped.
        """
        if self.options.cache_dir is None or self.manifest.format != "onnx" or self._has_external_data():
            return None
        level = str(self.options.options.get("graph_optimization_level", "all"))
        if level == "disable":
            return None
        entry = self.manifest.files[0]
        identity = entry.sha256[:16]
        if not identity:
            stat = (self.folder / entry.path).stat()
            identity = f"{stat.st_size}-{stat.st_mtime_ns}"
        target = self.options.cache_dir / f"optimized-{provider}-{level}-{identity}.onnx"
        try:
            self.options.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only root filesystem, say: serve without the cache
            log.warning("no optimized-graph cache (%s): %s", self.options.cache_dir, exc)
            return target if target.is_file() else None
        if not os.access(self.options.cache_dir, os.W_OK):
            log.warning("no optimized-graph cache: %s is not writable", self.options.cache_dir)
            return target if target.is_file() else None
        return target

    def _providers(self, available: Sequence[str]) -> tuple[list[Any], list[SelectionStep]]:
        wanted = list(self.options.devices) or ["CPUExecutionProvider"]
        if "CPUExecutionProvider" not in wanted:
            wanted.append("CPUExecutionProvider")
        provider_opts = self.options.options.get("provider_options", {})
        steps, providers = [], []
        for provider in wanted:
            if provider not in available:
                steps.append(SelectionStep(provider, False, "not in onnxruntime.get_available_providers()"))
                continue
            providers.append((provider, dict(provider_opts.get(provider, {}))))
            steps.append(SelectionStep(provider, True, "available"))
        return providers, steps

    def load(self) -> None:
        probe = self.probe()
        if not probe.available:
            raise BackendUnavailable(probe.reason)
        import onnxruntime as ort

        providers, steps = self._providers(probe.devices)
        path = self.folder / self.manifest.primary_file
        cache = self._cache_path(providers[0][0] if providers else "cpu")
        try:
            if cache is not None and cache.is_file():
                # Already optimized for this provider: skip the optimizer on this load.
                so = self._session_options(level_override="disable")
                self._session = ort.InferenceSession(str(cache), sess_options=so, providers=providers)
            else:
                so = self._session_options()
                # one temp name per process: replicas sharing a cache volume never write the same file
                tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp") if cache is not None else None
                if tmp is not None:
                    so.optimized_model_filepath = str(tmp)
                self._session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
                if cache is not None and tmp is not None and tmp.is_file():
                    os.replace(tmp, cache)  # never a half-written cache file
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/RuntimeError types
            raise ModelLoadError(f"onnxruntime could not load {path.name} of {self.manifest.name!r}: {exc}") from exc
        active = self._session.get_providers()
        steps = [_settle(step, active) for step in steps]
        self._meta = ModelMetadata(
            inputs=tuple(_spec(i) for i in self._session.get_inputs()),
            outputs=tuple(_spec(o) for o in self._session.get_outputs()),
            capabilities=self._capabilities(),
            device=active[0],
            selection=tuple(steps),
        )

    def _capabilities(self) -> Capabilities:
        inputs = self._session.get_inputs()
        batching = bool(inputs) and all(len(i.shape) > 0 and not isinstance(i.shape[0], int) for i in inputs)
        dynamic = any(not isinstance(d, int) for i in inputs for d in i.shape)
        return Capabilities(
            batching=batching,
            max_concurrency=4,
            dynamic_shapes=dynamic,
            embed=can_embed(self.manifest),
            devices=tuple(self._session.get_providers()),
        )

    def metadata(self) -> ModelMetadata:
        if self._meta is None:
            raise ModelLoadError(f"model {self.manifest.name!r} is not loaded")
        return self._meta

    def infer(self, inputs: Tensors, outputs: Sequence[str] | None = None) -> Tensors:
        if self._session is None:
            raise ModelLoadError(f"model {self.manifest.name!r} is not loaded")
        names = list(outputs) if outputs else [o.name for o in self.metadata().outputs]
        inputs = {k: _strings_for_ort(k, v) if v.dtype == np.object_ else v for k, v in inputs.items()}
        try:
            results = self._session.run(names, inputs)
        except Exception as exc:
            text = str(exc)
            if "INVALID_ARGUMENT" in text or "Invalid rank" in text or "Got invalid dimensions" in text:
                raise InvalidInput(f"onnxruntime rejected the input: {text.splitlines()[0]}") from exc
            raise InferenceError(f"onnxruntime failed on {self.manifest.name!r}: {text.splitlines()[0]}") from exc
        return {name: _bytes_from_ort(np.asarray(value)) for name, value in zip(names, results, strict=True)}

    def unload(self) -> None:
        self._session = None
        self._meta = None
        self._text_encoder = None
