"""Hostile-bundle kit: keys, valid bundles of the embedded digits model, and ways to take them apart and repack."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge_runner.core.manifest import read_manifest
from edge_runner.core.paths import DEFAULTS_DIR
from edge_runner.repository.bundles import export_bundle
from edge_runner.repository.signing import generate_keypair
from tests.conftest import free_env

DIGITS = DEFAULTS_DIR / "digits" / "1"
TEN_GIB = 10 * 2**30


@dataclass
class Member:
    """One tar member to pack: a name, its bytes, a tar type, and for links a target."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    pax: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        info = tarfile.TarInfo(self.name)
        info.type, info.linkname, info.mode, info.pax_headers = self.type, self.linkname, 0o644, dict(self.pax)
        info.size = len(self.data) if self.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
        padding = b"\0" * (-len(self.data) % 512) if info.size else b""
        return info.tobuf(tarfile.PAX_FORMAT) + (self.data + padding if info.size else b"")


def members(bundle: bytes) -> list[Member]:
    """The members of a (gzip'd) bundle, in order."""
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
        found = []
        for info in tar.getmembers():
            data = tar.extractfile(info).read() if info.isreg() else b""  # type: ignore[union-attr]
            found.append(Member(info.name, data, info.type, info.linkname))
        return found


def pack(items: list[Member | bytes], compress: bool = True) -> bytes:
    """A tar (gzip'd by default) of ``items``: Members, or raw already-encoded header+data blocks."""
    body = b"".join(item if isinstance(item, bytes) else item.encode() for item in items) + b"\0" * 1024
    return gzip.compress(body) if compress else body


def gnu_sparse_member(name: str = "model.onnx", stored: int = 512, real: int = TEN_GIB) -> bytes:
    """An old-GNU sparse member (type 'S'): ``stored`` bytes in the archive, ``real`` bytes once extracted."""
    info = tarfile.TarInfo(name)
    info.type, info.size = tarfile.GNUTYPE_SPARSE, stored
    buf = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    buf[386:398] = tarfile.itn(0, 12, tarfile.GNU_FORMAT)  # first sparse region: offset ...
    buf[398:410] = tarfile.itn(stored, 12, tarfile.GNU_FORMAT)  # ... and length
    buf[483:495] = tarfile.itn(real, 12, tarfile.GNU_FORMAT)  # the size it expands to
    buf[148:156] = b" " * 8
    buf[148:155] = b"%06o\0" % sum(buf[:512])
    return bytes(buf) + b"x" * stored


def pax_sparse_member(name: str = "model.onnx", real: int = TEN_GIB) -> bytes:
    """A PAX GNU sparse 1.0 member: a map then 512 data bytes, ``real`` bytes once extracted."""
    data = b"1\n0\n512\n".ljust(512, b"\0") + b"x" * 512
    pax = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name}
    return Member(f"GNUSparseFile.0/{name}", data, pax={**pax, "GNU.sparse.realsize": str(real)}).encode()


@dataclass
class Keys:
    alice_key: Path
    alice_pub: Path
    mallory_key: Path
    mallory_pub: Path
    alice_id: str


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys")
    alice_key, alice_pub, alice_id = generate_keypair(folder / "alice")
    mallory_key, mallory_pub, _ = generate_keypair(folder / "mallory")
    return Keys(alice_key, alice_pub, mallory_key, mallory_pub, alice_id)


def _export(folder: Path, key: Path | None) -> bytes:
    out = folder / ("signed.tgz" if key else "plain.tgz")
    export_bundle(DIGITS, read_manifest(DIGITS), out, key)
    return out.read_bytes()


@pytest.fixture(scope="session")
def plain_bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The digits model as an unsigned bundle."""
    return _export(tmp_path_factory.mktemp("plain"), None)


@pytest.fixture(scope="session")
def signed_bundle(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> bytes:
    """The digits model signed by alice."""
    return _export(tmp_path_factory.mktemp("signed"), keys.alice_key)


@pytest.fixture(scope="session")
def mallory_bundle(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> bytes:
    """The digits model signed by a key nobody trusts."""
    return _export(tmp_path_factory.mktemp("mallory"), keys.mallory_key)


class Cli:
    """``python -m edge_runner`` with its own repository and XDG config folder (so its own trust folder)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = {**free_env(tmp), "XDG_CONFIG_HOME": str(tmp / "config")}
        self.repo = tmp / "repo"
        self.trust = tmp / "config" / "edge-runner" / "trusted-keys"

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge_runner", *args],
            capture_output=True,
            text=True,
            env={**self.env, **env},
            timeout=120,
        )

    def write(self, name: str, data: bytes) -> str:
        path = self.tmp / name
        path.write_bytes(data)
        return str(path)

    def assert_repository_unchanged(self) -> None:
        """No new visible model and no leftover temp folder."""
        assert not self.repo.exists() or sorted(p.name for p in self.repo.iterdir()) == []


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)
