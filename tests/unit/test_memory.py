"""Memory accounting, eviction planning, the budget in the manager, and weights mapped (not copied)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_runner.core.errors import MemoryBudgetExceeded
from edge_runner.repository.store import ModelRepository
from edge_runner.serving.memory import Resident, mapped_files, plan_evictions
from edge_runner.serving.model_manager import ModelManager

onnx = pytest.importorskip("onnx")


def make_mlp(path: Path, width: int, layers: int, external: bool) -> Path:
    """An ONNX MatMul chain of ``layers`` x width x width FP32 weights, optionally as external data."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((width, width)) / width).astype(np.float32), f"w{i}")
        for i in range(layers)
    ]
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"w{i}"], [f"h{i}"]) for i in range(layers)]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(f"h{layers - 1}", TensorProto.FLOAT, ["N", width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))
    return path


def test_plan_evicts_idle_lru_first() -> None:
    loaded = [Resident(("a", 1), 30, True, 5.0), Resident(("b", 1), 30, True, 1.0), Resident(("c", 1), 30, False, 0.0)]
    assert plan_evictions(loaded, 20, 100) == [("b", 1)]
    assert plan_evictions(loaded, 50, 100) == [("b", 1), ("a", 1)]
    assert plan_evictions(loaded, 5, 100) == []
    assert plan_evictions(loaded, 500, 0) == []  # 0 = no budget
    with pytest.raises(ValueError, match="busy: c v1"):
        plan_evictions(loaded, 90, 100)


def test_second_model_evicts_idle_first_third_is_refused_with_sizes(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    repo = ModelRepository(tmp_path / "repo")
    for name, width in (("first", 1024), ("second", 1024), ("huge", 2048)):
        repo.add(make_mlp(tmp_path / "src" / name / "m.onnx", width, 5, external=False), name)
    manager = make_manager(model_repository=str(tmp_path / "repo"), memory_budget=50 * 2**20, load_defaults=False)
    first = manager.load("first")[0]
    assert first.footprint() > 15 * 2**20
    manager.load("second")
    assert [m.name for m in manager.loaded()] == ["second"]
    with pytest.raises(
        MemoryBudgetExceeded,
        match=r"cannot load huge v1: it needs about [0-9.]+ MB but the memory "
        r"budget is 50.0 MB with [0-9.]+ MB in use",
    ):
        manager.load("huge")
    assert [m.name for m in manager.loaded()] == ["second"]
    assert manager.index()[1]["state"] == "UNAVAILABLE" and "cannot load huge" in manager.index()[1]["reason"]


def test_external_data_weights_are_mapped_not_copied(tmp_path: Path, make_manager: Callable[..., ModelManager]) -> None:
    repo = ModelRepository(tmp_path / "repo")
    manifest = repo.add(make_mlp(tmp_path / "src" / "m.onnx", 1024, 4, external=True), "mapped")
    assert [f.path for f in manifest.files] == ["m.onnx", "m.onnx.data"]
    manager = make_manager(model_repository=str(tmp_path / "repo"), load_defaults=False)
    entry = manager.load("mapped")[0]
    x = np.ones((2, 1024), np.float32)
    _, out = manager.infer("mapped", None, {"x": x}, {}, None)
    assert out["h3"].shape == (2, 1024)
    mapped = mapped_files(entry.folder)
    assert mapped.size_bytes == 4 * 1024 * 1024 * 4  # the whole weights file is mapped
    assert entry.resident_bytes < mapped.size_bytes  # and not copied into private memory
    ref_manager = make_manager(model_repository=str(tmp_path / "repo"), load_defaults=False, use_mmap=False)
    ref_entry = ref_manager.load("mapped")[0]
    _, ref = ref_manager.infer("mapped", None, {"x": x}, {}, None)
    np.testing.assert_allclose(out["h3"], ref["h3"], rtol=1e-5, atol=1e-6)
    assert ref_entry.footprint() > 0


def test_keep_alive_reaps_idle_models(make_manager: Callable[..., ModelManager]) -> None:
    manager = make_manager(keep_alive=30.0)
    entry = manager.load("digits")[0]
    assert manager.reap_idle(now=entry.last_used + 10) == []
    assert manager.reap_idle(now=entry.last_used + 31) == [("digits", 1)]
    assert manager.loaded() == []
    forever = make_manager(keep_alive=-1.0)
    kept = forever.load("digits")[0]
    assert forever.reap_idle(now=kept.last_used + 10**6) == []
    forever.set_keep_alive("digits", 0)
    assert forever.loaded() == []


def test_optimized_graph_cache_is_written_then_used(
    make_manager: Callable[..., ModelManager], digits_holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    x = digits_holdout[0][:8]
    manager = make_manager()
    entry = manager.load("digits")[0]
    cache_files = list(Path(manager.settings.cache_root()).rglob("optimized-*.onnx"))
    assert len(cache_files) == 1
    _, first = manager.infer("digits", None, {"input": x}, {}, None)
    manager.unload("digits")
    again = make_manager()
    again.load("digits")
    _, second = again.infer("digits", None, {"input": x}, {}, None)
    np.testing.assert_allclose(first["logits"], second["logits"], rtol=1e-5)
    assert entry.metadata.inputs[0].name == "input"


def test_preferred_quantization_picks_matching_version(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    from edge_runner.core.paths import DEFAULTS_DIR

    repo = ModelRepository(tmp_path / "repo")
    repo.add(DEFAULTS_DIR / "digits" / "1", "d")  # int8
    repo.add(make_mlp(tmp_path / "src" / "m.onnx", 8, 1, external=False), "d")  # v2, quantization none
    assert make_manager(model_repository=str(tmp_path / "repo"), load_defaults=False).load("d")[0].version == 2
    chosen = make_manager(model_repository=str(tmp_path / "repo"), load_defaults=False, quantization="int8")
    assert chosen.load("d")[0].version == 1


def test_replaced_model_never_reuses_a_stale_optimized_graph(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    from onnx import TensorProto, helper

    def tiny(op: str) -> Path:
        graph = helper.make_graph(
            [helper.make_node(op, ["x"], ["y"])],
            op,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        )
        path = tmp_path / f"{op}.onnx"
        onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return path

    repo = ModelRepository(tmp_path / "repo")
    x = {"x": np.ones((1, 4), np.float32)}
    repo.add(tiny("Identity"), "m")
    first = make_manager(model_repository=str(tmp_path / "repo"), load_defaults=False)
    first.load("m")
    assert first.infer("m", None, x, {}, None)[1]["y"].tolist() == [[1, 1, 1, 1]]
    first.close()
    repo.remove("m")
    repo.add(tiny("Neg"), "m")  # same name and version, other graph
    second = make_manager(model_repository=str(tmp_path / "repo"), load_defaults=False)
    second.load("m")
    assert second.infer("m", None, x, {}, None)[1]["y"].tolist() == [[-1, -1, -1, -1]]


def test_one_smaps_read_attributes_mappings_to_each_folder(tmp_path: Path) -> None:
    import mmap

    from edge_runner.serving.memory import mapped_by_folder

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "w.bin").write_bytes(b"\1" * 3 * mmap.PAGESIZE)
    with (tmp_path / "a" / "w.bin").open("rb") as fh, mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) as view:
        assert view[0] == 1  # touch one page
        both = mapped_by_folder([tmp_path / "a", tmp_path / "b"])
        assert both[tmp_path / "a"].size_bytes == 3 * mmap.PAGESIZE and both[tmp_path / "a"].rss_bytes > 0
        assert both[tmp_path / "b"] == mapped_files(tmp_path / "b") and both[tmp_path / "b"].size_bytes == 0
        assert both[tmp_path / "a"] == mapped_files(tmp_path / "a")
