"""Quantization presets per hardware profile: which INT8 flavour runs fastest where.

``--profile P`` picks the preset; ``--quantize int8`` then resolves to the preset's
flavour for the target (dynamic or static ONNX, weight-only or full OpenVINO,
dynamic-range or full-integer TFLite). Static flavours need calibration data; with
none the preset falls back to the weight-only flavour and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from converters.errors import ConversionError


@dataclass(frozen=True)
class Preset:
    """Quantization choices for one hardware profile."""

    name: str
    description: str
    default_quantization: str = "none"
    onnx_int8: str = "dynamic"
    onnx_settings: dict[str, Any] = field(default_factory=dict)
    openvino_int8: str = "weights"
    tflite_int8: str = "dynamic-range"


_PRESETS = (
    Preset(
        "cpu", "any CPU: dynamic INT8 needs no calibration and helps everywhere", onnx_settings={"per_channel": True}
    ),
    Preset("cpu-lowmem", "small RAM: INT8 weights by default", "int8", onnx_settings={"per_channel": True}),
    Preset(
        "avx2",
        "x86 without VNNI: static QDQ U8S8 with reduced range to avoid saturation",
        onnx_int8="static",
        onnx_settings={"per_channel": True, "reduce_range": True, "activation_type": "QUInt8"},
        openvino_int8="full",
    ),
    Preset(
        "avx512-vnni",
        "x86 with VNNI: static QDQ U8S8, full range; OpenVINO full INT8",
        onnx_int8="static",
        onnx_settings={"per_channel": True, "activation_type": "QUInt8"},
        openvino_int8="full",
    ),
    Preset(
        "arm64",
        "ARMv8.2+ dot-product: static QDQ S8S8 with symmetric activations; TFLite full-integer",
        onnx_int8="static",
        onnx_settings={"per_channel": True, "activation_type": "QInt8", "activation_symmetric": True},
        tflite_int8="full-integer",
    ),
    Preset(
        "intel-npu",
        "Intel NPU: OpenVINO full INT8 (the NPU wants quantized activations)",
        "int8",
        onnx_int8="static",
        onnx_settings={"per_channel": True},
        openvino_int8="full",
    ),
    Preset(
        "cuda",
        "NVIDIA GPU: FP16 by default; INT8 as symmetric QDQ for TensorRT",
        "fp16",
        onnx_int8="static",
        onnx_settings={"per_channel": True, "activation_type": "QInt8", "activation_symmetric": True},
    ),
    Preset(
        "jetson",
        "NVIDIA Jetson: FP16 by default; INT8 as symmetric QDQ for TensorRT",
        "fp16",
        onnx_int8="static",
        onnx_settings={"per_channel": True, "activation_type": "QInt8", "activation_symmetric": True},
    ),
)
PRESETS = {p.name: p for p in _PRESETS}


def get_preset(name: str | None) -> Preset:
    """The preset for a profile name (``cpu`` when none is given)."""
    if name is None or name == "auto":
        return PRESETS["cpu"]
    try:
        return PRESETS[name]
    except KeyError:
        raise ConversionError(
            f"--profile {name!r} has no quantization preset", f"use one of {', '.join(PRESETS)}"
        ) from None


def int8_flavour(preset: Preset, target: str, quantize: str, has_calibration: bool) -> str:
    """Resolve int8 / int8-dynamic / int8-static to a concrete flavour for the target."""
    if quantize == "int8-static":
        return {"onnx": "static", "openvino": "full", "tflite": "full-integer"}[target]
    if quantize == "int8-dynamic":
        return {"onnx": "dynamic", "openvino": "weights", "tflite": "dynamic-range"}[target]
    if has_calibration:
        return {"onnx": "static", "openvino": "full", "tflite": "full-integer"}[target]
    chosen = {"onnx": preset.onnx_int8, "openvino": preset.openvino_int8, "tflite": preset.tflite_int8}[target]
    return {"static": "dynamic", "full": "weights", "full-integer": "dynamic-range"}.get(chosen, chosen)


def describe() -> str:
    """One line per preset, for --help."""
    return "; ".join(f"{p.name}: {p.description}" for p in _PRESETS)
