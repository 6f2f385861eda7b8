"""Offline model bundles: ``models export`` packs a version, ``models import`` unpacks it without trusting it.

A gzip'd PAX tar of, in order: ``manifest.json`` (every file's sha256 and size), optionally ``manifest.json.sig``
(JSON: ``algorithm`` ed25519, ``key_fingerprint``, base64 ``signature`` of the exact manifest.json bytes), then the
listed files. Import streams it once, writes only what the manifest announced into the repository's locked temp
folder, hashing as it goes, and publishes by one rename. Signing needs ``cryptography``. See docs/bundles.md.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runner.core.errors import (
    BundleError,
    IntegrityError,
    InvalidInput,
    ManifestError,
)
from edge_runner.core.manifest import MANIFEST_NAME, FileEntry, Manifest, verify_files, write_manifest
from edge_runner.repository.signing import SIGNATURE_NAME, check_signature, sign_manifest
from edge_runner.repository.store import ModelRepository

if TYPE_CHECKING:
    pass

_RESERVED = {MANIFEST_NAME, SIGNATURE_NAME, MANIFEST_NAME + ".tmp"}
_MANIFEST_MAX_BYTES = 16 * 2**20
_SIGNATURE_MAX_BYTES = 64 * 2**10
_HEADER_MAX_BYTES = 64 * 2**10  # PAX / GNU long-name headers: tarfile reads them whole into memory
_CHUNK = 2**20
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SPARSE = "a sparse file (it would expand far beyond its stored bytes); bundles hold only plain files"


class _StrictTarInfo(tarfile.TarInfo):
    """Refuses sparse members and oversized metadata headers while tarfile parses them, before it expands
    a sparse map or reads a header into memory (the caller only sees the member afterwards)."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise BundleError(f"member {self.name!r} is {_SPARSE} - refusing the bundle")
        metadata = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, *tarfile.GNU_TYPES)
        if self.type in metadata and self.size > _HEADER_MAX_BYTES:
            raise BundleError(f"a tar metadata header of {self.size} bytes is larger than any bundle needs")
        return super()._proc_member(tarfile_)  # type: ignore[misc,no-any-return]

    def _refuse_sparse(self, next_member: tarfile.TarInfo, *args: Any) -> None:
        raise BundleError(f"member {next_member.name!r} is {_SPARSE} - refusing the bundle")

    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse


def export_bundle(folder: Path, manifest: Manifest, out: Path, signing_key: Path | None) -> str | None:
    """Write the verified version in ``folder`` to ``out`` (complete or not at all), signed when ``signing_key``
    is given; returns the signer's key fingerprint (None when unsigned)."""
    verify_files(folder, manifest)
    manifest_bytes = (folder / MANIFEST_NAME).read_bytes()
    signature, signer = sign_manifest(manifest_bytes, signing_key) if signing_key is not None else (b"", None)
    part = out.with_name(out.name + ".part")
    try:
        with tarfile.open(part, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            for name, data in ((MANIFEST_NAME, manifest_bytes), (SIGNATURE_NAME, signature)):
                if data:
                    info = tarfile.TarInfo(name)
                    info.size, info.mode = len(data), 0o644
                    tar.addfile(info, io.BytesIO(data))
            for entry in manifest.files:
                info = tarfile.TarInfo(entry.path)
                info.size, info.mode = entry.size, 0o644
                with (folder / entry.path).open("rb") as fh:
                    tar.addfile(info, fh)
        os.replace(part, out)
    except BaseException as exc:
        part.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InvalidInput(f"cannot write bundle {out}: {exc}") from None
        raise
    return signer


def _relpath(raw: str, what: str) -> str:
    """``raw`` as a normalised relative POSIX path; BundleError for absolute paths, '..', '\\', control chars."""
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    ok = bool(parts) and not raw.startswith("/") and ".." not in parts and "\\" not in raw
    # isprintable() first: it refuses control characters and lone surrogates, which cannot be encoded
    if not (ok and raw.isprintable() and len(raw.encode()) <= 4096 and all(len(p.encode()) <= 255 for p in parts)):
        raise BundleError(f"{what} {raw!r} is not a plain relative path inside the bundle; refusing the bundle")
    return "/".join(parts)


def _expected_files(manifest: Manifest, bundle: Path, max_bytes: int) -> tuple[dict[str, FileEntry], set[str]]:
    """The files a bundle may hold (by normalised path) and their parent folders; checks the size cap."""
    files: dict[str, FileEntry] = {}
    for entry in manifest.files:
        path = _relpath(entry.path, "manifest.json lists a file")
        if path in files or path.split("/")[0] in _RESERVED:
            raise ManifestError(f"{bundle}: manifest.json lists {path!r} twice or under a reserved name")
        if entry.size < 0 or not _SHA256_RE.match(entry.sha256):
            raise ManifestError(f"{bundle}: manifest.json entry {path!r} needs a size >= 0 and a hex sha256")
        files[path] = replace(entry, path=path)
    folders = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    if not files or folders & files.keys():
        raise ManifestError(f"{bundle}: manifest.json lists no files, or a path as both file and folder")
    total = sum(e.size for e in files.values())
    if total > max_bytes:
        raise BundleError(
            f"{bundle} unpacks to {total} bytes, more than max_bundle_bytes ({max_bytes}): refusing it; "
            "if you expect a model this large, raise the setting (EDGE_RUNNER_MAX_BUNDLE_BYTES)"
        )
    return files, folders


class _Reader:
    """One forward pass over the archive (stream mode, no seeking back); read errors become BundleError."""

    def __init__(self, bundle: Path) -> None:
        self.bundle = bundle
        with self.errors():  # gzip's own reader: tarfile's "r|gz" raises TypeError on a cut gzip header
            self.gz = gzip.open(bundle, "rb")  # noqa: SIM115 - closed by __exit__
            self.tar = tarfile.open(fileobj=self.gz, mode="r|", tarinfo=_StrictTarInfo)  # noqa: SIM115

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.tar.close()
        self.gz.close()

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        try:
            yield
        except BundleError as exc:  # refused by _StrictTarInfo, which does not know the file
            raise BundleError(f"{self.bundle}: {exc.message}") from None
        except (tarfile.TarError, EOFError, zlib.error, OSError, RecursionError) as exc:
            why = f"is damaged or not a bundle made by 'edge-runner models export' ({exc}); copy or export it again"
            raise BundleError(f"{self.bundle} {why}") from None

    def next(self) -> tuple[tarfile.TarInfo, str] | None:
        """The next member and its normalised path (checked: a regular file or folder, a safe path)."""
        with self.errors():
            member = self.tar.next()
        if member is None:
            return None
        if member.sparse is not None:
            raise BundleError(f"{self.bundle}: member {member.name!r} is {_SPARSE} - refusing the bundle")
        if not (member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) or (member.isdir() and member.size == 0)):
            kind = "a symbolic link" if member.issym() else "a hard link" if member.islnk() else None
            kind = kind or ("a device or fifo" if member.isdev() else f"of tar type {member.type!r}")
            raise BundleError(
                f"{self.bundle}: member {member.name!r} is {kind}; bundles hold only regular files"
                " and folders - refusing the bundle"
            )
        return member, _relpath(member.name, f"{self.bundle}: member")

    def chunks(self, member: tarfile.TarInfo) -> Iterator[bytes]:
        with self.errors():
            fh = self.tar.extractfile(member)
            while fh is not None and (block := fh.read(_CHUNK)):
                yield block

    def read_small(self, member: tarfile.TarInfo, limit: int) -> bytes:
        if member.size > limit or member.isdir():
            raise BundleError(f"{self.bundle}: {member.name} is a folder or bigger than any bundle needs")
        return b"".join(self.chunks(member))


def import_bundle(
    repo: ModelRepository,
    bundle: Path,
    name: str | None,
    *,
    verify_key: Path | None,
    trust_dir: Path,
    require_signed: bool,
    max_bytes: int,
) -> Manifest:
    """Check and unpack ``bundle`` into ``repo`` as ``name`` (default: the manifest's), next version; a typed
    EdgeRunnerError leaves ``repo`` unchanged. ``source["bundle"]`` of the stored manifest says how it was signed."""
    with _Reader(bundle) as reader:
        item = reader.next()
        if item is None or item[1] != MANIFEST_NAME:
            raise BundleError(f"{bundle}: the first member must be manifest.json - export the bundle again")
        manifest_bytes = reader.read_small(item[0], _MANIFEST_MAX_BYTES)
        manifest, signature = _parse_manifest(manifest_bytes, bundle), None
        item = reader.next()
        if item is not None and item[1] == SIGNATURE_NAME:
            signature, item = reader.read_small(item[0], _SIGNATURE_MAX_BYTES), reader.next()
        trust = check_signature(manifest_bytes, signature, bundle, verify_key, trust_dir, require_signed)
        files, folders = _expected_files(manifest, bundle, max_bytes)
        with repo.staging(name or manifest.name) as staged:
            seen: set[str] = set()
            while item is not None:
                member, path = item
                if path in seen or not (path in folders if member.isdir() else path in files):
                    raise BundleError(
                        f"{bundle}: member {path!r} appears twice or is not listed in manifest.json; refusing it"
                    )
                seen.add(path)
                if member.isdir():
                    (staged.folder / path).mkdir(parents=True, exist_ok=True)
                else:
                    _write_member(reader, member, files[path], staged.folder, bundle)
                item = reader.next()
            if files.keys() - seen:
                raise IntegrityError(f"{bundle} lacks {sorted(files.keys() - seen)}, listed in its manifest.json")
            source = {**manifest.source, "bundle": {"path": str(Path(bundle).resolve()), **trust}}
            stored = replace(manifest, name=staged.name, version=staged.version, files=(*files.values(),))
            stored = replace(stored, source=source)
            write_manifest(staged.folder, stored)
    return stored


def _parse_manifest(data: bytes, bundle: Path) -> Manifest:
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError
        raise ManifestError(f"{bundle}: manifest.json is not valid JSON ({exc}); export the bundle again") from None
    if not isinstance(parsed, dict):
        raise ManifestError(f"{bundle}: manifest.json must hold a JSON object")
    try:
        return Manifest.from_json(parsed, where=f"{bundle}: manifest.json")
    except ManifestError as exc:
        raise ManifestError(exc.message if str(bundle) in exc.message else f"{bundle}: {exc.message}") from None


def _write_member(reader: _Reader, member: tarfile.TarInfo, entry: FileEntry, folder: Path, bundle: Path) -> None:
    """Stream one file into ``folder``, checking its size before and its sha256 while writing."""
    if member.size != entry.size:
        raise IntegrityError(
            f"{bundle}: {entry.path} is {member.size} bytes in the bundle, manifest.json says {entry.size}; "
            "the bundle was damaged or modified - refusing it"
        )
    digest = hashlib.sha256()
    try:
        (folder / entry.path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / entry.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            for block in reader.chunks(member):
                digest.update(block)
                out.write(block)
    except OSError as exc:
        raise BundleError(f"cannot write {entry.path} into the repository ({exc}); check free space") from None
    if digest.hexdigest() != entry.sha256:
        raise IntegrityError(
            f"{bundle}: sha256 of {entry.path} is {digest.hexdigest()[:12]}..., manifest.json says "
            f"{entry.sha256[:12]}...; the bundle was damaged or modified - refusing it, nothing was imported"
        )
