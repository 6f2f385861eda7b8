"""TensorFlow SavedModel signature -> ONNX with tf2onnx, inputs/outputs renamed to the signature's names.

The signature is wrapped in a ``tf.function`` and its variables are frozen into constants first
(``convert_variables_to_constants_v2``), then tf2onnx converts the frozen graph. tf2onnx's own
``from_function`` leaves some captured resources as graph inputs (Keras ``Normalization`` in
EfficientNet: ``Required inputs (...) are missing``); it stays as the fallback when freezing fails.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from converters.errors import ConversionError
from converters.sources.base import Source

DEFAULT_OPSET = 17


def _rename(model: Any, inputs: list[str], outputs: list[str]) -> None:
    mapping = {old.name: new for old, new in zip(model.graph.input, inputs, strict=False)}
    mapping.update({old.name: new for old, new in zip(model.graph.output, outputs, strict=False)})
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            node.output[i] = mapping.get(name, name)
        for i, name in enumerate(node.input):
            node.input[i] = mapping.get(name, name)
    for value in (*model.graph.input, *model.graph.output):
        value.name = mapping.get(value.name, value.name)


def _frozen(serve: Any, specs: list[Any], opset: int) -> Any:
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function(*specs))
    inputs = [t.name for t in frozen.inputs if t.dtype.name != "resource"]
    outputs = [t.name for t in frozen.outputs]
    graph_def = frozen.graph.as_graph_def()
    model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs, opset=opset)
    return model


def export_tf_onnx(source: Source, out_file: Path, opset: int | None) -> list[Path]:
    """Convert the serving signature of ``source`` to ``out_file``."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    tf.get_logger().setLevel("ERROR")
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

    errors = []
    model = None
    for how in ("frozen", "function"):
        try:
            if how == "frozen":
                model = _frozen(serve, specs, opset or DEFAULT_OPSET)
            else:
                model, _ = tf2onnx.convert.from_function(serve, input_signature=specs, opset=opset or DEFAULT_OPSET)
        except Exception as exc:
            errors.append(f"{how}: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}")
            continue
        if len(model.graph.input) == len(names):
            source.info["onnx_exporter"] = f"tf2onnx ({how} graph)"
            break
        extra = [i.name for i in model.graph.input][len(names) :]
        errors.append(f"{how}: the graph kept captured inputs {extra}")
        model = None
    if model is None:
        raise ConversionError(
            "tf2onnx could not convert the model (" + " | ".join(errors) + ")",
            "the model uses an op tf2onnx does not support; try --to openvino or --to tflite",
        )
    _rename(model, names, source.output_names)
    onnx.save(model, str(out_file))
    return [out_file]
