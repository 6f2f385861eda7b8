"""Portable llama.cpp builds: ggml variant backends are registered only where they exist."""

from __future__ import annotations

from pathlib import Path

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from edge_runner.backends.llama_cpp.llama_cpp_backend import LlamaCppBackend, load_dynamic_backends  # noqa: E402


def test_native_build_has_no_variants_to_load() -> None:
    package = Path(llama_cpp.__file__).resolve().parent
    assert load_dynamic_backends(package) == []
    assert LlamaCppBackend.probe().available


def test_folder_without_libraries_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "lib").mkdir(parents=True)
    (tmp_path / "pkg" / "lib" / "libggml-cpu-haswell.so").write_bytes(b"")  # a variant but no libggml.so
    assert load_dynamic_backends(tmp_path / "pkg") == []
