"""The PyInstaller single binary: build it from the minimal venv, serve digits, answer an infer."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, ServerProcess

BINARY = ROOT / "dist" / "edge-runner"


@pytest.fixture(scope="module")
def binary() -> Path:
    result = subprocess.run(
        ["bash", str(ROOT / "build" / "build_binary.sh")], capture_output=True, text=True, timeout=1500, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert BINARY.is_file()
    return BINARY


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
    assert json.loads(listed.stdout) == [{"name": "digits", "versions": [1], "source": "embedded"}]
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
