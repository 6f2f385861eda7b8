"""``edge-runner convert``: offline conversion with a parity report.

Only the standard library is imported at module import time; torch, TensorFlow,
ONNX Runtime and OpenVINO load inside the functions that need them, so that
``edge-runner --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from converters.errors import EXIT_BAD_INPUT, EXIT_OK, ConversionError, ParityError
from converters.options import QUANTIZATIONS, TARGETS, ConvertOptions, parse_example_input
from converters.presets import PRESETS, describe

EXIT_RUNTIME = 1  # the runtime failed on a valid-looking input

EPILOG = """\
exit codes: 0 converted and parity passed; 2 bad input or unsupported model (one-line cause and fix);
3 parity thresholds missed (the output folder is kept with passed=false and is not registered);
1 the runtime failed on the model (one line, no traceback).

examples:
  edge-runner convert ./minilm --to onnx --quantize int8 --out minilm-int8
  edge-runner convert model.pt --to openvino --example-input image:float32:1x3x224x224
  edge-runner convert net.py:Net --state-dict net.pth --to onnx --example-input x:float32:1x16
  edge-runner convert mobilenet.keras --to tflite --quantize int8 --calibration samples.npz
  edge-runner convert ./minilm --to onnx --quantize int8-static --calibration-texts texts.txt
"""


_HELP_QUANTIZE = (
    "none (FP32), fp16, int8 (flavour from --profile: static with --calibration or --calibration-texts, "
    "else dynamic / weight-only), int8-dynamic, int8-static (needs --calibration; text models: built-in "
    "texts by default); GGUF: f16, f32, q8_0, q4_0, q4_k_m, q5_k_m, q6_k. "
    "Default: the profile's preset, else none (q8_0 for GGUF)"
)
_HELP_SRC = (
    "TorchScript .pt, torch.export .pt2, module.py:ClassName, TF SavedModel folder, Keras .keras/.h5, "
    "Hugging Face model folder, or an .onnx file"
)
# One row per flag: (names, argparse keyword arguments). --help is generated from this table.
FLAGS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("src",), {"metavar": "SRC", "help": _HELP_SRC}),
    (("--to",), {"required": True, "choices": TARGETS, "help": "target format"}),
    (("--quantize",), {"choices": QUANTIZATIONS, "default": None, "help": _HELP_QUANTIZE}),
    (
        ("--calibration",),
        {
            "metavar": "DATA",
            "type": Path,
            "help": "calibration samples: .npy (one input), .npz "
            "(arrays named after the inputs) or a folder of them, samples along axis 0; also used "
            "as parity inputs",
        },
    ),
    (
        ("--calibration-texts",),
        {
            "metavar": "FILE",
            "type": Path,
            "help": "text models (Hugging Face folders): calibration texts, one a line, for static INT8 "
            "(--quantize int8 then picks static); --quantize int8-static without it uses built-in varied texts",
        },
    ),
    (
        ("--out",),
        {
            "metavar": "DIR",
            "type": Path,
            "help": "output folder (default: <src>-<target>[-<quant>]); "
            "written to a temp folder beside it and renamed when complete",
        },
    ),
    (("--register",), {"metavar": "NAME", "help": "import the result into the model repository as NAME"}),
    (
        ("--model-repository",),
        {
            "metavar": "DIR",
            "type": Path,
            "help": "repository for --register (default: $EDGE_RUNNER_MODEL_REPOSITORY or the XDG data dir)",
        },
    ),
    (("--opset",), {"metavar": "N", "type": int, "help": "ONNX opset (default: the exporter's)"}),
    (
        ("--task",),
        {
            "metavar": "T",
            "help": "model task: feature-extraction, text-classification, "
            "image-classification, text-generation (Hugging Face folders detect it from config.json)",
        },
    ),
    (
        ("--example-input",),
        {
            "metavar": "NAME:DTYPE:DIMS",
            "action": "append",
            "default": [],
            "help": "an input of the model, e.g. image:float32:1x3x224x224 (repeat per input; "
            "axis 0 is the dynamic batch axis); required for TorchScript and module.py sources",
        },
    ),
    (
        ("--state-dict",),
        {
            "metavar": "FILE",
            "type": Path,
            "help": "weights for module.py:ClassName, read with torch.load(weights_only=True) or safetensors",
        },
    ),
    (
        ("--profile",),
        {
            "metavar": "P",
            "choices": [*PRESETS, "auto"],
            "help": "hardware preset choosing the INT8 flavour: " + describe(),
        },
    ),
    (("--samples",), {"metavar": "N", "type": int, "default": 4, "help": "parity samples when no calibration"}),
    (
        ("--parity-data",),
        {
            "metavar": "DATA",
            "type": Path,
            "help": "inputs for the parity check, same layout as --calibration (e.g. a held-out set, up to "
            "1024 samples, all used); default: the calibration samples, else generated inputs",
        },
    ),
    (
        ("--name",),
        {"metavar": "NAME", "help": "model name in manifest.json (default: --register, else the --out folder name)"},
    ),
    (("--allow-drift",), {"action": "store_true", "help": "exit 0 even when parity thresholds are missed"}),
    (("--json",), {"action": "store_true", "help": "print the result (manifest and parity report) as JSON"}),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the convert verb, built from ``FLAGS``."""
    parser = argparse.ArgumentParser(
        prog="edge-runner convert",
        description="Convert a PyTorch, TensorFlow/Keras or Hugging Face model into an ONNX, OpenVINO IR, TFLite "
        "or GGUF artifact, check it against the source, and write manifest.json.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for names, kwargs in FLAGS:
        parser.add_argument(*names, **kwargs)
    return parser


def options_from_args(args: argparse.Namespace) -> ConvertOptions:
    """ConvertOptions from parsed arguments (validates the example inputs)."""
    return ConvertOptions(
        src=args.src,
        to=args.to,
        quantize=args.quantize,
        calibration=args.calibration,
        calibration_texts=args.calibration_texts,
        out=args.out,
        register=args.register,
        opset=args.opset,
        task=args.task,
        example_inputs=tuple(parse_example_input(t) for t in args.example_input),
        state_dict=args.state_dict,
        profile=args.profile,
        allow_drift=args.allow_drift,
        json=args.json,
        model_repository=args.model_repository,
        samples=max(1, args.samples),
        name=args.name,
        parity_data=args.parity_data,
    )


def _emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
        return
    from edge_runner.core.parity import ParityReport

    parity = result.get("manifest", {}).get("parity", {})
    if parity:
        for line in ParityReport.from_json(parity).summary_lines():
            print(line)
    print(f"wrote {result['out']}")
    if "registered" in result:
        reg = result["registered"]
        print(f"registered {reg['name']} v{reg['version']} in {reg['repository']}")


def _fail(code: int, message: str, as_json: bool, extra: dict[str, Any] | None = None) -> int:
    if as_json:
        print(json.dumps({"status": "error", "exit_code": code, "error": message, **(extra or {})}, default=str))
    print(f"edge-runner convert: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str]) -> int:
    """Run the convert verb; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else EXIT_BAD_INPUT
    try:
        opts = options_from_args(args)
        stdout = sys.stderr if opts.json else sys.stdout
        with contextlib.redirect_stdout(stdout):
            result = run_conversion(opts)
    except ConversionError as exc:
        return _fail(exc.exit_code, exc.one_line(), args.json)
    except ParityError as exc:
        return _fail(exc.exit_code, exc.one_line(), args.json, {"parity": exc.report})
    except Exception as exc:  # a runtime failed in a way we did not foresee: one line, never a traceback
        first = (str(exc).strip().splitlines() or [""])[0]
        message = f"conversion failed in the runtime ({type(exc).__name__}: {first}); check the source model"
        if "already quantized" in first or "DequantizeLinear" in first:
            message += " - it looks already quantized: convert the FP32 original instead"
        return _fail(EXIT_RUNTIME, message, args.json)
    _emit(result, opts.json)
    return EXIT_OK


def run_conversion(opts: ConvertOptions) -> dict[str, Any]:
    """One conversion as `edge-runner convert` runs it (GGUF handoff or the pipeline), progress on stderr."""
    from converters.progress import Progress

    gguf_only = {"f16", "f32", "q4_0", "q4_k_m", "q5_k_m", "q6_k"}
    if opts.to != "gguf" and (opts.quantize in gguf_only or opts.quantize == "q8_0"):
        raise ConversionError(
            f"--quantize {opts.quantize} is a GGUF quantization", f"use --to gguf, or none/fp16/int8 for --to {opts.to}"
        )

    if opts.to == "gguf":
        from converters.handoff import convert_gguf

        return convert_gguf(opts, Progress(3))
    from converters.pipeline import STEPS, convert

    progress = Progress(STEPS)
    try:
        return convert(opts, progress)
    finally:
        progress.finish()
