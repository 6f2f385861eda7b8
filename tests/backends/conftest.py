"""Session-scoped artifacts for the backend contract suite: one tiny MLP as ONNX, IR and TFLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_runner.backends.base import Backend, LoadOptions
from edge_runner.backends.registry import get_backend, probe
from edge_runner.core.manifest import Manifest
from tests.backends import models

Artifact = tuple[Path, Manifest]


@pytest.fixture(scope="session")
def mlp_weights() -> models.Weights:
    """Weights shared by every twin, so all backends must give the same answers."""
    return models.mlp_weights((16, 32, 4), seed=0)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory, mlp_weights: models.Weights) -> dict[str, Artifact]:
    """Format -> (folder, manifest); a format is missing when its builder's runtime is absent."""
    root = tmp_path_factory.mktemp("mlp")
    found: dict[str, Artifact] = {}
    pytest.importorskip("onnx")
    found["onnx"] = (root / "onnx", models.build_onnx(root / "onnx", mlp_weights))
    if probe("openvino").available:
        found["openvino"] = (root / "ir", models.build_ir(root / "ir", root / "onnx", mlp_weights))
    if models.tensorflow_available() and probe("tflite").available:
        found["tflite"] = (root / "tflite", models.build_tflite(root / "tflite", mlp_weights))
    return found


def make_backend(name: str, artifact: Artifact, **options: Any) -> Backend:
    """A not-yet-loaded backend over ``artifact``; keyword arguments become LoadOptions fields."""
    folder, manifest = artifact
    return get_backend(name)(manifest, folder, LoadOptions(**options))


def require(name: str, fmt: str, artifacts: dict[str, Artifact]) -> Artifact:
    """The artifact for ``fmt``, skipping when the backend's runtime or the artifact is absent."""
    result = probe(name)
    if not result.available:
        pytest.skip(f"{name} unavailable: {result.reason}")
    if fmt not in artifacts:
        pytest.skip(f"no {fmt} artifact here (its builder's runtime is missing)")
    return artifacts[fmt]
