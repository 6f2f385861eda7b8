"""Model repository: names, versions, policies, atomic imports, checksums."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_runner.core.errors import IntegrityError, InvalidModelName, ManifestError, ModelNotFound
from edge_runner.core.manifest import read_manifest
from edge_runner.core.paths import DEFAULTS_DIR
from edge_runner.repository.store import ModelRepository, select_versions, validate_name

DIGITS_ONNX = DEFAULTS_DIR / "digits" / "1" / "model.onnx"


@pytest.mark.parametrize("name", ["../etc", "a/b", "/abs", "..", "", ".hidden", "x" * 200, "a\\b", "a b"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidModelName):
        validate_name(name)


def test_add_onnx_file_fills_signature_and_checksums(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    manifest = repo.add(DIGITS_ONNX, "d")
    assert manifest.version == 1 and manifest.format == "onnx"
    assert [t.name for t in manifest.inputs] == ["input"] and manifest.inputs[0].shape == (-1, 1, 8, 8)
    assert repo.add(DIGITS_ONNX, "d").version == 2
    assert repo.versions("d") == [1, 2]
    assert repo.verify("d").files[0].sha256 == manifest.files[0].sha256


def test_add_folder_keeps_manifest_and_renames(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    manifest = repo.add(DEFAULTS_DIR / "digits" / "1", "digits-copy")
    assert manifest.name == "digits-copy" and manifest.quantization == "int8"
    folder, on_disk = repo.resolve("digits-copy")
    assert on_disk == manifest and (folder / "model.onnx").is_file()


def test_folder_without_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(ManifestError, match="no manifest.json"):
        ModelRepository(tmp_path / "repo").add(tmp_path / "src", "x")
    assert not (tmp_path / "repo" / "x").exists()


def test_checksum_mismatch_refuses_to_load(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    repo.add(DIGITS_ONNX, "d")
    target = tmp_path / "d" / "1" / "model.onnx"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 of model.onnx"):
        repo.verify("d")
    target.write_bytes(bytes(data[:-1]))
    with pytest.raises(IntegrityError, match="truncated"):
        repo.verify("d")


def test_version_policies() -> None:
    assert select_versions([1, 2, 3], "latest") == [3]
    assert select_versions([1, 2, 3], "latest:2") == [2, 3]
    assert select_versions([3, 1, 2], "all") == [1, 2, 3]
    assert select_versions([1, 2, 3], "specific:1,3") == [1, 3]


def test_unknown_model_and_version(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    repo.add(DIGITS_ONNX, "d")
    with pytest.raises(ModelNotFound, match="no version 7"):
        repo.resolve("d", 7)
    with pytest.raises(ModelNotFound, match="not in the repository"):
        repo.resolve("other")


def test_remove_version_then_model(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    repo.add(DIGITS_ONNX, "d")
    repo.add(DIGITS_ONNX, "d")
    repo.remove("d", 1)
    assert repo.versions("d") == [2]
    repo.remove("d")
    assert repo.list_models() == []


def test_read_only_roots_are_layered(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, extra_roots=[DEFAULTS_DIR])
    assert "digits" in repo.list_models()
    assert read_manifest(repo.resolve("digits")[0]).name == "digits"


def test_killed_import_leaves_no_version(tmp_path: Path) -> None:
    """SIGKILL in the middle of copying a large file: no half-registered version, and the leftover is cleaned."""
    big = tmp_path / "big.onnx"
    shutil.copy(DIGITS_ONNX, big)
    with big.open("ab") as fh:
        fh.truncate(1024 * 2**20)  # sparse; copying it takes a while
    code = (
        "import sys; from pathlib import Path; from edge_runner.repository.store import ModelRepository; "
        "ModelRepository(Path(sys.argv[1])).add(Path(sys.argv[2]), 'big')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "repo"), str(big)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any((tmp_path / "repo").glob(".tmp-*/version/big.onnx")):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    repo = ModelRepository(tmp_path / "repo")
    assert not (tmp_path / "repo" / "big").exists()
    assert repo.cleanup_stale() == []  # younger than a minute: it might still be taking its lock
    assert [p.name for p in repo.cleanup_stale(min_age_s=0)] != []  # the dead process's lock is free
    assert list((tmp_path / "repo").iterdir()) == []
