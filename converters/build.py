"""Build the artifact for a target into a folder: export, then quantize as asked."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters.errors import ConversionError
from converters.presets import Preset
from converters.sources.base import Feeds, Source

#: sub-folder of the build folder holding ``Artifact.compare`` files; removed before the folder is published
COMPARE_DIR = ".compare"


@dataclass
class Artifact:
    """Files written for a target; ``files[0]`` is the one the runtime opens."""

    format: str
    files: list[Path]
    quantization: str
    detail: dict[str, Any] = field(default_factory=dict)
    #: other INT8 flavours of the same model, built only to be compared in the parity report (in COMPARE_DIR)
    compare: dict[str, Path] = field(default_factory=dict)

    @property
    def flavour_label(self) -> str:
        """``none``, ``fp16``, ``int8-static``, ``int8-dynamic``, ``int8-full``, ``int8-weights``, ..."""
        flavour = self.detail.get("flavour", self.quantization)
        return self.quantization if flavour == self.quantization else f"{self.quantization}-{flavour}"

    @property
    def primary(self) -> Path:
        return self.files[0]

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files if p.exists())


@dataclass(frozen=True)
class BuildRequest:
    """What to build: target, quantization level and resolved flavour."""

    target: str
    quantization: str
    flavour: str
    preset: Preset
    opset: int | None = None


def build_artifact(source: Source, req: BuildRequest, folder: Path, calibration: list[Feeds]) -> Artifact:
    """Export ``source`` into ``folder`` for ``req.target``."""
    if req.target == "onnx":
        return _build_onnx(source, req, folder, calibration)
    if req.target == "openvino":
        return _build_openvino(source, req, folder, calibration)
    if req.target == "tflite":
        if source.framework != "tensorflow":
            raise ConversionError(
                f"--to tflite needs a TensorFlow/Keras source, got a {source.kind} model",
                "convert TensorFlow SavedModels or Keras files to TFLite; use --to onnx or openvino for this one",
            )
        from converters.targets.tflite_target import write_tflite

        files = write_tflite(source, folder / "model.tflite", req.quantization, req.flavour, calibration)
        return Artifact("tflite", files, req.quantization, {"flavour": req.flavour})
    raise ConversionError(f"unknown target {req.target!r}", "use --to onnx, openvino, tflite or gguf")


def _build_onnx(source: Source, req: BuildRequest, folder: Path, calibration: list[Feeds]) -> Artifact:
    from converters.targets import onnx_quant
    from converters.targets.onnx_export import export_onnx

    final = folder / "model.onnx"
    detail: dict[str, Any] = {"flavour": req.flavour, "preset": req.preset.name}
    compare: dict[str, Path] = {}
    text = onnx_quant.is_text_transformer(source)
    if req.quantization == "none":
        files = export_onnx(source, final, req.opset)
    else:
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".work-") as work:
            fp32 = Path(work) / "fp32.onnx"
            export_onnx(source, fp32, req.opset)
            static_settings = {**req.preset.onnx_settings, "text_transformer": text}
            if req.quantization == "fp16":
                onnx_quant.to_fp16(fp32, final)
            elif req.flavour == "static":
                detail["settings"] = static_settings
                onnx_quant.int8_static(fp32, final, calibration, static_settings)
            else:
                detail["settings"] = {"per_channel": req.preset.onnx_settings.get("per_channel", True)}
                onnx_quant.int8_dynamic(fp32, final, req.preset.onnx_settings)
            if req.quantization == "int8" and text and source.task == "feature-extraction":
                try:
                    compare = _other_flavour(source, req, fp32, folder / COMPARE_DIR, calibration, static_settings)
                except Exception as exc:  # only a comparison for the report: the artifact stands; say why it is missing
                    detail["compare_failed"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        files = [final]
    detail["opset"] = _opset(final)
    return Artifact("onnx", files, req.quantization, detail, compare)


def _other_flavour(
    source: Source, req: BuildRequest, fp32: Path, folder: Path, calibration: list[Feeds], settings: dict[str, Any]
) -> dict[str, Path]:
    """The INT8 flavour not asked for (dynamic beside static and vice versa), for the parity report only."""
    from converters.calibration import DEFAULT_CALIBRATION_TEXTS, text_calibration
    from converters.targets import onnx_quant

    folder.mkdir(exist_ok=True)
    if req.flavour == "static":
        other = folder / "int8-dynamic.onnx"
        onnx_quant.int8_dynamic(fp32, other, req.preset.onnx_settings)
        return {"int8-dynamic": other}
    other = folder / "int8-static.onnx"
    onnx_quant.int8_static(fp32, other, calibration or text_calibration(source, DEFAULT_CALIBRATION_TEXTS), settings)
    return {"int8-static": other}


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _build_openvino(source: Source, req: BuildRequest, folder: Path, calibration: list[Feeds]) -> Artifact:
    from converters.targets.onnx_export import export_onnx
    from converters.targets.openvino_target import convert_to_ir, write_ir

    flavour = req.flavour if req.quantization == "int8" else req.quantization
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".work-") as work:
        if source.framework == "tensorflow":
            model = convert_to_ir(source.model.saved_model)
        else:
            onnx_file = Path(work) / "model.onnx"
            export_onnx(source, onnx_file, req.opset)
            model = convert_to_ir(onnx_file)
        files = write_ir(model, folder, flavour, calibration, source.task)
    return Artifact("openvino", files, req.quantization, {"flavour": flavour, "preset": req.preset.name})
