"""Keras applications that tf2onnx's function path failed on (EfficientNet's Normalization, issue 15)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.converters.checks import cosines, served_outputs

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def keras_apps(tmp_path_factory):
    from tests.converters.zoo_keras import build_keras_apps

    return build_keras_apps(tmp_path_factory.mktemp("keras_apps"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_small", "densenet121"])
@pytest.mark.parametrize("target", ["onnx", "openvino"])
def test_keras_application_converts_and_matches_keras(convert, keras_apps, name, target):
    import keras

    path, size = keras_apps[name]
    result = convert(path, "--to", target, "--task", "image-classification")
    assert result.rc == 0, result.stderr
    x = np.random.default_rng(8).standard_normal((3, size, size, 3)).astype(np.float32)  # as the BN settling batch
    expected = np.asarray(keras.models.load_model(str(path), compile=False)(x, training=False))
    got = next(iter(served_outputs(result.out, x).values()))
    assert got.shape == expected.shape
    assert cosines(expected, got).min() >= 0.999
    assert float(np.abs(expected - got).max()) <= 1e-4 * (1.0 + float(np.abs(expected).max()))
    print(f"{name} {target}: min cos {cosines(expected, got).min():.6f}, max abs {np.abs(expected - got).max():.2e}")
    assert result.manifest["inputs"][0]["shape"][0] == -1
