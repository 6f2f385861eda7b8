"""OCI distribution of model versions: ``models package`` (an OCI image layout), ``models push``, ``models pull``.

One artifact is one OCI image manifest: its config blob is the version's ``manifest.json`` (every file's sha256 and
size, the parity report; media type ``CONFIG_MEDIA_TYPE``), and each model file is one layer (``FILE_MEDIA_TYPE``,
titled with its relative path). A layer's digest is the sha256 the manifest.json lists, so a pull checks every blob
against both. Registry traffic goes through ``oras`` (imported lazily; the server never needs it), with credentials
from a docker config file. A pull downloads each blob into ``ROOT/.oci-blobs`` (a blob lands there only once its
size and digest match), then imports through the repository's locked staging folder and publishes with one rename:
a failed or killed pull leaves no model behind, and running it again reuses the blobs already fetched.
See docs/distribution.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_runner.core.errors import IntegrityError, InvalidInput, ManifestError, RegistryError
from edge_runner.core.manifest import MANIFEST_NAME, FileEntry, Manifest, sha256_file, verify_files, write_manifest
from edge_runner.repository.store import ModelRepository, validate_name

CONFIG_MEDIA_TYPE = "application/vnd.edge-runner.model.config.v1+json"
FILE_MEDIA_TYPE = "application/vnd.edge-runner.model.file.v1"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
TITLE = "org.opencontainers.image.title"
REF_NAME = "org.opencontainers.image.ref.name"
#: under the repository root; not a model name (names start with a letter or digit)
BLOB_CACHE = ".oci-blobs"
_MANIFEST_MAX_BYTES = 4 * 2**20
_CONFIG_MAX_BYTES = 16 * 2**20
_CHUNK = 2**20
_UPLOAD_CHUNK = 16 * 2**20  # larger blobs go up in chunks: never read a multi-GB file into memory
_PART_STALE_S = 3600.0
_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
Json = dict[str, Any]
#: gives the local file of a blob (by its descriptor), fetching it first where needed
Fetch = Callable[[Json], Path]


def _hex(digest: object) -> str:
    match = _DIGEST_RE.match(digest) if isinstance(digest, str) else None
    if match is None:
        raise IntegrityError(f"digest {digest!r} is not a sha256 digest; refusing the artifact")
    return match.group(1)


def _descriptor(media_type: str, sha256: str, size: int, **annotations: str) -> Json:
    found = {"mediaType": media_type, "digest": f"sha256:{sha256}", "size": size}
    return {**found, "annotations": annotations} if annotations else found


def artifact(folder: Path, manifest: Manifest) -> tuple[Json, list[tuple[Path, Json]]]:
    """The OCI image manifest of a repository version and its (file, descriptor) blobs, config first."""
    config = folder / MANIFEST_NAME
    blobs = [(config, _descriptor(CONFIG_MEDIA_TYPE, sha256_file(config), config.stat().st_size))]
    for entry in manifest.files:
        blobs.append(
            (folder / entry.path, _descriptor(FILE_MEDIA_TYPE, entry.sha256, entry.size, **{TITLE: entry.path}))
        )
    about = {"io.edge-runner.model.version": str(manifest.version), "io.edge-runner.model.format": manifest.format}
    layers = [descriptor for _, descriptor in blobs[1:]]
    oci = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "config": blobs[0][1], "layers": layers}
    return {**oci, "annotations": {TITLE: manifest.name, **about}}, blobs


def package(folder: Path, manifest: Manifest, out: Path) -> str:
    """Write the verified version as an OCI image layout at ``out`` (complete or not at all); returns the manifest
    digest. The index tags it with the version number and ``latest``."""
    verify_files(folder, manifest)
    if out.exists():
        raise InvalidInput(f"{out} already exists; package into a new folder")
    oci, blobs = artifact(folder, manifest)
    oci_bytes = json.dumps(oci, sort_keys=True, separators=(",", ":")).encode()
    digest = f"sha256:{hashlib.sha256(oci_bytes).hexdigest()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    part = Path(tempfile.mkdtemp(prefix=f".{out.name}.part-", dir=out.parent))
    try:
        store = part / "blobs" / "sha256"
        store.mkdir(parents=True)
        for path, descriptor in blobs:
            shutil.copyfile(path, store / _hex(descriptor["digest"]))
        (store / _hex(digest)).write_bytes(oci_bytes)
        (part / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}) + "\n")
        ref = {"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": len(oci_bytes)}
        refs = [{**ref, "annotations": {REF_NAME: tag}} for tag in (str(manifest.version), "latest")]
        index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": refs}
        (part / "index.json").write_text(json.dumps(index, indent=2) + "\n")
        os.rename(part, out)
    except BaseException as exc:
        shutil.rmtree(part, ignore_errors=True)
        if isinstance(exc, OSError):
            raise InvalidInput(f"cannot write the OCI layout {out}: {exc}") from None
        raise
    return digest


def _is_loopback(registry: str) -> bool:
    host = re.sub(r":\d+$", "", registry).strip("[]")
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return host == "localhost"


def _auth_backend() -> str:
    """Register (once) oras' token auth extended to plain Basic challenges (htpasswd registries such as
    Debian's docker-registry), both fed from the docker config's credentials; returns its name."""
    import oras.auth
    from oras.auth.token import TokenAuth

    class DockerConfigAuth(TokenAuth):  # type: ignore[misc]
        def authenticate_request(self, original: Any, headers: dict[str, str], refresh: bool = False) -> Any:
            challenge = original.headers.get("Www-Authenticate", "")
            if challenge.lower().startswith("basic") and getattr(self, "_basic_auth", None):
                return {**(headers or {}), "Authorization": f"Basic {self._basic_auth}"}, True
            if not challenge.lower().startswith("basic"):
                headers, changed = super().authenticate_request(original, headers, refresh)
                if changed:
                    return headers, True
            # oras retries a failed login five times over two minutes; this exception it passes straight up
            raise oras.auth.AuthenticationException(f"the registry refused the login ({original.status_code})")

    oras.auth.auth_backends.setdefault("edge-runner", DockerConfigAuth)
    return "edge-runner"


def _registry_class() -> Any:
    """oras' Registry retrying a failed request twice (about 6 s) instead of five times (over two minutes), so an
    unreachable registry is reported promptly."""
    import oras.decorator
    import oras.provider

    class Registry(oras.provider.Registry):  # type: ignore[misc]
        do_request = oras.decorator.retry(attempts=2, timeout=1)(oras.provider.Registry.do_request.__wrapped__)

    return Registry


@contextlib.contextmanager
def _client(ref: str, plain_http: bool, docker_config: Path | None) -> Iterator[tuple[Any, Any]]:
    """An oras Registry and parsed container for ``ref``; network and protocol failures become RegistryError."""
    try:
        import oras.auth
        import oras.container
        import requests
    except ImportError:
        raise RegistryError(
            "models push/pull need the oras package, which this install lacks: pip install 'edge-runner[oci]'"
        ) from None
    try:
        container = oras.container.Container(ref)
        insecure = plain_http or _is_loopback(container.registry)
        registry = _registry_class()(hostname=container.registry, insecure=insecure, auth_backend=_auth_backend())
        registry.auth.load_configs(container, configs=[str(docker_config)] if docker_config else None)
        yield registry, container
    except requests.RequestException as exc:
        raise RegistryError(f"{ref}: cannot talk to the registry ({exc.__class__.__name__}: {exc})") from None
    except oras.auth.AuthenticationException as exc:
        raise RegistryError(
            f"{ref}: {exc}: no valid credentials for it were found; run 'docker login' or put them in a docker "
            "config file (DOCKER_CONFIG, --docker-config)"
        ) from None
    except ValueError as exc:  # oras: a reference it cannot parse, or a server error after its retries
        raise RegistryError(f"{ref}: {exc}") from None


def _expect_ok(response: Any, ref: str, what: str) -> None:
    if response.status_code in (200, 201, 202):
        return
    hints = {401: "; no valid credentials (docker login)", 403: "; not allowed", 404: "; no such repository or tag"}
    hint, detail = hints.get(response.status_code, ""), response.text[:300].strip()
    raise RegistryError(f"{ref}: {what} failed: the registry answered {response.status_code}{hint} {detail}".strip())


def push(folder: Path, manifest: Manifest, ref: str, *, plain_http: bool, docker_config: Path | None) -> str:
    """Upload the verified version to ``ref`` (blobs the registry already has are skipped, so a failed push resumes);
    returns the manifest digest the registry reports."""
    verify_files(folder, manifest)
    oci, blobs = artifact(folder, manifest)
    with _client(ref, plain_http, docker_config) as (registry, container):
        for path, descriptor in blobs:
            chunked = descriptor["size"] > _UPLOAD_CHUNK
            _expect_ok(
                registry.upload_blob(str(path), container, descriptor, do_chunked=chunked), ref, f"uploading {path}"
            )
        response = registry.upload_manifest(oci, container)
        _expect_ok(response, ref, "uploading the manifest")
        return str(response.headers.get("Docker-Content-Digest", ""))


def _fetch_manifest(registry: Any, container: Any, ref: str) -> tuple[Json, str]:
    """The OCI manifest at ``ref`` and its digest (checked against a ``@sha256:`` reference)."""
    url = f"{registry.prefix}://{container.manifest_url()}"
    response = registry.do_request(url, "GET", headers={"Accept": MANIFEST_MEDIA_TYPE})
    _expect_ok(response, ref, "fetching the manifest")
    raw = response.content
    if len(raw) > _MANIFEST_MAX_BYTES:
        raise RegistryError(f"{ref}: the manifest is {len(raw)} bytes, more than any model artifact needs")
    digest = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    if container.digest and container.digest != digest:
        raise IntegrityError(f"{ref}: the registry served a manifest with digest {digest}; refusing it")
    return _parse_json(raw, f"{ref}: the OCI manifest"), digest


def _parse_json(raw: bytes, what: str, digest: object = None) -> Json:
    """``raw`` as a JSON object; with ``digest``, only if ``raw`` has that sha256 digest."""
    if digest is not None and f"sha256:{hashlib.sha256(raw).hexdigest()}" != digest:
        raise IntegrityError(f"{what} does not match its digest {digest}; refusing it")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"{what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{what} must hold a JSON object")
    return data


def _download(registry: Any, container: Any, descriptor: Json, cache: Path, ref: str) -> Path:
    """The blob of ``descriptor`` in ``cache``, fetched unless a verified copy is there; a blob lands in the cache
    (one rename) only when its size and sha256 match the descriptor."""
    hexdigest, size = _hex(descriptor.get("digest")), descriptor.get("size")
    if not isinstance(size, int) or size < 0:
        raise IntegrityError(f"{ref}: blob {hexdigest[:12]} has no valid size in the manifest; refusing it")
    target = cache / "sha256" / hexdigest
    if target.is_file() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(prefix=f"{hexdigest[:16]}.part-", dir=target.parent)
    part, digest, seen = Path(part_name), hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, registry.get_blob(container, descriptor["digest"], stream=True) as response:
            _expect_ok(response, ref, f"fetching blob sha256:{hexdigest[:12]}")
            for block in response.iter_content(_CHUNK):
                seen += len(block)
                if seen > size:
                    raise IntegrityError(
                        f"{ref}: blob sha256:{hexdigest[:12]} is larger than the {size} bytes the manifest announces; "
                        "the registry content was modified - refusing it, nothing was imported"
                    )
                digest.update(block)
                out.write(block)
        if seen != size or digest.hexdigest() != hexdigest:
            got = f"{seen} bytes with sha256 {digest.hexdigest()[:12]}..."
            raise IntegrityError(
                f"{ref}: blob sha256:{hexdigest[:12]}... arrived as {got}, the manifest says {size} bytes: the layer "
                "was damaged or tampered with - refusing it, nothing was imported"
            )
        os.chmod(part, 0o644)  # mkstemp makes 0600; a hard link of it becomes the model file
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return target


def _clean_parts(cache: Path) -> None:
    """Drop partial downloads of pulls that were killed long ago."""
    for part in (cache / "sha256").glob("*.part-*"):
        with contextlib.suppress(OSError):
            if time.time() - part.stat().st_mtime > _PART_STALE_S:
                part.unlink()


def _layers_by_path(oci: Json, manifest: Manifest, where: str) -> dict[str, Json]:
    """Each manifest.json file's layer descriptor; IntegrityError unless layers and files match one to one."""
    listed = [d for d in oci.get("layers") or [] if isinstance(d, dict)]
    layers = {str((d.get("annotations") or {}).get(TITLE)): d for d in listed}
    found = {path: (str(d.get("digest")), d.get("size")) for path, d in layers.items()}
    expected = {entry.path: (f"sha256:{entry.sha256}", entry.size) for entry in manifest.files}
    if found != expected or len(listed) != len(oci.get("layers") or []):
        odd = sorted(set(found.items()) ^ set(expected.items()), key=str)[:4]
        raise IntegrityError(
            f"{where}: its layers (file, digest, size) differ from its manifest.json: {odd}; refusing it"
        )
    return layers


def _read_config(oci: Json, fetch: Fetch, where: str) -> Manifest:
    config = oci.get("config")
    if not isinstance(config, dict) or config.get("mediaType") != CONFIG_MEDIA_TYPE:
        kind = config.get("mediaType") if isinstance(config, dict) else None
        raise RegistryError(
            f"{where} is not an edge-runner model (config media type {kind!r}, not {CONFIG_MEDIA_TYPE})"
        )
    if not isinstance(config.get("size"), int) or config["size"] > _CONFIG_MAX_BYTES:
        raise IntegrityError(f"{where}: the config blob size {config.get('size')!r} is not a plausible manifest.json")
    data = _parse_json(fetch(config).read_bytes(), f"{where}: manifest.json", config.get("digest"))
    return Manifest.from_json(data, where=f"{where}: manifest.json")


def _place(src: Path, dst: Path, entry: FileEntry, link: bool, where: str) -> None:
    """Put ``src`` at ``dst`` (a hard link when ``link``, else a copy) and check its sha256 there."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            if not link:
                raise OSError("copy wanted")
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)  # a layout folder the user owns, or another filesystem
    except FileNotFoundError:  # a concurrent pull of the same blob finished and dropped it from the cache
        raise RegistryError(f"{where}: {entry.path} vanished from the download cache meanwhile; run it again") from None
    if sha256_file(dst) != entry.sha256:
        raise IntegrityError(f"{where}: {entry.path} does not match its sha256 after download; nothing was imported")


def _import(
    repo: ModelRepository, oci: Json, fetch: Fetch, *, name: str | None, source: Json, max_bytes: int, link: bool
) -> Manifest:
    """Check the artifact, fetch its blobs, and import them through the repository's staging folder."""
    where = str(source.get("ref", "the artifact"))
    if oci.get("mediaType", MANIFEST_MEDIA_TYPE) != MANIFEST_MEDIA_TYPE:
        raise RegistryError(f"{where} is a {oci.get('mediaType')}, not an OCI image manifest of an edge-runner model")
    manifest = _read_config(oci, fetch, where)
    layers = _layers_by_path(oci, manifest, where)
    total = sum(entry.size for entry in manifest.files)
    if total > max_bytes:
        raise InvalidInput(
            f"{where} holds {total} bytes, more than max_bundle_bytes ({max_bytes}); raise the setting "
            "(EDGE_RUNNER_MAX_BUNDLE_BYTES) if you expect a model this large"
        )
    blobs = {entry.path: fetch(layers[entry.path]) for entry in manifest.files}
    with repo.staging(name or manifest.name) as staged:
        for entry in manifest.files:
            _place(blobs[entry.path], staged.folder / entry.path, entry, link, where)
        stored = replace(manifest, name=staged.name, version=staged.version)
        stored = replace(stored, source={**manifest.source, "oci": source})
        write_manifest(staged.folder, stored)
    return stored


def pull(
    repo: ModelRepository, ref: str, name: str | None, *, plain_http: bool, docker_config: Path | None, max_bytes: int
) -> Manifest:
    """Import the model at ``ref`` (a registry reference, or a folder written by ``package``) into ``repo`` as
    ``name`` (default: its own), next version; any refusal leaves ``repo`` unchanged."""
    if name is not None:
        validate_name(name)
    if Path(ref).is_dir():
        return _pull_layout(repo, Path(ref), name, max_bytes)
    cache = repo.root / BLOB_CACHE
    with _client(ref, plain_http, docker_config) as (registry, container):
        oci, digest = _fetch_manifest(registry, container, ref)
        _clean_parts(cache)

        fetched: list[Path] = []

        def fetch(descriptor: Json) -> Path:
            fetched.append(_download(registry, container, descriptor, cache, ref))
            return fetched[-1]

        # the reference as given is what clients address the model by afterwards (serving.service.pulled_model)
        source = {"ref": ref, "digest": digest, "pulled_at": round(time.time(), 3)}
        stored = _import(repo, oci, fetch, name=name, source=source, max_bytes=max_bytes, link=True)
    for path in fetched:  # imported: the cached copies are no longer needed
        path.unlink(missing_ok=True)
    return stored


def _pull_layout(repo: ModelRepository, layout: Path, name: str | None, max_bytes: int) -> Manifest:
    """Import from an OCI image layout (``models package``): the manifest tagged ``latest``, else the only one."""
    where = str(layout)
    if not (layout / "oci-layout").is_file():
        raise InvalidInput(f"{layout} is a folder but not an OCI image layout (no oci-layout file)")
    index = _parse_json((layout / "index.json").read_bytes(), f"{layout}/index.json")
    entries = [e for e in index.get("manifests") or [] if isinstance(e, dict)]
    tagged = [e for e in entries if (e.get("annotations") or {}).get(REF_NAME) == "latest"]
    chosen = tagged or entries
    if len({str(e.get("digest")) for e in chosen}) != 1:
        raise InvalidInput(f"{layout}/index.json must name one manifest (tag it 'latest')")

    def fetch(descriptor: Json) -> Path:  # checked by _read_config and _place
        path = layout / "blobs" / "sha256" / _hex(descriptor.get("digest"))
        if not path.is_file():
            raise IntegrityError(f"{where}: blob {descriptor.get('digest')} is missing; refusing the layout")
        return path

    oci = _parse_json(fetch(chosen[0]).read_bytes(), f"{where}: the OCI manifest", chosen[0].get("digest"))
    source = {"ref": where, "digest": str(chosen[0].get("digest"))}
    return _import(repo, oci, fetch, name=name, source=source, max_bytes=max_bytes, link=False)
