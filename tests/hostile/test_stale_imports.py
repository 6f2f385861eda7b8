"""cleanup_stale removes only imports whose process died: a live import elsewhere (another replica on a shared
volume) keeps its locked temp folder, however old; a dead one's is removed once older than a minute."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_runner.repository.store import LOCK_NAME, ModelRepository

HOLDER = """
import sys
from pathlib import Path
from edge_runner.repository.store import ModelRepository

with ModelRepository(Path(sys.argv[1])).staging("m") as staged:
    (staged.folder / "weights.bin").write_bytes(b"half written")
    print("staged", flush=True)
    sys.stdin.readline()  # hold the import (and its lock) open until told to finish
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process in the middle of an import into ``tmp_path / "repo"``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "repo")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "staged"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


def _temp_folder(root: Path, age_s: float) -> Path:
    (folder,) = root.glob(".tmp-*")
    assert (folder / LOCK_NAME).is_file()
    then = time.time() - age_s
    os.utime(folder, (then, then))
    return folder


def test_live_import_of_another_process_is_left_alone(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    repo = ModelRepository(tmp_path / "repo")
    folder = _temp_folder(repo.root, age_s=3600)  # old, but its process holds the lock
    assert repo.cleanup_stale() == [] and (folder / "version" / "weights.bin").is_file()
    holder.communicate("\n", timeout=30)  # the import finishes and commits
    assert holder.returncode == 0
    assert repo.versions("m") == [1] and not list(repo.root.glob(".tmp-*"))


def test_dead_import_is_removed_once_older_than_a_minute(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    repo = ModelRepository(tmp_path / "repo")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)
    folder = _temp_folder(repo.root, age_s=0)
    assert repo.cleanup_stale() == [] and folder.exists()  # too young: it might not hold its lock yet
    _temp_folder(repo.root, age_s=120)
    assert repo.cleanup_stale() == [folder] and not folder.exists()
    assert sorted(p.name for p in repo.root.iterdir()) == []  # never became a visible model


def test_import_in_this_process_keeps_its_folder(tmp_path: Path) -> None:
    """flock is per open file: a cleanup from the same process (a second repository object) also backs off."""
    repo = ModelRepository(tmp_path / "repo")
    with repo.staging("m") as staged:
        assert ModelRepository(repo.root).cleanup_stale(min_age_s=0) == [] and staged.folder.is_dir()
    assert repo.versions("m") == [1]


def test_failed_import_removes_its_folder(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    with pytest.raises(RuntimeError), repo.staging("m") as staged:
        (staged.folder / "weights.bin").write_bytes(b"x")
        raise RuntimeError("boom")
    assert list(repo.root.iterdir()) == []
