"""ONNX quantization: FP16, dynamic INT8 (per-channel) and static INT8 (QDQ) with calibration."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from converters.errors import ConversionError
from converters.sources.base import Feeds

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


def int8_static(src: Path, dst: Path, samples: list[Feeds] | None, settings: dict[str, Any]) -> None:
    """QDQ INT8 with per-channel weights and activation ranges from calibration samples."""
    if not samples:
        raise ConversionError(*STATIC_REFUSAL)
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        model = _preprocess(src, Path(tmp) / "pre.onnx")
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
            op_types_to_quantize=settings.get("op_types"),
            extra_options={"ActivationSymmetric": settings.get("activation_symmetric", False)},
        )
