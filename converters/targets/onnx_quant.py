"""ONNX quantization: FP16, dynamic INT8 (per-channel) and static INT8 (QDQ) with calibration."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from converters.errors import ConversionError
from converters.sources.base import Feeds, Source

STATIC_REFUSAL = (
    "static INT8 needs calibration data to choose activation ranges, and none was given",
    "pass --calibration DATA (.npy/.npz or a folder of samples), or use --quantize int8-dynamic",
)


def to_fp16(src: Path, dst: Path) -> None:
    """Float weights and compute to FP16; inputs and outputs stay FP32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    onnx.save(converted, str(dst))


def _preprocess(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return dst
    except Exception as exc:  # pre-processing only helps; quantize the raw graph if it fails
        logging.getLogger(__name__).info("quant_pre_process skipped: %s", exc)
        return src


def int8_dynamic(src: Path, dst: Path, settings: dict[str, Any]) -> None:
    """Weights to INT8 ahead of time, activations quantized on the fly (no calibration needed)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        model = _preprocess(src, Path(tmp) / "pre.onnx")
        quantize_dynamic(
            str(model),
            str(dst),
            per_channel=settings.get("per_channel", True),
            reduce_range=settings.get("reduce_range", False),
            weight_type=QuantType[settings.get("weight_type", "QInt8")],
            op_types_to_quantize=settings.get("op_types"),
        )


class _Reader:
    """ORT CalibrationDataReader over our single-sample feeds."""

    def __init__(self, samples: list[Feeds]) -> None:
        self._iter = iter(samples)

    def get_next(self) -> Feeds | None:
        return next(self._iter, None)

    def rewind(self) -> None:  # pragma: no cover - only some calibrators call it
        pass


def is_text_transformer(source: Source) -> bool:
    """A Hugging Face text model (its tokenizer feeds ``input_ids``): static INT8 keeps its fragile ops in float."""
    return source.tokenize is not None and any(s.name == "input_ids" for s in source.inputs)


#: ops a text transformer quantizes statically: the weight MatMuls / Gemms and the embedding tables
TRANSFORMER_OPS = ["MatMul", "Gemm", "Gather"]


def transformer_float_nodes(path: Path) -> list[str]:
    """Nodes of a text transformer that static INT8 leaves in float.

    - MatMuls of two activations (attention scores Q.K^T, probabilities x V): one fixed range cannot cover
      the scores of every text, and the softmax / attention-mask path around them must stay exact;
    - down-projections (a weight with more rows than columns, e.g. the FFN output after GELU): their inputs
      carry the outlier channels of trained encoders, which a per-tensor UINT8 range crushes
      (all-MiniLM-L6-v2: minimum cosine 0.89 with them quantized, 0.98 without);
    - Gathers that do not read a constant table (shape and index arithmetic).
    Softmax, LayerNormalization, GELU and Add are not in TRANSFORMER_OPS, so they stay float as well.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        weights = [shapes[i] for i in node.input if i in shapes]
        if node.op_type == "MatMul":
            if not weights or (len(weights[0]) == 2 and weights[0][0] > weights[0][1]):
                keep.append(node.name)
        elif node.op_type == "Gather" and node.input[0] not in shapes:
            keep.append(node.name)
        elif node.op_type == "Gemm" and weights and len(weights[0]) == 2:
            transposed = any(a.name == "transB" and a.i == 1 for a in node.attribute)
            rows, cols = weights[0][::-1] if transposed else weights[0]
            if rows > cols:
                keep.append(node.name)
    return keep


def int8_static(src: Path, dst: Path, samples: list[Feeds] | None, settings: dict[str, Any]) -> None:
    """QDQ INT8 with per-channel weights and activation ranges from calibration samples.

    ``settings["text_transformer"]``: quantize only TRANSFORMER_OPS and keep transformer_float_nodes in float.
    """
    if not samples:
        raise ConversionError(*STATIC_REFUSAL)
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        model = _preprocess(src, Path(tmp) / "pre.onnx")
        op_types, excluded = settings.get("op_types"), None
        if settings.get("text_transformer"):
            op_types, excluded = op_types or TRANSFORMER_OPS, transformer_float_nodes(model)
        quantize_static(
            str(model),
            str(dst),
            _Reader(samples),
            quant_format=QuantFormat.QDQ,
            per_channel=settings.get("per_channel", True),
            reduce_range=settings.get("reduce_range", False),
            activation_type=QuantType[settings.get("activation_type", "QUInt8")],
            weight_type=QuantType[settings.get("weight_type", "QInt8")],
            calibrate_method=CalibrationMethod[settings.get("calibrate_method", "MinMax")],
            op_types_to_quantize=op_types,
            nodes_to_exclude=excluded,
            extra_options={"ActivationSymmetric": settings.get("activation_symmetric", False)},
        )
