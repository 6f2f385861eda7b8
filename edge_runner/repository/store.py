"""The model repository: ``ROOT/<name>/<version>/{artifacts, manifest.json}``.

Imports are atomic: files are written into a hidden temp folder inside ROOT
(``.tmp-*/version``), fsynced, and renamed into place, so a crash or kill never
leaves a half registered version. The temp folder holds a lock file the
importing process keeps locked, so ``cleanup_stale`` (run at every start, maybe
by another replica on a shared volume) only removes imports whose process died.
Names are validated so no request can reach outside ROOT.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from edge_runner.config.settings import to_version_policy
from edge_runner.core.errors import InvalidInput, InvalidModelName, ManifestError, ModelNotFound
from edge_runner.core.manifest import MANIFEST_NAME, Manifest, file_entry, read_manifest, verify_files, write_manifest

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TMP_PREFIX = ".tmp-"
#: inside each ``.tmp-*`` folder; flock-ed by the importing process until the import ends
LOCK_NAME = "import.lock"
#: a temp folder younger than this is never cleaned (its lock may not be taken yet)
STALE_AFTER_S = 60.0


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe single folder name, else raise InvalidModelName."""
    if not _NAME_RE.match(name) or ".." in name:
        raise InvalidModelName(
            f"invalid model name {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (no '/', no '..')"
        )
    return name


def select_versions(available: list[int], policy: str) -> list[int]:
    """Apply a version policy: ``latest``, ``latest:N``, ``all`` or ``specific:1,3``."""
    try:
        policy = to_version_policy(policy)
    except ValueError as exc:
        raise InvalidInput(f"version policy: {exc}") from None
    ordered = sorted(available)
    if not ordered:
        return []
    kind, _, arg = policy.partition(":")
    if kind == "latest":
        count = int(arg) if arg else 1
        return ordered[-count:]
    if kind == "all":
        return ordered
    if kind == "specific":
        wanted = {int(v) for v in arg.split(",") if v}
        return [v for v in ordered if v in wanted]
    raise InvalidInput(f"unknown version policy {policy!r}; use latest, latest:N, all or specific:1,2")


@dataclass(frozen=True)
class StagedVersion:
    """A version folder being filled by an import; it becomes ``ROOT/name/version`` on commit."""

    folder: Path
    name: str
    version: int


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        _fsync_path(path)
    _fsync_path(folder)


def _try_lock(lock_path: Path) -> int | None:
    """An fd holding an exclusive lock on ``lock_path``; None when another process holds it.

    A missing lock file counts as free (a trash folder of ``remove`` or an import killed before locking).
    """
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return os.open(os.devnull, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class ModelRepository:
    """A folder of models; optionally layered over read-only folders (the embedded defaults)."""

    def __init__(self, root: Path, extra_roots: Iterable[Path] = ()) -> None:
        self.root = Path(root)
        self.extra_roots = [Path(p) for p in extra_roots]

    def _roots(self) -> list[Path]:
        return [self.root, *self.extra_roots]

    def _model_dir(self, name: str) -> Path | None:
        validate_name(name)
        for root in self._roots():
            candidate = root / name
            if candidate.is_dir():
                return candidate
        return None

    def list_models(self) -> list[str]:
        """Model names, the writable root shadowing the read-only ones."""
        names: set[str] = set()
        for root in self._roots():
            if root.is_dir():
                names.update(p.name for p in root.iterdir() if p.is_dir() and _NAME_RE.match(p.name))
        return sorted(names)

    def versions(self, name: str) -> list[int]:
        """Version numbers present for ``name`` (sorted); ModelNotFound if no such model."""
        folder = self._model_dir(name)
        if folder is None:
            raise ModelNotFound(f"model {name!r} is not in the repository; known models: {self.list_models()}")
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    def resolve(self, name: str, version: int | None = None) -> tuple[Path, Manifest]:
        """Folder and manifest of ``name`` at ``version`` (latest when None)."""
        versions = self.versions(name)
        if not versions:
            raise ModelNotFound(f"model {name!r} has no version folders")
        chosen = versions[-1] if version is None else version
        if chosen not in versions:
            raise ModelNotFound(f"model {name!r} has no version {chosen}; versions: {versions}")
        folder = self._model_dir(name)
        assert folder is not None
        vdir = folder / str(chosen)
        return vdir, read_manifest(vdir)

    def verify(self, name: str, version: int | None = None) -> Manifest:
        """Resolve and check every file's size and sha256."""
        vdir, manifest = self.resolve(name, version)
        verify_files(vdir, manifest)
        return manifest

    def add(self, src: Path, name: str, version: int | None = None) -> Manifest:
        """Import an ONNX file or a folder with manifest.json as ``name`` (next version by default)."""
        src = Path(src)
        if not src.exists():
            raise InvalidInput(f"{src} does not exist")
        with self.staging(name, version) as staged:
            return self._stage(src, staged.folder, staged.name, staged.version)

    @contextlib.contextmanager
    def staging(self, name: str, version: int | None = None) -> Iterator[StagedVersion]:
        """Yield an empty, locked temp version folder on ROOT's filesystem; commit it atomically on success.

        The caller writes the artifacts and manifest.json into ``staged.folder``. When the block ends normally
        the folder is fsynced and renamed to ``ROOT/name/version``; when it raises, the folder is removed.
        The lock on ``.tmp-*/import.lock`` is held throughout, so ``cleanup_stale`` elsewhere leaves it alone.
        """
        validate_name(name)
        self.root.mkdir(parents=True, exist_ok=True)
        model_dir = self.root / name
        existing = self.versions(name) if model_dir.is_dir() else []
        target_version = version if version is not None else (existing[-1] + 1 if existing else 1)
        if target_version in existing:
            raise InvalidInput(f"model {name!r} already has version {target_version}; pick another --version")
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=self.root))
        lock_fd = os.open(tmp / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            folder = tmp / "version"
            folder.mkdir()
            yield StagedVersion(folder, name, target_version)
            _fsync_tree(folder)
            self._commit(folder, model_dir, target_version)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # on success only the lock file is left
            os.close(lock_fd)

    def _commit(self, folder: Path, model_dir: Path, version: int) -> None:
        model_dir.mkdir(exist_ok=True)
        try:
            os.rename(folder, model_dir / str(version))
        except OSError as exc:
            with contextlib.suppress(OSError):
                model_dir.rmdir()  # only if empty: never leave a visible model without versions
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise InvalidInput(
                    f"model {model_dir.name!r} got version {version} from another import meanwhile; run it again"
                ) from None
            raise
        _fsync_path(model_dir)
        _fsync_path(self.root)

    def _stage(self, src: Path, tmp: Path, name: str, version: int) -> Manifest:
        if src.is_file() and src.suffix == ".gguf":
            return self._stage_gguf(src, tmp, name, version)
        if src.is_file():
            if src.suffix not in (".onnx", ".ort"):
                raise InvalidInput(
                    f"{src}: only .onnx/.ort/.gguf files can be added bare; other formats need a folder "
                    "with manifest.json (edge-runner convert writes one)"
                )
            shutil.copy2(src, tmp / src.name)
            extra_files = _external_data_files(src)
            for rel in extra_files:
                shutil.copy2(src.parent / rel, tmp / rel)
            manifest = Manifest(
                name=name,
                version=version,
                format=src.suffix[1:],
                files=tuple(file_entry(tmp, rel) for rel in (src.name, *extra_files)),
                source={"path": str(src.resolve())},
            )
            manifest = _with_onnx_signature(tmp, manifest)
        else:
            if not (src / MANIFEST_NAME).is_file():
                raise ManifestError(
                    f"{src} has no manifest.json; add a single .onnx file, or convert with "
                    "'edge-runner convert' which writes the manifest"
                )
            original = read_manifest(src)
            verify_files(src, original)
            for entry in original.files:
                (tmp / entry.path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / entry.path, tmp / entry.path)
            manifest = replace(original, name=name, version=version)
        write_manifest(tmp, manifest)
        return manifest

    def _stage_gguf(self, src: Path, tmp: Path, name: str, version: int) -> Manifest:
        """A bare GGUF file, with its sibling parts when it is one part of a split, copied and checksummed."""
        from edge_runner.backends.llama_cpp import gguf_files

        (variant,) = [v for v in gguf_files.variants(src.parent) if src.resolve() in {f.resolve() for f in v.files}]
        for part in variant.files:
            shutil.copy2(part, tmp / part.name)
        described = gguf_files.gguf_manifest(variant, name, version)
        files = tuple(file_entry(tmp, entry.path) for entry in described.files)
        manifest = replace(described, files=files, source={"path": str(src.resolve())})
        write_manifest(tmp, manifest)
        return manifest

    def remove(self, name: str, version: int | None = None) -> None:
        """Remove a version (or the whole model) from the writable root; atomic via rename first."""
        validate_name(name)
        model_dir = self.root / name
        if not model_dir.is_dir():
            raise ModelNotFound(f"model {name!r} is not in the writable repository {self.root}")
        target = model_dir if version is None else model_dir / str(version)
        if not target.is_dir():
            raise ModelNotFound(f"model {name!r} has no version {version}")
        trash = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=self.root))
        os.rename(target, trash / "gone")
        shutil.rmtree(trash, ignore_errors=True)
        if version is not None and not any(model_dir.iterdir()):
            model_dir.rmdir()

    def cleanup_stale(self, min_age_s: float = STALE_AFTER_S) -> list[Path]:
        """Delete temp folders of imports whose process died; returns what was removed.

        A folder is removed only when it is older than ``min_age_s`` and its lock can be taken: an import
        still running in another process (another replica on a shared volume) keeps its lock and its folder.
        """
        if not self.root.is_dir():
            return []
        removed = []
        now = time.time()
        for path in sorted(self.root.iterdir()):
            if not path.name.startswith(_TMP_PREFIX) or not path.is_dir():
                continue
            try:
                if now - path.stat().st_mtime < min_age_s:
                    continue
            except FileNotFoundError:
                continue  # committed or cleaned by someone else meanwhile
            fd = _try_lock(path / LOCK_NAME)
            if fd is None:
                continue
            try:
                shutil.rmtree(path, ignore_errors=True)
            finally:
                os.close(fd)
            removed.append(path)
        return removed


def _external_data_files(model_path: Path) -> list[str]:
    """Relative paths of external-data files an ONNX model references (weights stored beside it)."""
    if model_path.suffix != ".onnx":
        return []
    try:
        import onnx
    except ImportError:
        candidates = [p.name for p in model_path.parent.glob(model_path.name + ".data")]
        return candidates
    model = onnx.load(str(model_path), load_external_data=False)
    found: list[str] = []
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value not in found:
                if Path(entry.value).is_absolute() or ".." in Path(entry.value).parts:
                    raise InvalidInput(f"{model_path}: external data location {entry.value!r} leaves the folder")
                found.append(entry.value)
    return found


def _with_onnx_signature(folder: Path, manifest: Manifest) -> Manifest:
    """Fill inputs/outputs of a bare ONNX file from its graph, when the onnx package is present."""
    try:
        import onnx
    except ImportError:
        return manifest
    from edge_runner.core.datatypes import from_numpy
    from edge_runner.core.manifest import TensorSpec

    model = onnx.load(str(folder / manifest.primary_file), load_external_data=False)
    init_names = {init.name for init in model.graph.initializer}

    def specs(values: Iterable[object]) -> tuple[TensorSpec, ...]:
        out = []
        for value in values:
            name = value.name  # type: ignore[attr-defined]
            if name in init_names:
                continue
            ttype = value.type.tensor_type  # type: ignore[attr-defined]
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim)
            np_type = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)
            out.append(TensorSpec(name, from_numpy(np_type), dims))
        return tuple(out)

    return replace(manifest, inputs=specs(model.graph.input), outputs=specs(model.graph.output))
