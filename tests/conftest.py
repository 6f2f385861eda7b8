"""Shared fixtures: settings, repositories, the digits held-out set, in-process apps and real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runner.config.profiles import load_profile
from edge_runner.config.settings import Settings
from edge_runner.core.manifest import Manifest, TensorSpec, write_manifest
from edge_runner.core.paths import DEFAULTS_DIR
from edge_runner.repository.store import ModelRepository
from edge_runner.serving.model_manager import ModelManager

ROOT = Path(__file__).resolve().parent.parent
#: in-process clients speak to a loopback-bound server as a local client does (see server/security.py)
LOCAL = {"Host": "localhost"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings isolated in tmp_path (repository and cache)."""
    return replace(
        Settings(), model_repository=str(tmp_path / "repo"), cache_dir=str(tmp_path / "cache"), load_defaults=True
    )


@pytest.fixture(scope="session")
def digits_holdout() -> tuple[np.ndarray, np.ndarray]:
    """The held-out digits the committed model never saw, rebuilt from its manifest."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    extra = json.loads((DEFAULTS_DIR / "digits" / "1" / "manifest.json").read_text())["extra"]["holdout"]
    data = load_digits()
    _, x_test, _, y_test = train_test_split(
        data.images, data.target, test_size=extra["test_size"], random_state=extra["random_state"], stratify=data.target
    )
    return (x_test / 16.0).astype(np.float32).reshape(-1, 1, 8, 8), y_test


def write_fake_model(root: Path, name: str, version: int = 1, **extra: Any) -> Path:
    """A fake-backend model folder (``y = x * scale``) in ``root``."""
    folder = root / name / str(version)
    folder.mkdir(parents=True)
    (folder / "weights.fake").write_bytes(b"fake")
    from edge_runner.core.manifest import file_entry

    manifest = Manifest(
        name=name,
        version=version,
        format="fake",
        backend="fake",
        files=(file_entry(folder, "weights.fake"),),
        inputs=(TensorSpec("x", "FP32", (-1, 4)),),
        outputs=(TensorSpec("y", "FP32", (-1, 4)),),
        extra=dict(extra),
    )
    write_manifest(folder, manifest)
    return folder


@pytest.fixture
def make_manager(settings: Settings) -> Iterator[Callable[..., ModelManager]]:
    """Factory of managers over the tmp repository (+ embedded defaults); closes them after the test."""
    made: list[ModelManager] = []

    def factory(**overrides: Any) -> ModelManager:
        s = replace(settings, **overrides)
        extra = [DEFAULTS_DIR] if s.load_defaults else []
        manager = ModelManager(s, ModelRepository(s.repository_root(), extra_roots=extra), load_profile("cpu"))
        made.append(manager)
        return manager

    yield factory
    for manager in made:
        manager.close()


def free_env(tmp: Path) -> dict[str, str]:
    """Environment for a child edge-runner: isolated repository/cache, no inherited EDGE_RUNNER_* vars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNNER_")}
    env.update(
        {
            "EDGE_RUNNER_MODEL_REPOSITORY": str(tmp / "repo"),
            "EDGE_RUNNER_CACHE_DIR": str(tmp / "cache"),
            "PYTHONUNBUFFERED": "1",
            # a native crash (segfault in a runtime) leaves every thread's Python stack in the server log
            "PYTHONFAULTHANDLER": "1",
        }
    )
    return env


class ServerProcess:
    """A real ``edge-runner serve`` subprocess on a free loopback port."""

    def __init__(self, args: list[str], env: dict[str, str], tmp: Path, command: list[str] | None = None) -> None:
        self.ready_file = tmp / f"port-{time.monotonic_ns()}"
        self.log_path = tmp / f"server-{time.monotonic_ns()}.log"
        self.log = self.log_path.open("w")
        cmd = command or [sys.executable, "-m", "edge_runner"]
        self.proc = subprocess.Popen(
            [*cmd, "serve", "--port", "0", "--ready-file", str(self.ready_file), *args],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
        self.url = ""
        key = env.get("EDGE_RUNNER_API_KEY")
        self.auth = {"Authorization": f"Bearer {key}"} if key else {}

    def wait_ready(self, timeout_s: float = 120.0) -> str:
        """Poll until /v2/health/ready answers 200; raise with the log on timeout or exit."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log_path.read_text()}")
            if self.ready_file.exists() and self.ready_file.read_text():
                self.url = f"http://127.0.0.1:{self.ready_file.read_text()}"
                try:
                    ready = urllib.request.Request(self.url + "/v2/health/ready", headers=self.auth)
                    with urllib.request.urlopen(ready, timeout=2) as resp:
                        if resp.status == 200:
                            return self.url
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {timeout_s}s:\n{self.log_path.read_text()}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return int(self.proc.returncode)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: start a real server with extra CLI args; always terminated after the test."""
    started: list[ServerProcess] = []

    def factory(
        *args: str, env: dict[str, str] | None = None, command: list[str] | None = None, wait: bool = True
    ) -> ServerProcess:
        server = ServerProcess(list(args), env or free_env(tmp_path), tmp_path, command)
        started.append(server)
        if wait:
            server.wait_ready()
        return server

    yield factory
    for server in started:
        server.stop()
