"""The manifest: the contract between ``converters/`` and the runtime.

A model version folder holds its artifact files and a ``manifest.json``
describing them. The converter writes it, the repository reads it. This module
is deliberately dependency-free (stdlib only) so both sides can import it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from edge_runner.core.errors import ManifestError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, KServe datatype, shape (-1 = dynamic)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), str(data["datatype"]), tuple(int(d) for d in data["shape"]))


@dataclass(frozen=True)
class FileEntry:
    """An artifact file, relative to the version folder, with its checksum."""

    path: str
    sha256: str
    size: int

    def __post_init__(self) -> None:
        parts = PurePosixPath(self.path.replace("\\", "/")).parts
        if not self.path or self.path.startswith(("/", "\\")) or ".." in parts or ":" in self.path:
            raise ManifestError(f"file path {self.path!r} must be relative and stay inside the version folder")


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to know about one model version."""

    name: str
    version: int
    format: str
    files: tuple[FileEntry, ...]
    backend: str = ""
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    quantization: str = "none"
    source: dict[str, Any] = field(default_factory=dict)
    #: ``ParityReport.to_json()`` (edge_runner.core.parity; read it back with ``ParityReport.from_json``)
    parity: dict[str, Any] = field(default_factory=dict)
    task: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def primary_file(self) -> str:
        """The file the runtime opens (the first listed)."""
        if not self.files:
            raise ManifestError(f"manifest of {self.name!r} lists no files")
        return self.files[0].path

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["inputs"] = [t.to_json() for t in self.inputs]
        data["outputs"] = [t.to_json() for t in self.outputs]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "manifest") -> Manifest:
        try:
            return cls(
                name=str(data["name"]),
                version=int(data["version"]),
                format=str(data["format"]),
                files=tuple(FileEntry(str(f["path"]), str(f["sha256"]), int(f["size"])) for f in data["files"]),
                backend=str(data.get("backend", "")),
                inputs=tuple(TensorSpec.from_json(t) for t in data.get("inputs", [])),
                outputs=tuple(TensorSpec.from_json(t) for t in data.get("outputs", [])),
                quantization=str(data.get("quantization", "none")),
                source=dict(data.get("source", {})),
                parity=dict(data.get("parity", {})),
                task=str(data.get("task", "")),
                extra=dict(data.get("extra", {})),
                schema_version=int(data.get("schema_version", SCHEMA_VERSION)),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(Infinity)
            raise ManifestError(f"{where}: missing or malformed field ({exc!r}); see docs/manifest.md") from exc


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(folder: Path, relpath: str) -> FileEntry:
    """Checksum and size of ``folder/relpath``."""
    full = folder / relpath
    return FileEntry(relpath, sha256_file(full), full.stat().st_size)


def read_manifest(folder: Path) -> Manifest:
    """Read and parse ``folder/manifest.json``."""
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"{path} not found: every model version folder needs a manifest.json") from exc
    except RecursionError:
        raise ManifestError(f"{path} nests arrays or objects too deeply") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, too many integer digits
        raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path} must hold a JSON object")
    return Manifest.from_json(data, where=str(path))


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` durably (temp file, fsync, rename)."""
    path = folder / MANIFEST_NAME
    tmp = folder / (MANIFEST_NAME + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(manifest.to_json(), fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Check every listed file's size and sha256; raise IntegrityError on mismatch."""
    from edge_runner.core.errors import IntegrityError

    for entry in manifest.files:
        full = folder / entry.path
        if not full.is_file():
            raise IntegrityError(f"{manifest.name} v{manifest.version}: file {entry.path} is missing from {folder}")
        size = full.stat().st_size
        if size != entry.size:
            raise IntegrityError(
                f"{manifest.name} v{manifest.version}: {entry.path} is {size} bytes, manifest says {entry.size}; "
                "the file is truncated or replaced - re-import the model"
            )
        digest = sha256_file(full)
        if digest != entry.sha256:
            raise IntegrityError(
                f"{manifest.name} v{manifest.version}: sha256 of {entry.path} is {digest[:12]}..., "
                f"manifest says {entry.sha256[:12]}...; refusing to load a modified file - re-import the model"
            )
