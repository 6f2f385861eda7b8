"""An existing ONNX file as the source: re-quantize it, or convert it to OpenVINO IR."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converters.errors import ConversionError
from converters.options import ConvertOptions, InputSpec
from converters.sources.base import Feeds, Source, path_size

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def _spec(node: object, given: dict[str, InputSpec]) -> InputSpec:
    name = node.name  # type: ignore[attr-defined]
    shape = list(node.shape)  # type: ignore[attr-defined]
    dynamic = tuple(i for i, d in enumerate(shape) if not isinstance(d, int) or d < 0)
    dtype = _ORT_TYPES.get(node.type)  # type: ignore[attr-defined]
    if dtype is None:
        raise ConversionError(f"input {name} has unsupported type {node.type}", "use numeric tensor inputs")  # type: ignore[attr-defined]
    if name in given:
        return InputSpec(name, given[name].dtype, given[name].dims, dynamic or (0,))
    if any(i != 0 for i in dynamic):
        raise ConversionError(f"input {name} has symbolic dims {shape}", f"pass --example-input {name}:{dtype}:1x...")
    dims = tuple(1 if i == 0 else int(d) for i, d in enumerate(shape))
    return InputSpec(name, dtype, dims, dynamic or (0,))


def load_onnx(path: Path, opts: ConvertOptions) -> Source:
    """The reference is an ONNX Runtime session on the original file."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ConversionError(
            f"{path} is not a loadable ONNX model ({type(exc).__name__})", "give an intact .onnx file"
        ) from exc
    given = {s.name: s for s in opts.example_inputs}
    inputs = [_spec(node, given) for node in session.get_inputs()]
    names = [o.name for o in session.get_outputs()]

    def run(feeds: Feeds) -> list[np.ndarray]:
        return [np.asarray(o) for o in session.run(None, {s.name: feeds[s.name] for s in inputs})]

    return Source(
        kind="onnx",
        framework="onnx",
        path=path,
        model=path,
        inputs=inputs,
        output_names=names,
        reference=run,
        task=opts.task or "",
        size_bytes=path_size(path),
        info={"framework": "onnx", "kind": "onnx", "path": str(path)},
    )
