"""``--to gguf``: hand off to the GGUF converter (``converters.gguf``), publishing atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from converters.errors import ConversionError, ParityError
from converters.options import ConvertOptions
from converters.pipeline import _check_out, _publish, _register, default_out
from converters.progress import Progress
from edge_runner.core.parity import ParityReport


def _converter() -> Any:
    try:
        from converters.gguf import convert_to_gguf
    except ImportError as exc:
        raise ConversionError(
            f"GGUF conversion is not available in this installation ({exc})",
            "install the convert extra (pip install 'edge-runner[convert]'), or use --to onnx",
        ) from exc
    return convert_to_gguf


def convert_gguf(opts: ConvertOptions, progress: Progress) -> dict[str, Any]:
    """Convert a Hugging Face folder to GGUF (F16 / Q8_0) into ``--out``; register if asked."""
    convert_to_gguf = _converter()
    if opts.calibration or opts.calibration_texts or opts.example_inputs or opts.state_dict:
        raise ConversionError(
            "--calibration, --calibration-texts, --example-input and --state-dict do not apply to --to gguf",
            "drop them; GGUF conversion reads a Hugging Face folder as is",
        )
    src = Path(opts.src)
    if not (src.is_dir() and (src / "config.json").is_file()):
        raise ConversionError(f"{src} is not a Hugging Face model folder", "--to gguf needs a folder with config.json")
    quantize = opts.quantize or "q8_0"
    if quantize.startswith("int8"):
        quantize = "q8_0"
    out = (opts.out or default_out(opts, quantize)).resolve()
    _check_out(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    failures: list[str] = []
    progress.step(f"converting {src} to GGUF ({quantize})")
    try:
        try:
            manifest = convert_to_gguf(
                src, tmp, quantize, name=opts.name or opts.register or out.name, allow_drift=True
            )
        except (ValueError, FileNotFoundError) as exc:
            raise ConversionError(
                str(exc).splitlines()[0], "give a supported Hugging Face folder and --quantize"
            ) from exc
        report = ParityReport.from_json(manifest.parity)
        if not report.passed:
            failures = list(report.failures) or ["GGUF parity below threshold"]
        progress.step("publishing")
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures and not opts.allow_drift:
        raise ParityError(failures, manifest.parity)
    result: dict[str, Any] = {"status": "ok", "out": str(out), "manifest": manifest.to_json()}
    progress.step("registering" if opts.register else "done")
    if opts.register:
        result["registered"] = _register(opts, out)
    return result
