"""OpenVINO IR: ``ov.convert_model`` then FP16 compression or NNCF INT8 (weights-only or full)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from converters.errors import ConversionError
from converters.sources.base import Feeds

TRANSFORMER_TASKS = ("feature-extraction", "text-classification", "text-generation")


def convert_to_ir(model_path: Path) -> Any:
    """Read an ONNX file or a TF SavedModel folder into an ``ov.Model``."""
    import openvino as ov

    try:
        return ov.convert_model(str(model_path))
    except Exception as exc:
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise ConversionError(
            f"OpenVINO could not convert the model: {reason}",
            "the model uses an op OpenVINO does not support; try --to onnx",
        ) from exc


def _quiet() -> None:
    for name in ("nncf", "openvino"):
        logging.getLogger(name).setLevel(logging.ERROR)


def compress_int8_weights(model: Any) -> Any:
    """INT8 weight compression (NNCF), activations stay float: no calibration needed."""
    import nncf

    _quiet()
    return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)


def quantize_full_int8(model: Any, samples: list[Feeds], task: str) -> Any:
    """Full INT8 (weights and activations) with NNCF post-training quantization."""
    import nncf

    _quiet()
    if not samples:
        raise ConversionError(
            "full INT8 needs calibration data to choose activation ranges, and none was given",
            "pass --calibration DATA, or use --quantize int8-dynamic for INT8 weight compression",
        )
    kwargs: dict[str, Any] = {"subset_size": len(samples)}
    if task in TRANSFORMER_TASKS:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    return nncf.quantize(model, nncf.Dataset(samples), **kwargs)


def write_ir(model: Any, folder: Path, flavour: str, samples: list[Feeds], task: str) -> list[Path]:
    """Save ``model.xml`` + ``model.bin`` in ``folder`` after the requested compression."""
    import openvino as ov

    if flavour == "weights":
        model = compress_int8_weights(model)
    elif flavour == "full":
        model = quantize_full_int8(model, samples, task)
    xml = folder / "model.xml"
    ov.save_model(model, str(xml), compress_to_fp16=(flavour == "fp16"))
    return [xml, folder / "model.bin"]
