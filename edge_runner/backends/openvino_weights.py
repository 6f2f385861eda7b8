"""OpenVINO weight decompression folded into f32 constants (see ``openvino_backend``, ``fold_weight_decompression``).

OpenVINO 2026.4's ARM CPU plugin (measured under qemu-aarch64 10) applies the first output channel's scale to
every output channel of a MatMul whose int8/uint8 weights are dequantized at run time; folding the dequantized
values (int8 rounding kept) into f32 constants before compiling gives the x86 plugin's answers.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _decompressed_weight(node: Any) -> np.ndarray | None:
    """f32 value of ``Multiply(Convert(int8/uint8 Constant) [- zero point], scale Constant)``, else None."""
    if node.get_type_name() != "Multiply":
        return None
    values: list[np.ndarray] = []
    quantized = None
    for port in node.inputs():
        source = port.get_source_output().get_node()
        kind = source.get_type_name()
        if kind == "Constant":
            values.append(np.asarray(source.get_data(), dtype=np.float32))
        elif kind in ("Convert", "Subtract") and quantized is None:
            quantized = source
        else:
            return None
    if quantized is None or len(values) != 1:
        return None
    zero_point: np.ndarray = np.zeros((), dtype=np.float32)
    if quantized.get_type_name() == "Subtract":
        convert, point = (p.get_source_output().get_node() for p in quantized.inputs())
        if point.get_type_name() == "Convert":
            point = point.input_value(0).get_node()
        if convert.get_type_name() != "Convert" or point.get_type_name() != "Constant":
            return None
        zero_point = np.asarray(point.get_data(), dtype=np.float32)
        quantized = convert
    weights = quantized.input_value(0).get_node()
    if weights.get_type_name() != "Constant" or weights.get_element_type().get_type_name() not in ("i8", "u8"):
        return None
    folded: np.ndarray = ((np.asarray(weights.get_data(), dtype=np.float32) - zero_point) * values[0]).astype(
        np.float32
    )
    return folded


def fold_weight_decompression(model: Any) -> int:
    """Replace int8/uint8 MatMul weights dequantized at run time by f32 constants; returns how many were folded.

    The values are the model's own dequantized weights (int8 rounding kept), computed here in numpy.
    """
    from openvino import op

    folded = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "MatMul":
            continue
        for port in node.inputs():
            source = port.get_source_output()
            value = _decompressed_weight(source.get_node())
            if value is not None and tuple(value.shape) == tuple(source.get_shape()):
                port.replace_source_output(op.Constant(value).output(0))
                folded += 1
    if folded:
        model.validate_nodes_and_infer_types()
    return folded
