"""Conversion options and the ``NAME:DTYPE:DIMS`` example-input syntax (stdlib only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters.errors import ConversionError

TARGETS = ("onnx", "openvino", "tflite", "gguf")
QUANTIZATIONS = (
    "none",
    "fp16",
    "int8",
    "int8-dynamic",
    "int8-static",
    # GGUF only (llama.cpp's own quantizer); f16 is the GGUF spelling of fp16
    "f16",
    "f32",
    "q8_0",
    "q4_0",
    "q4_k_m",
    "q5_k_m",
    "q6_k",
)
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")


@dataclass(frozen=True)
class InputSpec:
    """A model input: name, numpy dtype name and dims (axis 0 is the batch axis)."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    dynamic_axes: tuple[int, ...] = (0,)

    def with_batch(self, batch: int) -> InputSpec:
        """The same input with another batch size."""
        return InputSpec(self.name, self.dtype, (batch, *self.dims[1:]), self.dynamic_axes)


@dataclass(frozen=True)
class ConvertOptions:
    """Everything ``edge-runner convert`` was asked to do."""

    src: str
    to: str
    quantize: str = "none"
    calibration: Path | None = None
    #: text models: one calibration text a line (static INT8); built-in texts when int8-static gets none
    calibration_texts: Path | None = None
    out: Path | None = None
    register: str | None = None
    opset: int | None = None
    task: str | None = None
    example_inputs: tuple[InputSpec, ...] = ()
    state_dict: Path | None = None
    profile: str | None = None
    allow_drift: bool = False
    json: bool = False
    model_repository: Path | None = None
    samples: int = 4
    name: str | None = None
    parity_data: Path | None = None
    #: merged into the manifest's ``source`` / ``extra`` (scripts that build the embedded defaults)
    source_info: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def parse_example_input(text: str) -> InputSpec:
    """Parse ``NAME:DTYPE:DIMS`` such as ``image:float32:1x3x224x224``."""
    parts = text.split(":")
    fix = "write it as NAME:DTYPE:DIMS, e.g. ids:int64:1x128 or image:float32:1x3x224x224"
    if len(parts) != 3 or not parts[0]:
        raise ConversionError(f"--example-input {text!r} is not NAME:DTYPE:DIMS", fix)
    name, dtype, dims_text = parts
    if dtype not in DTYPES:
        raise ConversionError(f"--example-input {text!r}: unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    try:
        dims = tuple(int(d) for d in dims_text.lower().split("x"))
    except ValueError:
        raise ConversionError(f"--example-input {text!r}: dims {dims_text!r} are not integers", fix) from None
    if not dims or any(d <= 0 for d in dims):
        raise ConversionError(f"--example-input {text!r}: dims must be positive", fix)
    return InputSpec(name, dtype, dims)
