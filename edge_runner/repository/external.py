"""Models served straight from a path (the seed's ``--model-name N --model-path P`` form).

The path may be a version folder with ``manifest.json``, a model folder with
numbered versions, a single artifact file, a folder holding one artifact, or GGUF files as people have
them (a bare file, split parts, a folder of quantization variants: ``backends/llama_cpp/gguf_files``).
Artifacts without a manifest get one synthesized in memory; nothing is written.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edge_runner.backends.llama_cpp import gguf_files
from edge_runner.backends.registry import artifact_suffixes, format_for_suffix
from edge_runner.core.errors import ManifestError
from edge_runner.core.manifest import MANIFEST_NAME, FileEntry, Manifest, read_manifest


def _artifact(folder: Path) -> Path:
    suffixes = artifact_suffixes()
    found = sorted(p for p in folder.iterdir() if p.suffix in suffixes)
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise ManifestError(
            f"{folder}: expected exactly one model file ({', '.join(suffixes)}) or a manifest.json, found {names}"
        )
    return found[0]


def _gguf(folder: Path, name: str, prefer: str, budget: int, only: Path | None = None) -> tuple[Path, Manifest]:
    found = gguf_files.variants(folder)
    if only is not None:  # a file was named: its own variant (all parts of a split)
        found = [v for v in found if only.resolve() in {f.resolve() for f in v.files}]
    return folder, gguf_files.gguf_manifest(gguf_files.pick(found, prefer, budget), name)


def manifest_for_path(path: Path, name: str, prefer: str = "", budget: int = 0) -> tuple[Path, Manifest]:
    """(folder, manifest) for a user-given path; raises ManifestError when it is not a model.

    ``prefer`` (``QUANTIZATION``) and ``budget`` (bytes) pick among GGUF variants in a folder.
    """
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"--model-path {path} does not exist")
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():
            return path, replace(read_manifest(path), name=name)
        versions = sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit())
        if versions and (path / str(versions[-1]) / MANIFEST_NAME).is_file():
            folder = path / str(versions[-1])
            return folder, replace(read_manifest(folder), name=name)
        if any(path.glob("*.gguf")):
            return _gguf(path, name, prefer, budget)
        path = _artifact(path)
    if path.suffix == ".gguf":
        return _gguf(path.parent, name, prefer, budget, only=path)
    fmt = format_for_suffix(path.suffix)
    if fmt is None:
        raise ManifestError(f"{path}: unknown model file type; expected one of {', '.join(artifact_suffixes())}")
    files = [FileEntry(path.name, "", path.stat().st_size)]
    if fmt == "openvino" and path.with_suffix(".bin").is_file():
        files.append(FileEntry(path.with_suffix(".bin").name, "", path.with_suffix(".bin").stat().st_size))
    task = "text-generation" if fmt == "gguf" else ""
    manifest = Manifest(
        name=name, version=1, format=fmt, files=tuple(files), task=task, source={"path": str(path.resolve())}
    )
    return path.parent, manifest
