"""TensorFlow SavedModel signature -> ONNX with tf2onnx, outputs renamed to the signature's names."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from converters.errors import ConversionError
from converters.sources.base import Source

DEFAULT_OPSET = 17


def _rename_outputs(model: Any, names: list[str]) -> None:
    mapping = {out.name: new for out, new in zip(model.graph.output, names, strict=False)}
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
    for out in model.graph.output:
        out.name = mapping.get(out.name, out.name)


def export_tf_onnx(source: Source, out_file: Path, opset: int | None) -> list[Path]:
    """Convert the serving signature of ``source`` to ``out_file``."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    signature = source.model.signature
    names = [s.name for s in source.inputs]
    specs = [
        tf.TensorSpec(
            [None if i in s.dynamic_axes else d for i, d in enumerate(s.dims)], tf.as_dtype(s.dtype), name=s.name
        )
        for s in source.inputs
    ]

    @tf.function(input_signature=specs)
    def serve(*args: Any) -> Any:
        out = signature(**dict(zip(names, args, strict=True)))
        return tuple(out[n] for n in source.output_names)

    try:
        model, _ = tf2onnx.convert.from_function(serve, input_signature=specs, opset=opset or DEFAULT_OPSET)
    except Exception as exc:
        raise ConversionError(
            f"tf2onnx could not convert the model: {str(exc).splitlines()[0][:300]}",
            "the model uses an op tf2onnx does not support; try --to openvino or --to tflite",
        ) from exc
    _rename_outputs(model, source.output_names)
    onnx.save(model, str(out_file))
    return [out_file]
