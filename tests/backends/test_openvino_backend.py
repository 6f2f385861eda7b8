"""OpenVINO specifics: device fallback with reasons, static shapes for NPUs, compiled-model cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runner.backends.openvino_backend import _batch_plan, device_unavailable, ov_message
from edge_runner.core.errors import ModelLoadError
from tests.backends import models
from tests.backends.conftest import Artifact, make_backend, require


@pytest.fixture
def ir(artifacts: dict[str, Artifact]) -> Artifact:
    return require("openvino", "openvino", artifacts)


def test_absent_devices_fall_back_to_cpu_with_reasons(ir: Artifact) -> None:
    backend = make_backend("openvino", ir, devices=("NPU", "GPU", "AUTO:GPU,NPU"))
    backend.load()
    meta = backend.metadata()
    steps = {s.candidate: s for s in meta.selection}
    assert meta.device == "CPU" and list(steps) == ["NPU", "GPU", "AUTO:GPU,NPU", "CPU"]
    if "NPU" not in backend.probe().devices:
        assert not steps["NPU"].chosen and "not in Core().available_devices" in steps["NPU"].reason
    assert steps["CPU"].chosen and "compiled" in steps["CPU"].reason
    backend.unload()


def test_a_device_that_fails_to_compile_is_skipped(ir: Artifact) -> None:
    precision = {"AUTO": "i3", "CPU": "f32"}  # a per-device precision AUTO's CPU plugin refuses
    backend = make_backend("openvino", ir, devices=("AUTO", "CPU"), options={"inference_precision": precision})
    backend.load()
    auto, cpu = backend.metadata().selection
    assert not auto.chosen and auto.reason.startswith("compile failed") and "INFERENCE_PRECISION_HINT" in auto.reason
    assert cpu.chosen
    backend.unload()


def test_static_batch_sizes_split_and_pad_requests(ir: Artifact, mlp_weights: models.Weights) -> None:
    backend = make_backend("openvino", ir, options={"static_shapes": True, "static_batch_sizes": [1, 4]})
    backend.load()
    meta = backend.metadata()
    assert not meta.capabilities.dynamic_shapes and "static batch sizes [1, 4]" in meta.selection[-1].reason
    x = np.random.default_rng(5).standard_normal((6, 16)).astype(np.float32)
    np.testing.assert_allclose(backend.infer({"x": x})["y"], models.reference(mlp_weights, x), atol=1e-4)
    backend.unload()


def test_static_shapes_need_a_static_inner_shape(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "M"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "M"])],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9),
        str(tmp_path / "model.onnx"),
    )
    from edge_runner.core.manifest import Manifest, file_entry

    manifest = Manifest("dyn", 1, "onnx", (file_entry(tmp_path, "model.onnx"),))
    with pytest.raises(ModelLoadError, match="needs static shapes"):
        make_backend("openvino", (tmp_path, manifest), options={"static_shapes": True}).load()


def test_compiled_model_cache_is_written(ir: Artifact, tmp_path: Path) -> None:
    backend = make_backend("openvino", ir, cache_dir=tmp_path / "cache")
    backend.load()
    assert list((tmp_path / "cache").glob("*.blob"))
    backend.unload()


def test_device_availability_rules() -> None:
    available = ["CPU", "GPU.0", "GPU.1"]
    assert device_unavailable("GPU", available) == ""
    assert device_unavailable("GPU.1", available) == ""
    assert device_unavailable("AUTO", available) == ""
    assert device_unavailable("HETERO:NPU,CPU", available) == ""
    assert "none of NPU" in device_unavailable("MULTI:NPU", available)
    assert "not in Core().available_devices (CPU, GPU.0, GPU.1)" in device_unavailable("NPU", available)


def test_batch_plan_covers_every_row_once() -> None:
    assert _batch_plan(6, [1, 4]) == [(0, 4, 4), (4, 2, 4)]
    assert _batch_plan(1, [1, 4]) == [(0, 1, 1)]
    assert _batch_plan(9, [4]) == [(0, 4, 4), (4, 4, 4), (8, 1, 4)]


def test_ov_message_keeps_the_useful_line() -> None:
    text = "Exception from a.cpp:1:\nCheck 'x' failed at b.cpp:2:\nUnsupported configuration key: FOO\n\n; \n"
    assert ov_message(RuntimeError(text)) == "Unsupported configuration key: FOO"
