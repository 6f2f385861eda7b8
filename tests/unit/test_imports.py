"""The CLI must start without importing any heavy runtime."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["torch", "tensorflow", "onnxruntime", "openvino", "llama_cpp", "converters", "transformers"]


def test_importing_cli_loads_no_runtime() -> None:
    probe = f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    code = f"import sys, json; import edge_runner.cli.main; {probe}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_help_runs_without_runtimes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edge_runner", "serve", "--help"], capture_output=True, text=True, check=True
    )
    assert "--max-batch-size" in out.stdout and "--enable-metrics" in out.stdout and "--model-path" in out.stdout
