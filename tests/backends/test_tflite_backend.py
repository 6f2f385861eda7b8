"""TFLite specifics: runtime preference order and delegates skipped with reasons."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from edge_runner.backends.tflite_backend import RUNTIMES, TfliteBackend, delegate_unavailable
from tests.backends.conftest import Artifact, make_backend, require


@pytest.fixture
def tfl(artifacts: dict[str, Artifact]) -> Artifact:
    return require("tflite", "tflite", artifacts)


def test_missing_delegates_are_skipped_with_reasons(tfl: Artifact) -> None:
    delegates = {"edgetpu": {"library": "libedgetpu-not-here.so.1", "options": {"device": "usb"}}}
    backend = make_backend(
        "tflite", tfl, devices=("edgetpu", "/nope/libgpu_delegate.so"), options={"delegates": delegates}
    )
    backend.load()
    edgetpu, by_path, cpu = backend.metadata().selection
    assert not edgetpu.chosen and "cannot be loaded" in edgetpu.reason
    assert not by_path.chosen and "not found" in by_path.reason
    assert cpu.candidate == "CPU" and cpu.chosen and backend.metadata().device == "CPU"
    backend.unload()


def test_delegates_table_order_is_used_without_devices(tfl: Artifact) -> None:
    backend = make_backend("tflite", tfl, options={"delegates": {"gpu": {"library": "/nope/gpu.so"}}})
    backend.load()
    assert [s.candidate for s in backend.metadata().selection] == ["gpu", "CPU"]
    backend.unload()


def test_delegate_library_check() -> None:
    assert "not found" in delegate_unavailable("/definitely/missing.so")
    assert delegate_unavailable("libc.so.6") == ""


def test_litert_is_preferred_then_tflite_runtime_then_tensorflow() -> None:
    assert [r[0] for r in RUNTIMES] == ["ai_edge_litert", "tflite_runtime", "tensorflow"]


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name in names else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_probe_falls_back_when_litert_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow not installed")
    _hide(monkeypatch, "ai_edge_litert", "tflite_runtime")
    assert TfliteBackend.probe().version.startswith("tensorflow")


def test_probe_without_any_runtime_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "ai_edge_litert", "tflite_runtime", "tensorflow")
    result = TfliteBackend.probe()
    assert not result.available and "edge-runner[tflite]" in result.reason
