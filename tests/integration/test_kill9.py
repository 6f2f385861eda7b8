"""kill -9 at random moments never leaves a half-visible or corrupt model in the repository.

Each run starts ``models add`` (or ``models import`` of a bundle) of a ~24 MB model into a repository that
already holds one good version, kills it with SIGKILL after a random delay, then checks the repository as a
fresh process sees it: every visible model has versions, every visible version's files match their manifest,
and a later add or import still works.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from edge_runner.core.manifest import file_entry, read_manifest, verify_files, write_manifest
from edge_runner.repository.store import ModelRepository
from tests.conftest import free_env, write_fake_model

RUNS = 20


def _big_model(tmp: Path) -> Path:
    folder = write_fake_model(tmp / "src", "big")
    (folder / "weights.fake").write_bytes(os.urandom(24 * 2**20))
    manifest = read_manifest(folder)
    write_manifest(folder, replace(manifest, files=(file_entry(folder, "weights.fake"),)))
    return folder


def _check(repo_root: Path) -> list[str]:
    repo = ModelRepository(repo_root)
    problems = []
    for name in repo.list_models():
        versions = repo.versions(name)
        if not versions:
            problems.append(f"{name}: visible with no version")
        for version in versions:
            try:
                folder, manifest = repo.resolve(name, version)
                verify_files(folder, manifest)
            except Exception as exc:  # any failure here is the finding, reported below
                problems.append(f"{name} v{version}: {exc}")
    return problems


@pytest.mark.slow
def test_kill_9_during_models_add(tmp_path: Path) -> None:
    source = _big_model(tmp_path)
    env = free_env(tmp_path)
    repo_root = Path(env["EDGE_RUNNER_MODEL_REPOSITORY"])
    cli = [sys.executable, "-m", "edge_runner", "models"]
    subprocess.run([*cli, "add", str(source), "--name", "big"], env=env, check=True, capture_output=True)
    rng = random.Random(1234)
    outcomes = []
    for _ in range(RUNS):
        proc = subprocess.Popen([*cli, "add", str(source), "--name", "big"], env=env, stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 1.2))
        proc.send_signal(signal.SIGKILL)
        outcomes.append(proc.wait(30))
        assert _check(repo_root) == [], outcomes
    assert -signal.SIGKILL in outcomes  # some runs were really cut short
    after = subprocess.run([*cli, "--json", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert after.returncode == 0, after.stderr
    done = subprocess.run([*cli, "add", str(source), "--name", "big"], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0 and _check(repo_root) == []


@pytest.mark.slow
def test_kill_9_during_models_import(tmp_path: Path) -> None:
    """The same for ``models import`` of an offline bundle (streamed into the repository's locked temp folder)."""
    source = _big_model(tmp_path)
    env = free_env(tmp_path)
    repo_root = Path(env["EDGE_RUNNER_MODEL_REPOSITORY"])
    cli = [sys.executable, "-m", "edge_runner", "models"]
    subprocess.run([*cli, "add", str(source), "--name", "big"], env=env, check=True, capture_output=True)
    bundle = tmp_path / "big.tar.gz"
    subprocess.run([*cli, "export", "big", "--out", str(bundle)], env=env, check=True, capture_output=True)
    rng = random.Random(4321)
    outcomes = []
    for run in range(RUNS):
        cmd = [*cli, "import", str(bundle), "--name", f"copy{run % 3}"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(signal.SIGKILL)
        outcomes.append(proc.wait(30))
        assert _check(repo_root) == [], outcomes
    assert -signal.SIGKILL in outcomes
    done = subprocess.run([*cli, "import", str(bundle), "--name", "final"], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _check(repo_root) == [] and (repo_root / "final" / "1" / "manifest.json").is_file()


@pytest.mark.slow
def test_kill_9_of_the_server_during_start_up_loads(tmp_path: Path) -> None:
    """The server writes only its caches (ORT optimized graphs, by temp file and rename): killed at any moment
    of start-up, the next start serves the same answers from a repository and cache that still verify."""
    import json
    import urllib.request

    from edge_runner.core.paths import DEFAULTS_DIR

    env = free_env(tmp_path)
    repo_root = Path(env["EDGE_RUNNER_MODEL_REPOSITORY"])
    cli = [sys.executable, "-m", "edge_runner"]
    subprocess.run([*cli, "models", "add", str(DEFAULTS_DIR / "digits" / "1"), "--name", "d"], env=env, check=True)
    rng = random.Random(99)
    for _ in range(RUNS):
        proc = subprocess.Popen(
            [*cli, "serve", "--port", "0", "--no-load-defaults"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.2, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert _check(repo_root) == []
    ready = tmp_path / "port"
    proc = subprocess.Popen([*cli, "serve", "--port", "0", "--no-load-defaults", "--ready-file", str(ready)], env=env)
    try:
        body = json.dumps(
            {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.25] * 64}]}
        ).encode()
        deadline, answer = time.monotonic() + 60, None
        while answer is None and time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{ready.read_text()}/v2/models/d/infer"
                with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=5) as resp:
                    answer = json.loads(resp.read())["outputs"][0]["data"]
            except (OSError, ValueError):
                time.sleep(0.2)
        assert answer is not None
        import numpy as np
        import onnxruntime as ort

        session = ort.InferenceSession(str(DEFAULTS_DIR / "digits" / "1" / "model.onnx"))
        expected = session.run(None, {"input": np.full((1, 1, 8, 8), 0.25, np.float32)})[0].ravel()
        np.testing.assert_allclose(np.array(answer), expected, rtol=1e-4, atol=1e-5)
        caches = list(Path(env["EDGE_RUNNER_CACHE_DIR"]).rglob("*.onnx"))
        leftovers = list(Path(env["EDGE_RUNNER_CACHE_DIR"]).rglob("*.tmp"))
        assert caches and all(p.stat().st_size > 0 for p in caches), (caches, leftovers)
    finally:
        proc.terminate()
        proc.wait(30)
