"""One contract suite over every backend: the same tiny MLP served as ONNX, IR and TFLite.

Each case is (backend, artifact format); a case is skipped only where its runtime is absent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_runner.backends.base import Backend
from edge_runner.backends.registry import probe
from edge_runner.core.errors import EdgeRunnerError, InferenceError, InvalidInput, ModelLoadError
from edge_runner.core.manifest import Manifest, file_entry
from tests.backends import models
from tests.backends.conftest import Artifact, make_backend, require

BACKEND_FORMATS = [("onnxruntime", "onnx"), ("openvino", "onnx"), ("openvino", "openvino"), ("tflite", "tflite")]
CASES = [pytest.param(pair, id=f"{pair[0]}-{'ir' if pair[1] == 'openvino' else pair[1]}") for pair in BACKEND_FORMATS]
ATOL = 1e-4


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest, artifacts: dict[str, Artifact]) -> tuple[str, Artifact]:
    name, fmt = request.param
    return name, require(name, fmt, artifacts)


@pytest.fixture
def loaded(case: tuple[str, Artifact]) -> Iterator[Backend]:
    backend = make_backend(*case, threads=1)
    backend.load()
    yield backend
    backend.unload()


def _x(rows: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 16)).astype(np.float32)


def test_probe_says_version_and_devices(case: tuple[str, Artifact]) -> None:
    result = make_backend(*case).probe()
    assert result.available and result.version and result.devices


def test_metadata_describes_the_model(loaded: Backend) -> None:
    meta = loaded.metadata()
    assert [(t.name, t.datatype, t.shape) for t in meta.inputs] == [("x", "FP32", (-1, 16))]
    assert [(t.name, t.datatype, t.shape) for t in meta.outputs] == [("y", "FP32", (-1, 4))]
    assert meta.capabilities.batching and meta.capabilities.batch_axis == 0
    assert meta.capabilities.max_concurrency >= 1 and not meta.capabilities.generate
    chosen = [s for s in meta.selection if s.chosen]
    assert len(chosen) == 1 and chosen[0].candidate == meta.device and chosen[0].reason


def test_answers_match_the_numpy_reference(loaded: Backend, mlp_weights: models.Weights) -> None:
    x = _x(5)
    y = loaded.infer({"x": x})["y"]
    assert y.dtype == np.float32 and y.shape == (5, 4)
    np.testing.assert_allclose(y, models.reference(mlp_weights, x), atol=ATOL)


def test_batch_equals_concatenated_single_rows(loaded: Backend) -> None:
    x = _x(7, seed=2)
    batched = loaded.infer({"x": x})["y"]
    singles = np.concatenate([loaded.infer({"x": x[i : i + 1]})["y"] for i in range(len(x))])
    np.testing.assert_allclose(batched, singles, atol=ATOL)


def test_requested_outputs_only(loaded: Backend) -> None:
    assert list(loaded.infer({"x": _x(2)}, outputs=["y"])) == ["y"]


def test_bad_input_is_a_typed_error_and_the_model_survives(loaded: Backend) -> None:
    with pytest.raises((InvalidInput, InferenceError)):
        loaded.infer({"x": np.zeros((3, 5), np.float32)})
    with pytest.raises((InvalidInput, InferenceError)):
        loaded.infer({"nope": _x(1)})
    assert loaded.infer({"x": _x(3)})["y"].shape == (3, 4)


def test_concurrent_calls_give_the_same_answers(loaded: Backend) -> None:
    x = _x(4, seed=3)
    expected = loaded.infer({"x": x})["y"]
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                np.testing.assert_allclose(loaded.infer({"x": x})["y"], expected, atol=ATOL)
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_unload_is_idempotent_and_reload_works(case: tuple[str, Artifact]) -> None:
    backend = make_backend(*case)
    backend.load()
    backend.unload()
    backend.unload()
    with pytest.raises(EdgeRunnerError):
        backend.infer({"x": _x(1)})
    with pytest.raises(EdgeRunnerError):
        backend.metadata()
    backend.load()
    assert backend.infer({"x": _x(1)})["y"].shape == (1, 4)
    backend.unload()


def test_garbage_artifact_is_a_model_load_error(case: tuple[str, Artifact]) -> None:
    name, (folder, manifest) = case
    bad = folder.parent / f"garbage-{name}-{manifest.format}"
    bad.mkdir(exist_ok=True)
    for entry in manifest.files:
        (bad / entry.path).write_bytes(b"this is not a model" * 8)
    with pytest.raises(ModelLoadError):
        make_backend(name, (bad, manifest)).load()


def test_missing_artifact_is_a_model_load_error(case: tuple[str, Artifact]) -> None:
    name, (folder, manifest) = case
    with pytest.raises(ModelLoadError):
        make_backend(name, (folder.parent / "does-not-exist", manifest)).load()


def test_every_format_and_backend_gives_the_same_answers(artifacts: dict[str, Artifact]) -> None:
    x = _x(6, seed=4)
    answers = {}
    for name, fmt in BACKEND_FORMATS:
        if fmt in artifacts and make_backend(name, artifacts[fmt]).probe().available:
            backend = make_backend(name, artifacts[fmt])
            backend.load()
            answers[f"{name}-{fmt}"] = backend.infer({"x": x})["y"]
            backend.unload()
    assert len(answers) >= 2, f"need two backends to compare, have {list(answers)}"
    first = next(iter(answers.values()))
    for key, value in answers.items():
        np.testing.assert_allclose(value, first, atol=ATOL, err_msg=key)


# -- llama.cpp: text models have no tensor interface, so only the lifecycle part of the contract applies.


def _gguf_default() -> Artifact | None:
    from edge_runner.core.manifest import read_manifest
    from edge_runner.core.paths import DEFAULTS_DIR

    for path in sorted(DEFAULTS_DIR.glob("*/*/manifest.json")):
        manifest = read_manifest(path.parent)
        if manifest.format == "gguf":
            return path.parent, manifest
    return None


def test_llama_cpp_lifecycle_when_a_gguf_default_exists() -> None:
    if not probe("llama_cpp").available:
        pytest.skip("llama_cpp unavailable")
    artifact = _gguf_default()
    if artifact is None:
        pytest.skip("no GGUF model among the embedded defaults")
    backend = make_backend("llama_cpp", artifact, options={"n_gpu_layers": -1})
    backend.load()
    meta = backend.metadata()
    assert meta.capabilities.generate or meta.capabilities.embed
    assert [s.candidate for s in meta.selection if s.chosen] == [meta.device]
    backend.unload()
    backend.unload()


def test_llama_cpp_garbage_gguf_is_a_model_load_error(tmp_path: Path) -> None:
    if not probe("llama_cpp").available:
        pytest.skip("llama_cpp unavailable")
    (tmp_path / "model.gguf").write_bytes(b"this is not a gguf file" * 8)
    manifest = Manifest("garbage", 1, "gguf", (file_entry(tmp_path, "model.gguf"),))
    with pytest.raises(ModelLoadError):
        make_backend("llama_cpp", (tmp_path, manifest)).load()
