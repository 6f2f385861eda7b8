"""The one producer of ``manifest.json``: every conversion (ONNX / OpenVINO / TFLite and GGUF) builds it here.

``build_manifest`` checksums the files and fills the shared :class:`edge_runner.core.manifest.Manifest`
with the parity report in its one format (:class:`edge_runner.core.parity.ParityReport`);
``conversion_manifest`` gathers what the ONNX / OpenVINO / TFLite pipeline knows about a source.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from converters.build import Artifact
from converters.calibration import parity_feeds
from converters.options import ConvertOptions
from converters.sources.base import Source
from edge_runner.core.datatypes import from_numpy
from edge_runner.core.manifest import Manifest, TensorSpec, file_entry, sha256_file
from edge_runner.core.parity import ParityReport


def build_manifest(
    folder: Path,
    *,
    name: str,
    fmt: str,
    files: Sequence[str],
    parity: ParityReport | None,
    inputs: Sequence[TensorSpec] = (),
    outputs: Sequence[TensorSpec] = (),
    quantization: str = "none",
    task: str = "",
    source: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    backend: str = "",
    version: int = 1,
) -> Manifest:
    """The manifest of the artifact ``files`` in ``folder`` (the first is opened); not written yet.

    ``parity`` is None only before the check ran (the manifest the serving backend loads to measure it).
    """
    return Manifest(
        name=name,
        version=version,
        format=fmt,
        files=tuple(file_entry(folder, f) for f in files),
        backend=backend,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        quantization=quantization,
        source=dict(source or {}),
        parity=parity.to_json() if parity is not None else {},
        task=task,
        extra=dict(extra or {}),
    )


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


def conversion_manifest(opts: ConvertOptions, out: Path, folder: Path, source: Source, artifact: Artifact) -> Manifest:
    """Copy tokenizer/config files beside the artifact; the manifest without its parity report yet."""
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
        info["sha256"] = sha256_file(source.path)
    info.update(opts.source_info)
    return build_manifest(
        folder,
        name=opts.name or opts.register or out.name,
        fmt=artifact.format,
        files=files,
        parity=None,
        inputs=inputs,
        outputs=outputs,
        quantization=artifact.quantization,
        task=source.task,
        source=info,
        extra={**source.extra, "quantization_detail": artifact.detail, **opts.extra},
    )
