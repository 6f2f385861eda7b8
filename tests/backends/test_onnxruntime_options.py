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


def _spinning(manager: ModelManager) -> tuple[str, str]:
    """(allow_spinning, force_spinning_stop) as the live session holds them; "" for an entry not set."""
    manager.load("digits")
    options = manager.get("digits").backend._session.get_session_options()  # type: ignore[attr-defined]
    values = []
    for key in ("session.intra_op.allow_spinning", "session.force_spinning_stop"):
        try:
            values.append(str(options.get_session_config_entry(key)))
        except RuntimeError as exc:  # ORT raises for a key never set
            assert "does not have configuration with key" in str(exc)
            values.append("")
    return values[0], values[1]


def _with_options(settings: Settings, **ort_options: object) -> ModelManager:
    cpu = load_profile("cpu")
    profile = replace(cpu, backends={**cpu.backends, "onnxruntime": {**cpu.backends["onnxruntime"], **ort_options}})
    return ModelManager(settings, ModelRepository(settings.repository_root(), extra_roots=[DEFAULTS_DIR]), profile)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, ("1", "1")),  # spin inside a run, stop when it returns
        ({"allow_spinning": False}, ("0", "")),
        ({"spin_between_runs": True}, ("1", "")),  # ONNX Runtime's own default
    ],
)
def test_intra_op_threads_spin_only_inside_a_run_unless_the_profile_says(
    settings: Settings, options: dict[str, object], expected: tuple[str, str]
) -> None:
    manager = _with_options(settings, **options)
    try:
        assert _spinning(manager) == expected
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
