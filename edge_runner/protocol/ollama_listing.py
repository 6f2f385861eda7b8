"""Ollama's model listings, free of HTTP: ``/api/tags``, ``/api/show`` and ``/api/ps`` entries built from
our manifests, as the official ``ollama`` client parses them."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_runner.core.manifest import Manifest
from edge_runner.protocol.ollama import rfc3339

#: Ollama's "never expires": now plus the longest Go duration (about 292 years)
FOREVER_S = (2**63 - 1) / 1e9
#: device names whose memory is an accelerator's (``size_vram``)
ACCELERATORS = ("gpu", "cuda", "rocm", "metal", "vulkan", "npu", "xpu")


@dataclass(frozen=True)
class ModelFacts:
    """What the Ollama listing routes say about one model version, gathered by the route layer."""

    name: str
    version: int
    latest: bool  # the version that ``NAME`` and ``NAME:latest`` resolve to
    manifest: Manifest | None = None  # None when the version is not loaded (its manifest is not read)
    modified_at: float | None = None  # mtime of the version's manifest
    generate: bool = False
    embed: bool = False
    references: tuple[str, ...] = ()  # the OCI references that name this version (it was pulled from them)


def digest(manifest: Manifest) -> str:
    """A sha256 naming the version's artifact: the file's own for one file, else one over the file list."""
    if len(manifest.files) == 1:
        return manifest.files[0].sha256
    listing = "\n".join(f"{f.path} {f.sha256}" for f in manifest.files)
    return hashlib.sha256(listing.encode()).hexdigest()


def details(manifest: Manifest) -> dict[str, Any]:
    """Ollama's ``details`` object."""
    family = str(manifest.extra.get("architecture") or manifest.backend or manifest.format)
    return {
        "parent_model": "",
        "format": manifest.format,
        "family": family,
        "families": [family],
        "parameter_size": "",
        "quantization_level": manifest.quantization.upper() if manifest.quantization != "none" else "",
    }


def capabilities(facts: ModelFacts) -> list[str]:
    """Ollama's capability names for what the model can do here."""
    return (["completion"] if facts.generate else []) + (["embedding"] if facts.embed else [])


def tag_names(facts: ModelFacts) -> list[str]:
    """``NAME:latest`` for the newest version, ``NAME:VERSION`` for each version, and the references it
    was pulled by (``host[:port]/repository:tag``, as Ollama lists a pulled model)."""
    return ([f"{facts.name}:latest"] if facts.latest else []) + [f"{facts.name}:{facts.version}", *facts.references]


def tags_response(models: Sequence[ModelFacts]) -> dict[str, Any]:
    """``/api/tags``: every servable model; size and digest are known for loaded versions only."""
    out = []
    for facts in models:
        for tag in tag_names(facts):
            entry: dict[str, Any] = {"name": tag, "model": tag}
            if facts.modified_at is not None:
                entry["modified_at"] = rfc3339(facts.modified_at)
            if facts.manifest is not None:
                entry["size"] = sum(f.size for f in facts.manifest.files)
                entry["digest"] = digest(facts.manifest)
                entry["details"] = details(facts.manifest)
            out.append(entry)
    return {"models": out}


def show_response(facts: ModelFacts, device: str, backend: str, context_length: int) -> dict[str, Any]:
    """``/api/show`` of a loaded version."""
    manifest = facts.manifest
    assert manifest is not None
    arch = str(manifest.extra.get("architecture") or manifest.format)
    info: dict[str, Any] = {"general.architecture": arch, "general.name": facts.name}
    if context_length:
        info[f"{arch}.context_length"] = context_length
    for key in ("vocab_size", "embedding_length"):
        if key in manifest.extra:
            info[f"{arch}.{key}"] = manifest.extra[key]
    info["edge_runner.version"] = facts.version
    info["edge_runner.backend"] = backend
    info["edge_runner.device"] = device
    info["edge_runner.task"] = manifest.task
    info["edge_runner.inputs"] = [t.to_json() for t in manifest.inputs]
    info["edge_runner.outputs"] = [t.to_json() for t in manifest.outputs]
    modelfile = f"# served by edge-runner: {facts.name} version {facts.version}\nFROM {manifest.primary_file}\n"
    body: dict[str, Any] = {
        "license": "",
        "modelfile": modelfile,
        "parameters": "",
        "template": "",
        "details": details(manifest),
        "model_info": info,
        "capabilities": capabilities(facts),
    }
    if facts.modified_at is not None:
        body["modified_at"] = rfc3339(facts.modified_at)
    return body


def ps_model(row: dict[str, Any], manifest: Manifest, keep_alive_s: float, context_length: int) -> dict[str, Any]:
    """One ``/api/ps`` entry: edge-runner's own row (``name``, ``version``, ``memory``...) plus Ollama's fields."""
    memory = row.get("memory", {})
    size = int(memory.get("rss_bytes", 0)) + int(memory.get("mapped_size_bytes", 0))
    device = str(row.get("device", "")).lower()
    left_s = FOREVER_S if keep_alive_s < 0 else max(0.0, keep_alive_s - float(row.get("idle_s", 0.0)))
    return {
        **row,
        "model": f"{row['name']}:{row['version']}",
        "size": size,
        "size_vram": size if any(name in device for name in ACCELERATORS) else 0,
        "digest": digest(manifest),
        "details": details(manifest),
        "expires_at": rfc3339(time.time() + left_s),
        "context_length": context_length,
    }
