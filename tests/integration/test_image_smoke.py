"""The amd64 and cuda container images answer the seed's `docker run` line (podman, read-only root, non-root user).

Runs ``build/build_images.sh --smoke-only <arch>`` against an image built before (``make image``;
``build/build_images.sh cuda``); it never builds one (too slow for ``make test``). Skipped when podman is missing,
when not root (podman as configured by the script runs rootful), or when ``localhost/edge-runner:<arch>`` does not
exist. The cuda image runs without a GPU here: its ``cuda`` profile must fall back to the CPU and answer the same.
The checks themselves (answers compared with ONNX Runtime run here, chat text, /metrics, HEALTHCHECK, uid) are
in build/smoke_image.py and the script.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

from tests.conftest import ROOT

CONF = ROOT / "build" / "work" / "images" / "containers.conf"

pytestmark = pytest.mark.slow


def _image_present(image: str) -> bool:
    env = {**os.environ, "CONTAINERS_CONF": str(CONF)} if CONF.is_file() else dict(os.environ)
    found = subprocess.run(["podman", "image", "exists", image], env=env, capture_output=True, timeout=60)
    return found.returncode == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("arch", ["amd64", "cuda"])
def test_seed_run_line_against_the_image(arch: str) -> None:
    image = f"localhost/edge-runner:{arch}"
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install podman runc)")
    if os.geteuid() != 0:
        pytest.skip("the image smoke runs rootful podman: run as root")
    if not _image_present(image):
        pytest.skip(f"{image} does not exist: build it with `bash build/build_images.sh {arch}`")
    env = {**os.environ, "EDGE_RUNNER_SMOKE_PORT": str(_free_port())}
    result = subprocess.run(
        ["bash", str(ROOT / "build" / "build_images.sh"), "--smoke-only", arch],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    for line in (
        "ok    v2 infer digits == ONNX Runtime here",
        "ok    chat completion: 200 with text",
        "ok    GET /v2/health/ready: 200",
        "healthcheck: healthy",
        "uid=10001(edge)",
        "read-only=true",
    ):
        assert line in out, line
    assert "FAIL" not in out, out[-4000:]
