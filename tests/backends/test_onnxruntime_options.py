"""ONNX Runtime session options the server sets (read back from the live session)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_runner.config.profiles import load_profile
from edge_runner.config.settings import Settings
from edge_runner.core.paths import DEFAULTS_DIR
from edge_runner.repository.store import ModelRepository
from edge_runner.serving.model_manager import ModelManager

pytest.importorskip("onnxruntime")


def _spinning(manager: ModelManager) -> str:
    manager.load("digits")
    session = manager.get("digits").backend._session  # type: ignore[attr-defined]
    return str(session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning"))


def test_intra_op_threads_do_not_spin_unless_the_profile_says(
    settings: Settings, make_manager: Callable[..., ModelManager]
) -> None:
    assert _spinning(make_manager()) == "0"
    cpu = load_profile("cpu")
    spinning = replace(
        cpu, backends={**cpu.backends, "onnxruntime": {**cpu.backends["onnxruntime"], "allow_spinning": True}}
    )
    manager = ModelManager(settings, ModelRepository(settings.repository_root(), extra_roots=[DEFAULTS_DIR]), spinning)
    try:
        assert _spinning(manager) == "1"
    finally:
        manager.close()


def test_an_unusable_cache_folder_serves_without_the_cache(
    settings: Settings, make_manager: Callable[..., ModelManager], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache folder that cannot be created (a read-only root filesystem in a container, here a path under
    a plain file) costs the optimized-graph cache, not the model."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    manager = make_manager(cache_dir=str(blocker / "cache"))
    manager.load("digits")
    out = manager.get("digits").backend.infer({"input": np.zeros((2, 1, 8, 8), np.float32)})
    assert out["logits"].shape == (2, 10) and np.isfinite(out["logits"]).all()
    assert "no optimized-graph cache" in caplog.text
