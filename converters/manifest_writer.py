"""Build the ``manifest.json`` of a conversion with the shared :mod:`edge_runner.core.manifest` module."""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from converters.build import Artifact
from converters.calibration import parity_feeds
from converters.options import ConvertOptions
from converters.sources.base import Source
from edge_runner.core.datatypes import from_numpy
from edge_runner.core.manifest import Manifest, TensorSpec, file_entry, write_manifest

TOOLS = ("torch", "tensorflow", "transformers", "onnx", "onnxruntime", "openvino", "nncf", "tf2onnx")


def _versions(framework: str, fmt: str) -> dict[str, str]:
    wanted = {"torch": ("torch", "transformers"), "tensorflow": ("tensorflow", "tf2onnx")}.get(framework, ())
    wanted += {"onnx": ("onnx", "onnxruntime"), "openvino": ("openvino", "nncf"), "tflite": ()}.get(fmt, ())
    found = {}
    for name in wanted:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _tensor_specs(source: Source, outputs: list[np.ndarray]) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    inputs = tuple(
        TensorSpec(
            s.name, from_numpy(np.dtype(s.dtype)), tuple(-1 if i in s.dynamic_axes else d for i, d in enumerate(s.dims))
        )
        for s in source.inputs
    )
    seq_dynamic = any(1 in s.dynamic_axes for s in source.inputs)
    specs = []
    for name, value in zip(source.output_names, outputs, strict=False):
        shape = [-1 if i == 0 or (i == 1 and seq_dynamic and value.ndim >= 3) else d for i, d in enumerate(value.shape)]
        if seq_dynamic and source.task == "text-generation" and value.ndim == 3:
            shape[1] = -1
        specs.append(TensorSpec(name, from_numpy(value.dtype), tuple(shape)))
    return inputs, tuple(specs)


def _copy_extras(source: Source, folder: Path) -> list[str]:
    copied = []
    for path in source.extra_files:
        target = folder / path.name
        if not target.exists():
            shutil.copyfile(path, target)
            copied.append(path.name)
    return copied


def build_manifest(
    opts: ConvertOptions, out: Path, folder: Path, source: Source, artifact: Artifact, report: dict[str, Any]
) -> Manifest:
    """Copy tokenizer/config files beside the artifact and write ``folder/manifest.json``."""
    extras = _copy_extras(source, folder)
    files = [p.relative_to(folder).as_posix() for p in artifact.files if p.exists()] + extras
    sample = source.reference(parity_feeds(source, [], 2))
    inputs, outputs = _tensor_specs(source, sample)
    info = dict(source.info)
    info.update(
        {
            "converter": "edge-runner convert",
            "target": artifact.format,
            "tools": _versions(source.framework, artifact.format),
        }
    )
    if source.path.is_file():
        from edge_runner.core.manifest import sha256_file

        info["sha256"] = sha256_file(source.path)
    manifest = Manifest(
        name=opts.register or out.name,
        version=1,
        format=artifact.format,
        files=tuple(file_entry(folder, f) for f in files),
        inputs=inputs,
        outputs=outputs,
        quantization=artifact.quantization,
        source=info,
        parity=report,
        task=source.task,
        extra={**source.extra, "quantization_detail": artifact.detail},
    )
    write_manifest(folder, manifest)
    return manifest
