"""``torch.export`` programs saved without dynamic_shapes (issue 15): re-exported with a dynamic batch, or fixed."""

from __future__ import annotations

import numpy as np
import pytest

from tests.converters.checks import cosines, served_outputs

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def static_zoo(tmp_path_factory):
    from tests.converters.zoo_torch import build_static_programs

    return build_static_programs(tmp_path_factory.mktemp("static_pt2"))


def _program(path, x: np.ndarray) -> np.ndarray:
    """The saved program itself, run in torch on ``x`` (its own batch size only)."""
    import torch

    with torch.inference_mode():
        return torch.export.load(str(path)).module()(torch.from_numpy(x)).numpy()


def _close(expected: np.ndarray, got: np.ndarray) -> None:
    assert got.shape == expected.shape
    assert cosines(expected, got).min() >= 0.999
    assert float(np.abs(expected - got).max()) <= 1e-4


@pytest.mark.parametrize("target", ["onnx", "openvino"])
def test_static_cnn_program_is_reexported_with_dynamic_batch(convert, static_zoo, target):
    result = convert(static_zoo["cnn_static"], "--to", target)
    assert result.rc == 0, result.stderr
    assert result.manifest["inputs"][0]["shape"] == [-1, 3, 16, 16]
    assert "re-exported" in result.manifest["source"]["batch"]
    x = np.random.default_rng(5).standard_normal((4, 3, 16, 16)).astype(np.float32)
    expected = np.concatenate([_program(static_zoo["cnn_static"], x[:2]), _program(static_zoo["cnn_static"], x[2:])])
    _close(expected, served_outputs(result.out, x)["output"])
    x5 = np.random.default_rng(6).standard_normal((5, 3, 16, 16)).astype(np.float32)
    assert served_outputs(result.out, x5)["output"].shape == (5, 4)


@pytest.mark.parametrize("target", ["onnx", "openvino"])
def test_program_with_baked_batch_converts_with_a_fixed_batch(convert, static_zoo, target):
    result = convert(static_zoo["view_static"], "--to", target)
    assert result.rc == 0, result.stderr
    assert result.manifest["inputs"][0]["shape"] == [2, 3, 4]
    assert result.manifest["source"]["batch"] == "fixed at 2"
    assert result.manifest["extra"]["fixed_batch"] == 2
    x = np.random.default_rng(7).standard_normal((2, 3, 4)).astype(np.float32)
    _close(_program(static_zoo["view_static"], x), served_outputs(result.out, x)["output"])
