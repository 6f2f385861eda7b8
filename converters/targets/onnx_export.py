"""Export a source model to an ONNX file (torch dynamo exporter, or tf2onnx for TensorFlow)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from converters.errors import ConversionError
from converters.sources.base import Source, generated_feeds

EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf caps a single file at 2 GB
AXIS_NAMES = {0: "batch", 1: "sequence"}


def export_onnx(source: Source, out_file: Path, opset: int | None) -> list[Path]:
    """Write ``out_file`` (plus ``.data`` for huge models); returns the files written."""
    if source.framework == "onnx":
        import shutil

        shutil.copyfile(source.path, out_file)
        return [out_file]
    if source.framework == "tensorflow":
        from converters.targets.tf_onnx import export_tf_onnx

        return export_tf_onnx(source, out_file, opset)
    return _export_torch(source, out_file, opset)


def _example_args(source: Source) -> tuple[Any, ...]:
    import torch

    fixed = [s.dims[0] for s in source.inputs if s.dims and 0 not in s.dynamic_axes]
    feeds = generated_feeds(source.inputs, fixed[0] if fixed else 2, source.int_high)
    return tuple(torch.from_numpy(feeds[s.name]) for s in source.inputs)


def _dynamic_shapes(source: Source, auto: bool) -> tuple[dict[int, Any], ...]:
    from torch.export import Dim

    dims: dict[int, Any] = {}
    shapes = []
    for spec in source.inputs:
        entry = {}
        for axis in spec.dynamic_axes:
            if auto:
                entry[axis] = Dim.DYNAMIC
            else:
                entry[axis] = dims.setdefault(axis, Dim(AXIS_NAMES.get(axis, f"dim{axis}"), min=1, max=1 << 16))
        shapes.append(entry)
    return tuple(shapes)


def _quiet() -> None:
    for name in ("torch.onnx", "torch._dynamo", "torch.export", "torch._export", "onnxscript", "torch.fx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _export_torch(source: Source, out_file: Path, opset: int | None) -> list[Path]:
    import torch

    _quiet()
    model = source.model
    args = _example_args(source)
    names = [s.name for s in source.inputs]
    kwargs: dict[str, Any] = {
        "input_names": names,
        "output_names": source.output_names,
        "opset_version": opset,
        "dynamo": True,
        "verbose": False,
    }
    if not isinstance(model, torch.export.ExportedProgram):
        kwargs["dynamic_shapes"] = _dynamic_shapes(source, auto=False)
    errors: list[str] = []
    program = None
    for attempt in ("named", "auto", "legacy"):
        try:
            if attempt == "auto" and "dynamic_shapes" in kwargs:
                kwargs["dynamic_shapes"] = _dynamic_shapes(source, auto=True)
            elif attempt == "auto":
                continue
            source.info["onnx_exporter"] = "torchscript" if attempt == "legacy" else f"dynamo ({attempt} dims)"
            if attempt == "legacy":
                program = _legacy_export(model, args, out_file, kwargs, source)
                break
            program = torch.onnx.export(model, args, **kwargs)
            break
        except Exception as exc:
            errors.append(f"{attempt}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
    else:
        raise ConversionError(
            "torch could not export the model to ONNX (" + " | ".join(errors) + ")",
            "check for unsupported ops or data-dependent control flow; try another --opset",
        )
    if program is None:
        return [out_file]
    params = sum(p.numel() * p.element_size() for p in _parameters(model))
    external = params > EXTERNAL_DATA_BYTES
    program.save(str(out_file), external_data=external)
    data = out_file.with_name(out_file.name + ".data")
    return [out_file, data] if external and data.exists() else [out_file]


def _parameters(model: Any) -> list[Any]:
    if hasattr(model, "parameters"):
        return list(model.parameters())
    if hasattr(model, "state_dict"):
        return [t for t in model.state_dict().values() if hasattr(t, "numel")]
    return []


def _legacy_export(model: Any, args: tuple[Any, ...], out_file: Path, kwargs: dict[str, Any], source: Source) -> None:
    """TorchScript archives the dynamo path cannot take go through the TorchScript exporter."""
    import torch

    if isinstance(model, torch.export.ExportedProgram):
        raise RuntimeError("no legacy path for ExportedProgram")
    axes = {s.name: {a: AXIS_NAMES.get(a, f"dim{a}") for a in s.dynamic_axes} for s in source.inputs}
    for name in source.output_names:
        axes[name] = {0: "batch"}
    torch.onnx.export(
        model,
        args,
        str(out_file),
        input_names=kwargs["input_names"],
        output_names=kwargs["output_names"],
        opset_version=kwargs["opset_version"] or 17,
        dynamo=False,
        dynamic_axes=axes,
    )
