"""OpenVINO backend: IR (``.xml``/``.bin``) and ONNX through ``openvino.Core``, with device fallback.

Devices come from ``LoadOptions.devices`` in order (``NPU``, ``GPU``, ``CPU``, ``AUTO``, ``HETERO:NPU,CPU``,
...); ``CPU`` is always the last resort. A device is skipped when ``Core().available_devices`` lacks it or
when compiling fails, and every candidate becomes a ``SelectionStep``. Options (the profile's
``[openvino]`` table): ``performance_hint`` (latency/throughput/cumulative_throughput), ``num_streams``,
``inference_precision`` (``f32`` unless told otherwise, for parity with the source model; a string or
a table per device), ``static_batch_sizes`` and ``static_shapes`` (NPUs always compile static shapes),
``num_requests``, ``config`` (raw OpenVINO properties) and ``fold_weight_decompression`` (below).

``fold_weight_decompression`` (default: on for aarch64 only) turns int8/uint8 MatMul weights that the model
dequantizes on the fly (``Convert -> [Subtract zero point] -> Multiply scale``, as NNCF writes them) into f32
constants before compiling. OpenVINO 2026.4's ARM CPU plugin (measured under qemu-aarch64 10) applies the first
output channel's scale to every output channel of such a MatMul: the digits IR's logits were off by up to 29
(x2.3) while every layer before the MatMul matched a numpy evaluation of the IR to 2e-6. Folding keeps the
int8-rounded weights, so answers equal the x86 plugin's; it costs 4x the memory of those weights.
"""

from __future__ import annotations

import importlib.util
import platform
import queue
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from edge_runner.backends.base import Capabilities, LoadOptions, ModelMetadata, ProbeResult, SelectionStep, Tensors
from edge_runner.backends.openvino_weights import fold_weight_decompression
from edge_runner.backends.text_encoder import TextEmbeddingBackend, can_embed
from edge_runner.core.errors import BackendUnavailable, InferenceError, InvalidInput, ModelLoadError, ModelNotReady
from edge_runner.core.manifest import TensorSpec
from edge_runner.core.schema import (
    SCALARS,
    STRINGS,
    boolean,
    integer,
    list_of,
    one_of,
    positive_int,
    string,
    string_or_int,
    table_of,
)

# OpenVINO element type names -> KServe datatypes (f32 -> FP32, i64 -> INT64, u8 -> UINT8, ...)
_OV_TYPES = {"bf16": "BF16", "boolean": "BOOL", "string": "BYTES"} | {
    f"{short}{bits}": f"{long}{bits}"
    for short, long, sizes in (("f", "FP", (16, 32, 64)), ("i", "INT", (8, 16, 32, 64)), ("u", "UINT", (8, 16, 32, 64)))
    for bits in sizes
}
_VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")
_STATIC_SHAPE_DEVICES = ("NPU",)
_FOLD_MACHINES = ("aarch64", "arm64")
_BAD_INPUT_MARKERS = ("ParameterMismatch", "incompatible", "was not found", "Dimension mismatch", "shape")


@cache
def _core() -> Any:
    # One Core per process: plugins are loaded once and shared by every model.
    import openvino

    return openvino.Core()


def ov_message(exc: BaseException) -> str:
    """The useful line of an OpenVINO exception (its text starts with a stack of 'Exception from ...')."""
    lines = [ln.strip() for ln in str(exc).splitlines() if len(ln.strip(" ;")) > 1]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check '"))]
    return (useful or lines or [type(exc).__name__])[-1]


def device_unavailable(candidate: str, available: Sequence[str]) -> str:
    """Why ``candidate`` cannot run here given ``Core().available_devices``; empty when it can."""

    def present(dev: str) -> bool:
        return any(a == dev or a.split(".")[0] == dev for a in available)

    base, _, members = candidate.partition(":")
    if base in _VIRTUAL_DEVICES:
        wanted = [m for m in members.split(",") if m]
        if not wanted or any(present(m) for m in wanted):
            return ""
        return f"none of {', '.join(wanted)} in Core().available_devices ({', '.join(available) or 'none'})"
    return "" if present(candidate) else f"not in Core().available_devices ({', '.join(available) or 'none'})"


def _spec(port: Any, index: int, kind: str) -> TensorSpec:
    names = port.get_names()
    name = port.get_any_name() if names else f"{kind}_{index}"
    type_name = port.get_element_type().get_type_name()
    dtype = _OV_TYPES.get(type_name)
    if dtype is None:
        raise ModelLoadError(f"tensor {name!r} has element type {type_name}, which edge-runner cannot serve")
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        raise ModelLoadError(f"tensor {name!r} has a dynamic rank, which edge-runner cannot serve")
    return TensorSpec(name, dtype, tuple(-1 if d.is_dynamic else d.get_length() for d in shape))


def _check_shape(spec: TensorSpec, array: np.ndarray) -> None:
    # OpenVINO may copy a wrongly shaped array into a request's existing tensor without complaint.
    if array.ndim != len(spec.shape) or any(d not in (-1, a) for d, a in zip(spec.shape, array.shape, strict=True)):
        raise InvalidInput(f"input {spec.name!r} has shape {list(array.shape)}, expected {list(spec.shape)} (-1: any)")


def _batch_plan(n: int, sizes: Sequence[int]) -> list[tuple[int, int, int]]:
    """Split ``n`` rows into (start, count, compiled size) chunks over the static batch sizes."""
    plan, start, biggest = [], 0, sizes[-1]
    while n - start > biggest:
        plan.append((start, biggest, biggest))
        start += biggest
    rest = n - start
    plan.append((start, rest, min(s for s in sizes if s >= rest)))
    return plan


class _Compiled:
    """A compiled model and a pool of its infer requests (one request runs one call at a time)."""

    def __init__(self, compiled: Any, requests: int) -> None:
        self.compiled = compiled
        self.pool: queue.Queue[Any] = queue.Queue()
        for _ in range(requests):
            self.pool.put(compiled.create_infer_request())

    def run(self, feed: Mapping[int, np.ndarray], out_indices: Sequence[int]) -> list[np.ndarray]:
        request = self.pool.get()
        try:
            # Inputs are only read during the call; outputs are copied out of the request's buffers.
            results = request.infer(dict(feed), share_inputs=True, share_outputs=False)
            return [np.asarray(results[i]) for i in out_indices]
        finally:
            self.pool.put(request)


class OpenVinoBackend(TextEmbeddingBackend):
    """Serves OpenVINO IR and ONNX files through an OpenVINO compiled model."""

    name = "openvino"
    formats = ("openvino", "onnx")
    suffixes = (".xml", ".onnx")
    artifact_formats = {".xml": "openvino"}
    option_schema = {
        "devices": STRINGS,
        "performance_hint": one_of("latency", "throughput", "cumulative_throughput"),
        "num_streams": string_or_int,
        "inference_precision": lambda v: string(v) and table_of(string, "device = precision")(v),
        "static_shapes": boolean,
        "static_batch_sizes": list_of(positive_int, "positive integers"),
        "num_requests": integer,
        "config": SCALARS,
        "use_mmap": boolean,
        "fold_weight_decompression": boolean,
    }
    runtime_package = "openvino"

    @classmethod
    def profile_options(cls, table: Mapping[str, Any], profile_settings: Mapping[str, Any]) -> dict[str, Any]:
        """NPUs compile static shapes: the batch sizes default to the profile's preferred batch sizes."""
        options = dict(table)
        if "static_batch_sizes" not in options and profile_settings.get("preferred_batch_sizes"):
            options["static_batch_sizes"] = list(profile_settings["preferred_batch_sizes"])
        return options

    @classmethod
    def device_unavailable(cls, device: str, available: Sequence[str], options: LoadOptions) -> str:
        """Devices (and AUTO/HETERO/MULTI members) must be in ``Core().available_devices``."""
        return device_unavailable(device, available)

    _compiled: dict[int, _Compiled] | None = None  # batch size -> compiled model; key 0 = dynamic shapes
    _meta: ModelMetadata | None = None

    @classmethod
    def probe(cls) -> ProbeResult:
        if importlib.util.find_spec("openvino") is None:
            return ProbeResult(False, reason="openvino is not installed (pip install 'edge-runner[openvino]')")
        try:
            devices = tuple(_core().available_devices)
            ov_version = version("openvino")
        except (RuntimeError, ImportError, PackageNotFoundError) as exc:
            return ProbeResult(False, reason=f"openvino is installed but failed to start: {exc}")
        return ProbeResult(True, version=ov_version, devices=devices)

    def _candidates(self) -> list[str]:
        wanted = [str(d) for d in self.options.devices] or ["CPU"]
        return wanted if "CPU" in wanted else [*wanted, "CPU"]

    def _static(self, device: str) -> bool:
        return bool(self.options.options.get("static_shapes", False)) or any(d in device for d in _STATIC_SHAPE_DEVICES)

    def _config(self, device: str) -> dict[str, Any]:
        opts = self.options.options
        config: dict[str, Any] = {"PERFORMANCE_HINT": str(opts.get("performance_hint", "latency")).upper()}
        if "num_streams" in opts:
            config["NUM_STREAMS"] = str(opts["num_streams"]).upper()
        precision = opts.get("inference_precision", "f32")
        if isinstance(precision, Mapping):
            precision = precision.get(device.split(":")[0].split(".")[0], "f32")
        if str(precision) not in ("", "default"):
            config["INFERENCE_PRECISION_HINT"] = str(precision)
        if self.options.threads > 0:
            config["INFERENCE_NUM_THREADS"] = self.options.threads
        config.update({str(k): v for k, v in dict(opts.get("config", {})).items()})
        base = device.split(":")[0]
        if base not in _VIRTUAL_DEVICES:
            # Plain devices reject keys they do not know; keep what the device supports.
            supported = _core().get_property(device, "SUPPORTED_PROPERTIES")
            config = {k: v for k, v in config.items() if k in supported}
        if self.options.cache_dir is not None:
            self.options.cache_dir.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(self.options.cache_dir)
        return config

    def _compile(self, model: Any, device: str) -> dict[int, _Compiled]:
        import openvino

        core, config = _core(), self._config(device)
        requests = int(self.options.options.get("num_requests", 0))
        if not self._static(device) or not model.is_dynamic():
            compiled = core.compile_model(model, device, config)
            return {0: _Compiled(compiled, requests or self._optimal_requests(compiled))}
        for port in model.inputs:
            shape = port.get_partial_shape()
            if shape.rank.is_dynamic or len(shape) == 0 or any(d.is_dynamic for d in list(shape)[1:]):
                raise ModelLoadError(
                    f"{device} needs static shapes; input {port.get_any_name()!r} is {shape}, "
                    "only a dynamic batch axis can be made static"
                )
        sizes = sorted({int(s) for s in self.options.options.get("static_batch_sizes", (1,))})
        result = {}
        for size in sizes:
            fixed = model.clone()
            fixed.reshape({p: openvino.PartialShape([size, *list(p.get_partial_shape())[1:]]) for p in fixed.inputs})
            compiled = core.compile_model(fixed, device, config)
            result[size] = _Compiled(compiled, requests or self._optimal_requests(compiled))
        return result

    @staticmethod
    def _optimal_requests(compiled: Any) -> int:
        try:
            return max(1, min(8, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))))
        except RuntimeError:
            return 1

    def _read(self) -> Any:
        path = self.folder / self.manifest.primary_file
        if not path.is_file():
            raise ModelLoadError(f"openvino: {path} does not exist (model {self.manifest.name!r})")
        try:
            return _core().read_model(str(path), config={"ENABLE_MMAP": self.options.use_mmap})
        except RuntimeError as exc:
            raise ModelLoadError(
                f"openvino could not read {path.name} of {self.manifest.name!r}: {ov_message(exc)}"
            ) from exc

    def load(self) -> None:
        probe = self.probe()
        if not probe.available:
            raise BackendUnavailable(probe.reason)
        model = self._read()
        if self.options.options.get("fold_weight_decompression", platform.machine() in _FOLD_MACHINES):
            fold_weight_decompression(model)
        inputs = tuple(_spec(p, i, "input") for i, p in enumerate(model.inputs))
        outputs = tuple(_spec(p, i, "output") for i, p in enumerate(model.outputs))
        steps: list[SelectionStep] = []
        for device in self._candidates():
            reason = device_unavailable(device, probe.devices)
            if reason:
                steps.append(SelectionStep(device, False, reason))
                continue
            try:
                compiled = self._compile(model, device)
            except (RuntimeError, ModelLoadError) as exc:
                text = exc.message if isinstance(exc, ModelLoadError) else ov_message(exc)
                steps.append(SelectionStep(device, False, f"compile failed: {text}"))
                continue
            first = next(iter(compiled.values())).compiled
            executing = ", ".join(first.get_property("EXECUTION_DEVICES"))
            shapes = "dynamic shapes" if 0 in compiled else f"static batch sizes {sorted(compiled)}"
            steps.append(SelectionStep(device, True, f"compiled; runs on {executing} with {shapes}"))
            self._compiled = compiled
            self._meta = ModelMetadata(inputs, outputs, self._capabilities(inputs, first), device, tuple(steps))
            return
        tried = "; ".join(f"{s.candidate}: {s.reason}" for s in steps)
        raise ModelLoadError(f"openvino could not compile {self.manifest.name!r} on any device ({tried})")

    def _capabilities(self, inputs: tuple[TensorSpec, ...], compiled: Any) -> Capabilities:
        assert self._compiled is not None
        static = 0 not in self._compiled
        batching = bool(inputs) and all(len(t.shape) > 0 and t.shape[0] == -1 for t in inputs)
        return Capabilities(
            batching=batching,
            max_concurrency=max(c.pool.qsize() for c in self._compiled.values()),
            embed=can_embed(self.manifest),
            dynamic_shapes=not static and any(d == -1 for t in inputs for d in t.shape),
            devices=tuple(compiled.get_property("EXECUTION_DEVICES")),
        )

    def metadata(self) -> ModelMetadata:
        if self._meta is None:
            raise ModelNotReady(f"model {self.manifest.name!r} is not loaded")
        return self._meta

    def infer(self, inputs: Tensors, outputs: Sequence[str] | None = None) -> Tensors:
        compiled, meta = self._compiled, self._meta
        if compiled is None or meta is None:
            raise ModelNotReady(f"model {self.manifest.name!r} is not loaded")
        in_index = {t.name: i for i, t in enumerate(meta.inputs)}
        out_index = {t.name: i for i, t in enumerate(meta.outputs)}
        names = list(outputs) if outputs else list(out_index)
        if set(inputs) != set(in_index) or any(n not in out_index for n in names):
            raise InvalidInput(
                f"model {self.manifest.name!r} takes inputs {sorted(in_index)} and outputs "
                f"{sorted(out_index)}; got inputs {sorted(inputs)}, outputs {names}"
            )
        for spec in meta.inputs:
            _check_shape(spec, inputs[spec.name])
        feed = {in_index[k]: np.ascontiguousarray(v) for k, v in inputs.items()}
        try:
            results = self._run(compiled, feed, [out_index[n] for n in names])
        except RuntimeError as exc:
            text = ov_message(exc)
            if any(marker in str(exc) for marker in _BAD_INPUT_MARKERS):
                raise InvalidInput(f"openvino rejected the input: {text}") from exc
            raise InferenceError(f"openvino failed on {self.manifest.name!r}: {text}") from exc
        return dict(zip(names, results, strict=True))

    @staticmethod
    def _run(compiled: dict[int, _Compiled], feed: dict[int, np.ndarray], outs: list[int]) -> list[np.ndarray]:
        if 0 in compiled:
            return compiled[0].run(feed, outs)
        rows = next(iter(feed.values())).shape[0]
        parts: list[list[np.ndarray]] = []
        for start, count, size in _batch_plan(rows, sorted(compiled)):
            chunk = {}
            for i, arr in feed.items():
                piece = arr[start : start + count]
                pad = np.zeros((size - count, *piece.shape[1:]), dtype=piece.dtype)
                chunk[i] = np.concatenate([piece, pad]) if size > count else piece
            parts.append([r[:count] for r in compiled[size].run(chunk, outs)])
        return [np.concatenate([p[j] for p in parts]) for j in range(len(outs))]

    def unload(self) -> None:
        self._compiled = None
        self._meta = None
