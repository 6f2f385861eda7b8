"""TFLite backend: ``ai_edge_litert`` when installed, else ``tflite_runtime``, else ``tensorflow.lite``.

Devices come from ``LoadOptions.devices`` in order: ``CPU`` is the built-in XNNPACK path (always the
last resort); any other name is an external delegate, described in the profile's ``[tflite.delegates]``
table (``library`` path or soname, optional ``options``) or given directly as a library path. A
delegate whose library is missing, refuses to load, or cannot take the model is skipped with a
reason. Batch size follows the request through ``resize_tensor_input``.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import threading
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from edge_runner.backends.base import (
    Backend,
    Capabilities,
    LoadOptions,
    ModelMetadata,
    ProbeResult,
    SelectionStep,
    Tensors,
)
from edge_runner.core.datatypes import from_numpy
from edge_runner.core.errors import BackendUnavailable, InferenceError, InvalidInput, ModelLoadError, ModelNotReady
from edge_runner.core.manifest import Manifest, TensorSpec
from edge_runner.core.schema import SCALARS, STRINGS, record, string, table_of

# (import name, module holding Interpreter/load_delegate, distribution) in order of preference.
RUNTIMES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime", "tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow", "tensorflow.lite", "tensorflow"),
)


@cache
def _runtime() -> tuple[Any, Any, str]:
    """(Interpreter class, load_delegate, distribution) of the first runtime that imports."""
    failures = []
    for top, module_name, dist in RUNTIMES:
        if importlib.util.find_spec(top) is None:
            continue
        try:
            module = importlib.import_module(module_name)
            delegate = module.experimental.load_delegate if top == "tensorflow" else module.load_delegate
            return module.Interpreter, delegate, dist
        except Exception as exc:  # tflite_runtime built for numpy 1 fails with a non-ImportError on numpy 2
            failures.append(f"{dist}: {exc}")
    raise BackendUnavailable(
        "no TFLite runtime imports ("
        + ("; ".join(failures) or "none installed")
        + "); pip install 'edge-runner[tflite]'"
    )


def delegate_unavailable(library: str) -> str:
    """Why a delegate library cannot be opened; empty when ``dlopen`` succeeds."""
    if "/" in library and not Path(library).is_file():
        return f"delegate library {library} not found"
    try:
        ctypes.CDLL(library)
    except OSError as exc:
        return f"delegate library cannot be loaded: {exc}"
    return ""


def _spec(detail: Mapping[str, Any], name: str) -> TensorSpec:
    signature = detail.get("shape_signature")
    shape = signature if signature is not None and len(signature) else detail["shape"]
    return TensorSpec(name, from_numpy(np.dtype(detail["dtype"])), tuple(int(d) for d in shape))


class TfliteBackend(Backend):
    """Serves ``.tflite`` files through a LiteRT interpreter, one call at a time."""

    name = "tflite"
    formats = ("tflite",)
    suffixes = (".tflite",)
    artifact_formats = {".tflite": "tflite"}
    option_schema = {
        "devices": STRINGS,
        "delegates": table_of(
            record({"library": string, "options": SCALARS}, required=("library",)), "delegate tables"
        ),
    }
    runtime_package = "ai_edge_litert"
    hidden_imports = ("ai_edge_litert.interpreter",)

    @classmethod
    def device_unavailable(cls, device: str, available: Sequence[str], options: LoadOptions) -> str:
        """A delegate is usable when its shared library opens."""
        if device == cls.cpu_device:
            return ""
        spec = dict(options.options.get("delegates", {}).get(device, {"library": device}))
        return delegate_unavailable(str(spec.get("library", device)))

    def __init__(self, manifest: Manifest, folder: Path, options: LoadOptions) -> None:
        super().__init__(manifest, folder, options)
        self._interpreter: Any = None
        self._meta: ModelMetadata | None = None
        self._inputs: dict[str, int] = {}
        self._outputs: dict[str, int] = {}
        # The interpreter is not reentrant: one call at a time per loaded model.
        self._lock = threading.Lock()

    @classmethod
    def probe(cls) -> ProbeResult:
        for top, _, dist in RUNTIMES:
            if importlib.util.find_spec(top) is not None:
                try:
                    return ProbeResult(True, version=f"{dist} {version(dist)}", devices=("CPU",))
                except PackageNotFoundError:
                    return ProbeResult(True, version=dist, devices=("CPU",))
        return ProbeResult(False, reason="no TFLite runtime installed (pip install 'edge-runner[tflite]')")

    def _candidates(self) -> list[str]:
        delegates = dict(self.options.options.get("delegates", {}))
        wanted = [str(d) for d in self.options.devices] or [*delegates, "CPU"]
        return wanted if "CPU" in wanted else [*wanted, "CPU"]

    def _interpreter_for(self, path: Path, device: str) -> Any:
        interpreter_cls, load_delegate, _ = _runtime()
        threads = self.options.threads or len(os.sched_getaffinity(0))
        delegates = []
        if device != "CPU":
            spec = dict(self.options.options.get("delegates", {}).get(device, {"library": device}))
            library = str(spec.get("library", device))
            reason = delegate_unavailable(library)
            if reason:
                raise _Skip(reason)
            options = {str(k): str(v) for k, v in dict(spec.get("options", {})).items()}
            try:
                delegates.append(load_delegate(library, options))
            except (ValueError, OSError, RuntimeError) as exc:
                raise _Skip(f"load_delegate({library}) failed: {exc}") from exc
        interpreter = interpreter_cls(model_path=str(path), num_threads=threads, experimental_delegates=delegates)
        interpreter.allocate_tensors()
        return interpreter

    def load(self) -> None:
        probe = self.probe()
        if not probe.available:
            raise BackendUnavailable(probe.reason)
        path = self.folder / self.manifest.primary_file
        if not path.is_file():
            raise ModelLoadError(f"tflite: {path} does not exist (model {self.manifest.name!r})")
        steps: list[SelectionStep] = []
        for device in self._candidates():
            try:
                interpreter = self._interpreter_for(path, device)
            except _Skip as exc:
                steps.append(SelectionStep(device, False, str(exc)))
                continue
            except (ValueError, RuntimeError) as exc:
                if device == "CPU":
                    raise ModelLoadError(f"tflite could not load {path.name} of {self.manifest.name!r}: {exc}") from exc
                steps.append(SelectionStep(device, False, f"interpreter failed with this delegate: {exc}"))
                continue
            runtime = _runtime()[2]
            steps.append(
                SelectionStep(
                    device, True, f"{runtime} interpreter" + (" (XNNPACK)" if device == "CPU" else " with delegate")
                )
            )
            self._interpreter = interpreter
            self._meta = self._describe(interpreter, device, tuple(steps))
            return
        raise ModelLoadError(
            f"tflite could not load {self.manifest.name!r}: " + "; ".join(f"{s.candidate}: {s.reason}" for s in steps)
        )

    def _describe(self, interpreter: Any, device: str, steps: tuple[SelectionStep, ...]) -> ModelMetadata:
        signatures = interpreter.get_signature_list()
        if len(signatures) == 1:
            # Signature names are what the model author chose ("x"), not "serving_default_x:0".
            runner = interpreter.get_signature_runner(next(iter(signatures)))
            in_details, out_details = runner.get_input_details(), runner.get_output_details()
            del runner  # it holds tensor references that would block resize_tensor_input
        else:
            in_details = {d["name"]: d for d in interpreter.get_input_details()}
            out_details = {d["name"]: d for d in interpreter.get_output_details()}
        self._inputs = {name: int(d["index"]) for name, d in in_details.items()}
        self._outputs = {name: int(d["index"]) for name, d in out_details.items()}
        inputs = tuple(_spec(d, name) for name, d in in_details.items())
        batching = bool(inputs) and all(len(t.shape) > 0 and t.shape[0] == -1 for t in inputs)
        capabilities = Capabilities(
            batching=batching,
            max_concurrency=1,
            dynamic_shapes=any(d == -1 for t in inputs for d in t.shape),
            devices=(device,),
        )
        outputs = tuple(_spec(d, name) for name, d in out_details.items())
        return ModelMetadata(inputs, outputs, capabilities, device, steps)

    def metadata(self) -> ModelMetadata:
        if self._meta is None:
            raise ModelNotReady(f"model {self.manifest.name!r} is not loaded")
        return self._meta

    def infer(self, inputs: Tensors, outputs: Sequence[str] | None = None) -> Tensors:
        interpreter = self._interpreter
        if interpreter is None:
            raise ModelNotReady(f"model {self.manifest.name!r} is not loaded")
        names = list(outputs) if outputs else list(self._outputs)
        if set(inputs) != set(self._inputs) or any(n not in self._outputs for n in names):
            raise InvalidInput(
                f"model {self.manifest.name!r} takes inputs {sorted(self._inputs)} and outputs "
                f"{sorted(self._outputs)}; got inputs {sorted(inputs)}, outputs {names}"
            )
        with self._lock:
            try:
                self._set_inputs(interpreter, inputs)
            except (ValueError, RuntimeError) as exc:  # a bad shape fails in resize/allocate_tensors
                raise InvalidInput(f"tflite rejected the input: {exc}") from exc
            try:
                interpreter.invoke()
                return {n: np.asarray(interpreter.get_tensor(self._outputs[n])) for n in names}
            except (ValueError, RuntimeError) as exc:
                raise InferenceError(f"tflite failed on {self.manifest.name!r}: {exc}") from exc

    def _set_inputs(self, interpreter: Any, inputs: Tensors) -> None:
        current = {int(d["index"]): tuple(d["shape"]) for d in interpreter.get_input_details()}
        resized = False
        for name, array in inputs.items():
            index = self._inputs[name]
            if current.get(index) != array.shape:
                interpreter.resize_tensor_input(index, list(array.shape), strict=False)
                resized = True
        if resized:
            interpreter.allocate_tensors()
        for name, array in inputs.items():
            interpreter.set_tensor(self._inputs[name], np.ascontiguousarray(array))

    def unload(self) -> None:
        self._interpreter = None
        self._meta = None


class _Skip(Exception):
    """A delegate that cannot be used here; the reason becomes a SelectionStep."""
