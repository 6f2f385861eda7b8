"""``serve.limit_malloc_arenas``: glibc's arena count, read back with ``malloc_info`` from a fresh interpreter in
which eight threads allocate at once (each new thread takes an arena of its own until the limit)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

PROGRAM = """
import ctypes, sys, threading
from edge_runner.cli.serve import limit_malloc_arenas
print(limit_malloc_arenas() if sys.argv[1] == "capped" else "default")
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]
together = threading.Barrier(8)
def work():
    together.wait()  # all eight alive at once: none can take over an arena another left
    blocks = [libc.malloc(4096) for _ in range(200)]
    together.wait()
    for block in blocks:
        libc.free(block)
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
out = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, out)
libc.fclose(out)
"""


def arenas(mode: str, tmp_path: Path, env: dict[str, str] | None = None) -> tuple[str, int]:
    report = tmp_path / f"{mode}.xml"
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode, str(report)], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), report.read_text().count("<heap nr=")


def test_the_server_caps_glibc_arenas(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    said, capped = arenas("capped", tmp_path, env)
    assert said == "True"
    assert 1 <= capped <= 2
    said, default = arenas("default", tmp_path, env)
    assert default > 2  # without the cap the same threads take more: the check above can fail


def test_an_arena_limit_in_the_environment_is_left_alone(tmp_path: Path) -> None:
    said, count = arenas("capped", tmp_path, {**os.environ, "MALLOC_ARENA_MAX": "4"})
    assert said == "False"
    assert 2 < count <= 4
