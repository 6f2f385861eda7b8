"""TensorFlow sources: SavedModel folders and Keras ``.keras`` / ``.h5`` files.

Keras files are exported to a SavedModel in a scratch folder, so every TF target
(tf2onnx, OpenVINO, TFLite) reads the same serving signature.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConversionError
from converters.options import ConvertOptions, InputSpec
from converters.sources.base import Feeds, Source, path_size


@dataclass
class TFModel:
    """What the TF exporters need: the SavedModel folder and its serving signature."""

    saved_model: Path
    signature: Any
    input_names: list[str]
    loaded: Any = None  # the loaded SavedModel keeps the signature's variables alive


def _quiet_tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def _scratch() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="edge-runner-tf-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _specs(signature: Any, opts: ConvertOptions) -> list[InputSpec]:
    given = {s.name: s for s in opts.example_inputs}
    specs = []
    for name, spec in signature.structured_input_signature[1].items():
        dims = list(spec.shape.as_list())
        dynamic = tuple(i for i, d in enumerate(dims) if d is None)
        if name in given:
            specs.append(InputSpec(name, given[name].dtype, given[name].dims, dynamic or (0,)))
            continue
        if any(d is None for d in dims[1:]):
            raise ConversionError(
                f"input {name} has unknown dims {dims}",
                f"pass --example-input {name}:{spec.dtype.name}:1x... with concrete dims",
            )
        specs.append(InputSpec(name, spec.dtype.name, (1, *dims[1:]), dynamic or (0,)))
    return specs


def _load_keras(path: Path) -> tuple[Any, Path]:
    _quiet_tf()
    import keras

    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise ConversionError(
            f"{path} is not a readable Keras model ({type(exc).__name__}: {str(exc)[:160]})",
            "give a file saved with model.save('model.keras') or an intact .h5",
        ) from exc
    saved = _scratch() / "saved_model"
    try:
        model.export(str(saved), verbose=False)
    except Exception as exc:
        raise ConversionError(
            f"Keras could not export {path} to a SavedModel: {str(exc)[:200]}",
            "make the model traceable (no Python-side state in call())",
        ) from exc
    return model, saved


def load_tensorflow(path: Path, kind: str, opts: ConvertOptions) -> Source:
    """Load a SavedModel folder or a Keras file; the reference runs the original model."""
    tf = _quiet_tf()
    keras_model = None
    saved = path
    if kind == "keras":
        keras_model, saved = _load_keras(path)
    try:
        loaded = tf.saved_model.load(str(saved))
    except Exception as exc:
        raise ConversionError(
            f"{saved} is not a readable SavedModel ({type(exc).__name__})",
            "give a folder written by tf.saved_model.save or model.export",
        ) from exc
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise ConversionError(f"{saved} has no serving_default signature", "export it with a serving signature")
    inputs = _specs(signature, opts)
    output_names = sorted(signature.structured_outputs)
    reference = _keras_reference(keras_model, inputs, output_names) if keras_model is not None else None
    if reference is None:
        reference = _signature_reference(tf, signature, inputs, output_names)
    return Source(
        kind=kind,
        framework="tensorflow",
        path=path,
        model=TFModel(saved, signature, [s.name for s in inputs], loaded),
        inputs=inputs,
        output_names=output_names,
        reference=reference,
        task=opts.task or "",
        size_bytes=path_size(path),
        info={"framework": "tensorflow", "kind": kind, "path": str(path)},
    )


def _signature_reference(tf: Any, signature: Any, inputs: list[InputSpec], names: list[str]) -> Any:
    def run(feeds: Feeds) -> list[np.ndarray]:
        out = signature(**{s.name: tf.constant(feeds[s.name]) for s in inputs})
        return [np.asarray(out[n]) for n in names]

    return run


def _keras_reference(model: Any, inputs: list[InputSpec], names: list[str]) -> Any:
    def run(feeds: Feeds) -> list[np.ndarray]:
        args = [feeds[s.name] for s in inputs]
        out = model(args[0] if len(args) == 1 else args, training=False)
        if isinstance(out, dict):  # named outputs: the signature's (sorted) output order
            return [np.asarray(out[n]) for n in names]
        outs = out if isinstance(out, list | tuple) else [out]
        return [np.asarray(o) for o in outs]

    return run
