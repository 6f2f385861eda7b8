"""The PyInstaller binary with all four runtimes: build it from the minimal venv, then smoke-test both variants.

The build compiles a portable llama-cpp-python wheel the first time on a machine (about 10 minutes on 2 cores); it is
kept in ~/.cache/edge-runner/wheels (see build/build_binary.sh), so later runs, fresh clones included, reuse it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, ServerProcess

NAME = f"edge-runner-linux-{platform.machine()}"
ONE_FILE = ROOT / "dist" / NAME
ONE_FOLDER = ROOT / "dist" / f"{NAME}.d" / "edge-runner"
MAX_BYTES = 150 * 1000 * 1000
DEFAULTS = ["digits", "digits-openvino", "digits-tflite", "tiny-llm"]


@pytest.fixture(scope="module")
def binary() -> Path:
    """The one-file binary (the one-folder variant is built beside it)."""
    result = subprocess.run(
        ["bash", str(ROOT / "build" / "build_binary.sh")], capture_output=True, text=True, timeout=2700, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert ONE_FILE.is_file() and ONE_FOLDER.is_file()
    return ONE_FILE


@pytest.mark.slow
def test_one_file_fits_the_size_budget(binary: Path) -> None:
    assert binary.stat().st_size <= MAX_BYTES, f"{binary} is {binary.stat().st_size / 1e6:.1f} MB"


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["one-file", "one-folder"])
def test_smoke_script_passes(binary: Path, variant: str) -> None:
    """build/smoke_binary.sh: every runtime answers as the Python package does, CLI verbs work."""
    program = binary if variant == "one-file" else ONE_FOLDER
    env = {**os.environ, "EDGE_RUNNER_SMOKE_PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(ROOT / "build" / "smoke_binary.sh"), str(program)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "FAIL" not in result.stdout


@pytest.mark.slow
def test_binary_serves_digits(
    binary: Path, start_server: Callable[..., ServerProcess], digits_holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    server = start_server("--models", "digits", command=[str(binary)])
    x, y = digits_holdout
    body = json.dumps(
        {"inputs": [{"name": "input", "shape": [16, 1, 8, 8], "datatype": "FP32", "data": x[:16].ravel().tolist()}]}
    ).encode()
    with urllib.request.urlopen(urllib.request.Request(server.url + "/v2/models/digits/infer", data=body)) as resp:
        out = json.loads(resp.read())["outputs"][0]
    logits = np.array(out["data"]).reshape(out["shape"])
    assert (logits.argmax(1) == y[:16]).mean() >= 0.9


@pytest.mark.slow
def test_binary_cli_verbs_work_without_python(binary: Path, tmp_path: Path) -> None:
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "edge-runner" in version.stdout
    listed = subprocess.run(
        [str(binary), "models", "--model-repository", str(tmp_path), "--json", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0
    assert json.loads(listed.stdout) == [{"name": name, "versions": [1], "source": "embedded"} for name in DEFAULTS]
    # signed bundles from the binary: keygen, export --sign, import --verify (cryptography is frozen in)
    models = [str(binary), "models", "--model-repository", str(tmp_path)]
    keys = subprocess.run([*models, "keygen", "--out", str(tmp_path / "k")], capture_output=True, text=True)
    assert keys.returncode == 0, keys.stderr
    bundle = tmp_path / "digits.tar.gz"
    export = [*models, "export", "digits", "--out", str(bundle), "--sign", str(tmp_path / "k.key")]
    assert subprocess.run(export, capture_output=True, text=True, timeout=60).returncode == 0
    verify = [*models, "import", str(bundle), "--name", "copy", "--verify", str(tmp_path / "k.pub")]
    imported = subprocess.run(verify, capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    assert (tmp_path / "copy" / "1" / "manifest.json").is_file()
    convert = subprocess.run([str(binary), "convert", "x", "--to", "onnx"], capture_output=True, text=True, timeout=60)
    assert convert.returncode == 2 and "not part of this binary" in convert.stderr
