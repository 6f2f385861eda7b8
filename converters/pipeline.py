"""The conversion pipeline: load, build, check parity, write manifest, publish atomically, register."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.build import COMPARE_DIR, Artifact, BuildRequest, build_artifact
from converters.calibration import parity_feeds
from converters.errors import ConversionError, ParityError
from converters.options import ConvertOptions
from converters.presets import get_preset, int8_flavour
from converters.progress import Progress
from converters.sources.base import Feeds, Source
from edge_runner.core.manifest import Manifest, write_manifest
from edge_runner.core.parity import ParityReport

if TYPE_CHECKING:
    from converters.parity import Evaluate

STEPS = 5


def default_out(opts: ConvertOptions, quantization: str) -> Path:
    """``<src-stem>-<target>[-<quant>]`` beside the current directory."""
    stem = Path(opts.src.split(":")[0]).stem or "model"
    suffix = "" if quantization == "none" else f"-{quantization}"
    return Path(f"{stem}-{opts.to}{suffix}")


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())):
        raise ConversionError(
            f"--out {out} exists and is not an earlier conversion output", "choose an empty or new --out folder"
        )


def _request(opts: ConvertOptions, quantization: str, has_calibration: bool, progress: Progress) -> BuildRequest:
    preset = get_preset(opts.profile)
    if quantization == "q8_0":
        raise ConversionError("--quantize q8_0 is a GGUF format", "use it with --to gguf, or pick int8/fp16 here")
    if opts.to == "tflite" and quantization == "int8-static" and not has_calibration:
        raise ConversionError(
            "full-integer TFLite needs a representative dataset, and none was given",
            "pass --calibration DATA, or use --quantize int8 for dynamic-range INT8",
        )
    flavour = quantization
    if quantization.startswith("int8"):
        flavour = int8_flavour(preset, opts.to, quantization, has_calibration)
        preferred = {"onnx": preset.onnx_int8, "openvino": preset.openvino_int8, "tflite": preset.tflite_int8}[opts.to]
        if quantization == "int8" and preferred != flavour:
            given = "with" if has_calibration else "without"
            progress.note(f"preset {preset.name} prefers {preferred} INT8; {given} --calibration using {flavour}")
    level = "int8" if quantization.startswith("int8") else quantization
    return BuildRequest(opts.to, level, flavour, preset, opts.opset)


def check_parity(
    source: Source, manifest: Manifest, folder: Path, artifact: Artifact, feeds: Feeds, evaluate: Evaluate | None = None
) -> ParityReport:
    """Run the source and the artifact (through its serving backend) on ``feeds``; the parity report."""
    from converters.parity import measure
    from edge_runner.core.errors import InvalidInput

    try:
        return measure(
            source, manifest, folder, feeds, artifact.size_bytes, evaluate, artifact.flavour_label, artifact.compare
        )
    except (ValueError, InvalidInput) as exc:
        raise ConversionError(
            f"the artifact does not match the source: {exc}", "report this model as unsupported"
        ) from exc


def _parity_inputs(opts: ConvertOptions, source: Source, calibration: list[Feeds]) -> Feeds:
    if opts.parity_data is None:
        return parity_feeds(source, calibration, opts.samples)
    from converters.calibration import MAX_PARITY_SAMPLES, load_calibration, stack

    return stack(load_calibration(opts.parity_data, source.inputs, MAX_PARITY_SAMPLES, "--parity-data"))


def _publish(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def convert(opts: ConvertOptions, progress: Progress, evaluate: Evaluate | None = None) -> dict[str, Any]:
    """Run one conversion; returns the result (out folder, manifest, registration).

    ``evaluate(source_outputs, artifact_outputs)`` (scripts only) adds its numbers to the report's
    ``details``, e.g. held-out accuracy when the parity inputs are a labelled held-out set.
    """
    from converters.manifest_writer import conversion_manifest

    quantization = opts.quantize or get_preset(opts.profile).default_quantization
    out = (opts.out or default_out(opts, quantization)).resolve()
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        progress.step(f"loading {opts.src}")
        source = _load(opts)
        calibration, from_texts = _calibration(opts, source, quantization, progress)
        req = _request(opts, quantization, bool(calibration), progress)
        tmp.mkdir()
        progress.step(
            f"building {opts.to} ({req.quantization}{'' if req.flavour == req.quantization else ', ' + req.flavour})"
        )
        artifact = build_artifact(source, req, tmp, calibration)
        progress.step("checking parity against the source through the serving backend")
        draft = conversion_manifest(opts, out, tmp, source, artifact)
        # texts tokenized one by one differ in length: parity runs the padded batch of sample texts instead
        feeds = _parity_inputs(opts, source, [] if from_texts else calibration)
        report = check_parity(source, draft, tmp, artifact, feeds, evaluate)
        shutil.rmtree(tmp / COMPARE_DIR, ignore_errors=True)
        progress.step("writing manifest")
        manifest = replace(draft, parity=report.to_json())
        write_manifest(tmp, manifest)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not report.passed and not opts.allow_drift:
        # The folder stays for inspection (its manifest says passed: false) but is never registered.
        raise ParityError(list(report.failures), report.to_json())
    result: dict[str, Any] = {"status": "ok", "out": str(out), "manifest": manifest.to_json()}
    progress.step("registering" if opts.register else "done")
    if opts.register:
        result["registered"] = _register(opts, out)
    return result


def _load(opts: ConvertOptions) -> Source:
    from converters.sources import load_source

    return load_source(opts)


def _calibration(
    opts: ConvertOptions, source: Source, quantization: str, progress: Progress
) -> tuple[list[Feeds], bool]:
    """Calibration samples and whether they came from texts (--calibration-texts or the built-in ones)."""
    from converters import calibration as cal

    if opts.calibration is not None and opts.calibration_texts is not None:
        raise ConversionError(
            "--calibration and --calibration-texts both given", "give one: samples (.npy/.npz) or texts"
        )
    if opts.calibration is not None:
        return cal.load_calibration(opts.calibration, source.inputs), False
    if not quantization.startswith("int8"):
        if opts.calibration_texts is not None:
            progress.note(f"--calibration-texts is only used by INT8; --quantize {quantization} ignores it")
        return [], False
    if opts.calibration_texts is not None:
        return cal.text_calibration(source, cal.read_texts(opts.calibration_texts)), True
    if source.tokenize is not None and _wants_static(opts, quantization):
        count = len(cal.DEFAULT_CALIBRATION_TEXTS)
        progress.note(f"static INT8 calibrated on {count} built-in texts; --calibration-texts FILE for your own")
        return cal.text_calibration(source, cal.DEFAULT_CALIBRATION_TEXTS), True
    return [], False


def _wants_static(opts: ConvertOptions, quantization: str) -> bool:
    """int8-static, or int8 under a preset whose INT8 flavour for the target needs calibration."""
    if quantization == "int8-static":
        return True
    if quantization != "int8" or opts.to not in ("onnx", "openvino"):
        return False
    preset = get_preset(opts.profile)
    return (preset.onnx_int8 if opts.to == "onnx" else preset.openvino_int8) in ("static", "full")


def _register(opts: ConvertOptions, out: Path) -> dict[str, Any]:
    from edge_runner.config.settings import load_config
    from edge_runner.repository.store import ModelRepository

    root = opts.model_repository or str(load_config({}, os.environ).settings.repository_root())
    manifest = ModelRepository(Path(root)).add(out, str(opts.register))
    return {"repository": str(root), "name": manifest.name, "version": manifest.version}
