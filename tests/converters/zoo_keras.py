"""Keras applications with ``weights=None``, built locally for the converter tests.

Random init makes MobileNet activations vanish (every output equal), which would
hide conversion errors. One training-mode pass with BatchNorm momentum 0 sets each
BatchNorm's moving statistics to the batch statistics, giving lively outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _settle_batchnorm(model: object, image_size: int) -> None:
    import keras

    for layer in model.layers:  # type: ignore[attr-defined]
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    batch = np.random.default_rng(0).standard_normal((8, image_size, image_size, 3)).astype("float32")
    model(batch, training=True)  # type: ignore[operator]


def build_keras_zoo(folder: Path) -> dict[str, Path]:
    """MobileNetV2 (alpha 0.35, 96x96) as .keras and .h5, MobileNetV3Small (64x64) as .keras."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(0)
    v2 = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10, classifier_activation=None
    )
    _settle_batchnorm(v2, 96)
    v3 = keras.applications.MobileNetV3Small(
        input_shape=(64, 64, 3),
        alpha=0.75,
        weights=None,
        classes=10,
        classifier_activation=None,
        include_preprocessing=False,
    )
    _settle_batchnorm(v3, 64)
    paths = {
        "mobilenet_v2": folder / "mobilenet_v2.keras",
        "mobilenet_v2_h5": folder / "mobilenet_v2.h5",
        "mobilenet_v3": folder / "mobilenet_v3_small.keras",
    }
    v2.save(str(paths["mobilenet_v2"]))
    v2.save(str(paths["mobilenet_v2_h5"]))
    v3.save(str(paths["mobilenet_v3"]))
    return paths


def build_keras_apps(folder: Path) -> dict[str, tuple[Path, int]]:
    """EfficientNetB0, MobileNetV3Small and DenseNet121 at 64x64, weights=None, logits out: (path, image size)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(0)
    apps = keras.applications
    models = {
        "efficientnet_b0": apps.EfficientNetB0(
            weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None
        ),
        "mobilenet_v3_small": apps.MobileNetV3Small(
            weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None
        ),
        "densenet121": apps.DenseNet121(weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None),
    }
    paths = {}
    for name, model in models.items():
        _settle_batchnorm(model, 64)
        paths[name] = (folder / f"{name}.keras", 64)
        model.save(str(paths[name][0]))
    return paths
