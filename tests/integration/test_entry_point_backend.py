"""A third-party backend installed through the ``edge_runner.backends`` entry-point group works end to end.

The test installs a tiny distribution (a package plus its ``.dist-info`` with ``entry_points.txt``) into a
folder on ``PYTHONPATH``: the same discovery pip-installed plugins get. Its backend serves ``.npy`` matrices
(``y = x @ W * scale``) straight from ``--model-path``, reads ``scale`` from its own profile table, and shows
up in ``doctor``. Nothing in edge-runner names it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ServerProcess, free_env

PLUGIN = """
from __future__ import annotations

import numpy as np

from edge_runner.backends.base import Backend, Capabilities, ModelMetadata, ProbeResult
from edge_runner.core.errors import ModelLoadError
from edge_runner.core.manifest import TensorSpec
from edge_runner.core.schema import STRINGS, number


class NpyMatmulBackend(Backend):
    name = "npy_matmul"
    formats = ("npy",)
    suffixes = (".npy",)
    artifact_formats = {".npy": "npy"}
    option_schema = {"devices": STRINGS, "scale": number}

    @classmethod
    def probe(cls):
        return ProbeResult(True, version="0.1", devices=("CPU",))

    def load(self):
        try:
            self.weights = np.load(self.folder / self.manifest.primary_file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read the matrix: {exc}") from exc
        self.scale = float(self.options.options.get("scale", 1.0))

    def metadata(self):
        rows, cols = self.weights.shape
        return ModelMetadata(
            (TensorSpec("x", "FP32", (-1, rows)),), (TensorSpec("y", "FP32", (-1, cols)),), Capabilities()
        )

    def infer(self, inputs, outputs=None):
        return {"y": (inputs["x"] @ self.weights * self.scale).astype(np.float32)}

    def unload(self):
        self.weights = None
"""


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    (site / "npy_plugin").mkdir(parents=True)
    (site / "npy_plugin" / "__init__.py").write_text(PLUGIN)
    info = site / "npy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: npy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[edge_runner.backends]\nnpy_matmul = npy_plugin:NpyMatmulBackend\n")
    env = free_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _edge_runner(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_runner", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_entry_point_backend_serves_from_model_path_with_its_profile_table(
    tmp_path: Path, plugin_env: dict[str, str], start_server: Callable[..., ServerProcess]
) -> None:
    weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 7.0
    np.save(tmp_path / "matrix.npy", weights)
    profile = tmp_path / "plugin.toml"
    profile.write_text(
        textwrap.dedent("""
        [profile]
        description = "cpu plus a plugin"
        [npy_matmul]
        scale = 2.5
    """)
    )
    server = start_server(
        "--model-name", "mm", "--model-path", str(tmp_path / "matrix.npy"), "--profile", str(profile), env=plugin_env
    )
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    body = {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
    request = urllib.request.Request(server.url + "/v2/models/mm/infer", data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=30) as resp:
        out = json.loads(resp.read())["outputs"][0]
    np.testing.assert_allclose(np.array(out["data"]).reshape(out["shape"]), x @ weights * 2.5, rtol=1e-5)
    with urllib.request.urlopen(server.url + "/v2/models/mm", timeout=30) as resp:
        assert json.loads(resp.read())["platform"].startswith("npy_matmul")


def test_entry_point_backend_table_is_validated_and_probed(tmp_path: Path, plugin_env: dict[str, str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[npy_matmul]\nscale = 'big'\n")
    result = _edge_runner(plugin_env, "config", "--show", "--profile", str(bad))
    assert result.returncode == 2 and "npy_matmul.scale: expected a number" in result.stderr
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[npy_matmul]\nwidth = 3\n")
    result = _edge_runner(plugin_env, "config", "--show", "--profile", str(unknown))
    assert result.returncode == 2 and "unknown key npy_matmul.width" in result.stderr
    doctor = _edge_runner(plugin_env, "doctor", "--json")
    assert doctor.returncode == 0, doctor.stderr
    assert json.loads(doctor.stdout)["runtimes"]["npy_matmul"] == {
        "available": True,
        "version": "0.1",
        "devices": ["CPU"],
        "reason": "",
    }
    # without the plugin the same table is an unknown table
    plain = _edge_runner(free_env(tmp_path), "config", "--show", "--profile", str(bad))
    assert plain.returncode == 2 and "unknown table [npy_matmul]" in plain.stderr
