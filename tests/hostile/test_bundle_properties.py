"""Property: whatever bytes arrive as a bundle, import either adds a model whose files verify or raises a typed
EdgeRunnerError - never another exception, never a file outside the repository, never a half-visible model."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edge_runner.core.errors import EdgeRunnerError
from edge_runner.repository.bundles import import_bundle
from edge_runner.repository.store import ModelRepository
from tests.hostile.conftest import Keys, Member, gnu_sparse_member, pack, pax_sparse_member

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _header_offsets(tar: bytes) -> list[int]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return [m.offset for m in archive.getmembers()]


def _check_import(data: bytes, name: str | None, trust: Path | None, require_signed: bool, record: bool = True) -> None:
    note = event if record else (lambda _: None)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "b.tgz").write_bytes(data)
        (root / "trust").mkdir()
        if trust is not None:
            shutil.copy(trust, root / "trust" / "alice.pub")
        repo = ModelRepository(root / "repo")
        try:
            manifest = import_bundle(
                repo,
                root / "b.tgz",
                name,
                verify_key=None,
                trust_dir=root / "trust",
                require_signed=require_signed,
                max_bytes=1 << 20,
            )
        except EdgeRunnerError as exc:
            note(f"refused: {type(exc).__name__}: {exc.message.split(': ')[1][:40] if ': ' in exc.message else ''}")
            assert not (root / "repo").exists() or list((root / "repo").iterdir()) == []
        else:
            note("imported")
            assert sorted(p.name for p in (root / "repo").iterdir()) == [manifest.name]
            assert repo.versions(manifest.name) == [manifest.version] == [1]
            repo.verify(manifest.name)  # every file's size and sha256
            version = root / "repo" / manifest.name / "1"
            listed = {e.path for e in manifest.files} | {"manifest.json"}
            assert {str(p.relative_to(version)) for p in version.rglob("*") if not p.is_dir()} <= listed
        assert {p.name for p in root.iterdir()} <= {"b.tgz", "repo", "trust"}  # nothing escaped the repository


MUTATION = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
    st.integers(0, 2**31),
    st.binary(min_size=1, max_size=4),
)


def _mutate(data: bytes, offsets: list[int], mutations: list[tuple[str, int, bytes]], near_header: bool) -> bytes:
    out = bytearray(data)
    for kind, where, value in mutations:
        if not out:
            break
        pos = (offsets[where % len(offsets)] + where % 512 if near_header else where) % len(out)
        if kind == "flip":
            out[pos] ^= value[0] or 1
        elif kind == "set":
            out[pos : pos + len(value)] = value
        elif kind == "insert":
            out[pos:pos] = value
        elif kind == "delete":
            del out[pos : pos + len(value)]
        else:
            del out[pos:]
    return bytes(out)


@SETTINGS
@given(
    which=st.sampled_from(["plain", "signed"]),
    layer=st.sampled_from(["tar", "tar-headers", "gzip"]),
    mutations=st.lists(MUTATION, min_size=1, max_size=6),
    name=st.sampled_from([None, "m"]),
    trusted=st.booleans(),
    require_signed=st.booleans(),
)
def test_mutated_bundles_import_cleanly_or_fail_typed(
    plain_bundle: bytes,
    signed_bundle: bytes,
    keys: Keys,
    which: str,
    layer: str,
    mutations: list[tuple[str, int, bytes]],
    name: str | None,
    trusted: bool,
    require_signed: bool,
) -> None:
    bundle = plain_bundle if which == "plain" else signed_bundle
    if layer == "gzip":
        data = _mutate(bundle, [0], mutations, near_header=False)
    else:
        tar = gzip.decompress(bundle)
        data = gzip.compress(_mutate(tar, _header_offsets(tar), mutations, near_header=layer == "tar-headers"))
    _check_import(data, name, keys.alice_pub if trusted else None, require_signed)


NAMES = st.sampled_from(
    ["model.onnx", "manifest.json", "manifest.json.sig", "sub", "sub/w.bin", "./model.onnx", "../x", "/abs", "a\\b"]
)
GOOD_NAMES = st.sampled_from(["model.onnx", "w.bin", "sub/w.bin", "sub/deeper/x.txt", "./y.bin", "ü.bin"])
TYPES = st.sampled_from(
    [tarfile.REGTYPE, tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, b"7", b"Z"]
)


@st.composite
def member_lists(draw: st.DrawFn) -> bytes:
    """A manifest naming some files (mostly right sizes and sums), their members (mostly regular, maybe missing,
    doubled or of another type), random extra members, and now and then a sparse member."""
    names = st.one_of(GOOD_NAMES, GOOD_NAMES, GOOD_NAMES, NAMES)
    contents = {n: draw(st.binary(max_size=64)) for n in draw(st.lists(names, min_size=1, max_size=4, unique=True))}
    entries = [
        {
            "path": n,
            "sha256": hashlib.sha256(d).hexdigest() if draw(st.integers(0, 5)) else "0" * 64,
            "size": len(d) + draw(st.sampled_from([0, 0, 0, 0, 1, -1, 2**40])),
        }
        for n, d in contents.items()
    ]
    manifest = {"name": draw(st.sampled_from(["m", "m", "../m", ""])), "version": 1, "format": "onnx", "files": entries}
    items: list[Member | bytes] = (
        [Member("manifest.json", json.dumps(manifest).encode())] if draw(st.integers(0, 5)) else []
    )
    for member_name, data in contents.items():
        for _ in range(draw(st.sampled_from([1, 1, 1, 1, 0, 2]))):
            kind = draw(st.sampled_from([tarfile.REGTYPE] * 6 + [tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.FIFOTYPE]))
            items.append(Member(member_name, data, kind, linkname=draw(st.sampled_from(["", "model.onnx", "/etc"]))))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        items.insert(draw(st.integers(0, len(items))), Member(draw(NAMES), draw(st.binary(max_size=32)), draw(TYPES)))
    if draw(st.integers(0, 9)) == 0:
        items.append(draw(st.sampled_from([gnu_sparse_member(), pax_sparse_member()])))
    return pack(items)


@SETTINGS
@given(data=member_lists(), name=st.sampled_from([None, "m"]))
def test_random_member_lists_import_cleanly_or_fail_typed(keys: Keys, data: bytes, name: str | None) -> None:
    _check_import(data, name, None, require_signed=False)


def test_unmutated_bundles_import(plain_bundle: bytes, signed_bundle: bytes, keys: Keys) -> None:
    """The harness itself: the valid bundles go through it, signed ones under require_signed."""
    _check_import(plain_bundle, "m", None, require_signed=False, record=False)
    _check_import(signed_bundle, None, keys.alice_pub, require_signed=True, record=False)
