"""TFLite from a TF source: FP32, FP16, dynamic-range INT8 or full-integer INT8 with a representative dataset."""

from __future__ import annotations

from pathlib import Path

from converters.errors import ConversionError
from converters.sources.base import Feeds, Source


def write_tflite(source: Source, out_file: Path, quantization: str, flavour: str, samples: list[Feeds]) -> list[Path]:
    """Convert ``source``'s SavedModel to ``out_file``; inputs and outputs stay float."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(source.model.saved_model))
    if quantization == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if flavour == "full-integer":
            if not samples:
                raise ConversionError(
                    "full-integer TFLite needs a representative dataset, and none was given",
                    "pass --calibration DATA, or use --quantize int8-dynamic for dynamic-range INT8",
                )
            names = [s.name for s in source.inputs]

            def representative() -> object:
                for sample in samples:
                    yield [sample[n] for n in names]

            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        blob = converter.convert()
    except Exception as exc:
        raise ConversionError(
            f"the TFLite converter failed: {str(exc).splitlines()[0][:300]}",
            "the model uses ops TFLite lacks; try --to onnx or --to openvino",
        ) from exc
    out_file.write_bytes(blob)
    return [out_file]
