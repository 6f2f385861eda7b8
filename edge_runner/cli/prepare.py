"""``--model-path`` sources that are not servable artifacts, converted once on first use.

A Hugging Face folder (or a hub cache folder ``models--ORG--NAME``: its ``main`` snapshot), a TorchScript /
``torch.export`` file, a Keras file or a SavedModel is converted
with the converter stack (``edge-runner convert``) the first time a server is asked to serve it: decoder
LLMs (``*ForCausalLM``) to GGUF (``QUANTIZATION`` or Q8_0), everything else to ONNX with the profile's
preset. The result, with its parity report in the manifest, goes to
``$CACHE/converted/NAME-SOURCEHASH-TARGET-QUANT/``; a later start with the same source (same bytes) serves
that folder without converting again. Without the converter stack installed, the error names the
``edge-runner convert`` command to run elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from edge_runner.config.profiles import Profile
from edge_runner.config.settings import Settings
from edge_runner.core.errors import EdgeRunnerError, ModelLoadError
from edge_runner.core.manifest import MANIFEST_NAME
from edge_runner.repository.external import manifest_for_path

log = logging.getLogger("edge_runner.cli.prepare")
#: the converter's source kinds that convert on first use (``onnx`` files are served as they are)
CONVERTIBLE = ("huggingface", "torchscript", "torch-export", "keras", "saved-model")
GGUF_DEFAULT = "q8_0"
CHUNK = 1 << 20


def source_digest(path: Path) -> str:
    """sha256 over every file of the source (relative path and bytes), so an edited source converts again."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        with file.open("rb") as handle:
            while block := handle.read(CHUNK):
                digest.update(block)
    return digest.hexdigest()


def _target(path: Path, kind: str) -> str:
    """GGUF for Hugging Face decoder LLMs (served by llama.cpp), ONNX for everything else."""
    if kind == "huggingface":
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = {}
        if any(str(a).endswith("ForCausalLM") for a in config.get("architectures") or []):
            return "gguf"
    return "onnx"


def _hint(path: Path) -> str:
    return (
        f"convert it where the converter stack is installed: 'edge-runner convert {path} --to onnx --out DIR' "
        "(or --to gguf for a Hugging Face LLM), then serve DIR with --model-path DIR"
    )


def hub_snapshot(path: Path) -> Path:
    """A Hugging Face hub cache folder (``models--ORG--NAME`` with ``refs/`` and ``snapshots/``) as the
    snapshot its ``main`` ref names (or its only snapshot); any other path as it is. Nothing is downloaded."""
    snapshots = path / "snapshots"
    if not (path.is_dir() and path.name.startswith("models--") and snapshots.is_dir()):
        return path
    ref = path / "refs" / "main"
    if ref.is_file():
        chosen = snapshots / ref.read_text(encoding="utf-8").strip()
        if chosen.is_dir():
            return chosen
    found = sorted(p for p in snapshots.iterdir() if p.is_dir())
    if len(found) != 1:
        raise ModelLoadError(f"{path}: no refs/main and {len(found)} snapshots; give --model-path .../snapshots/HASH")
    return found[0]


def servable_path(path: Path, name: str, settings: Settings, profile: Profile) -> Path:
    """``path`` itself when it is servable; else the cached (or a fresh) conversion of it."""
    path = hub_snapshot(path)
    try:
        manifest_for_path(path, name)
        return path
    except EdgeRunnerError as exc:
        not_servable = exc.message
    try:
        from converters.errors import ConversionError, ParityError
        from converters.sources.detect import source_kind
    except ImportError:
        raise ModelLoadError(f"{not_servable}; this installation cannot convert it: {_hint(path)}") from None
    try:
        kind = source_kind(str(path))
    except ConversionError as exc:
        raise ModelLoadError(f"{not_servable}; {exc.one_line()}") from None
    if kind not in CONVERTIBLE:
        raise ModelLoadError(not_servable)
    target = _target(path, kind)
    quantize = settings.quantization or (GGUF_DEFAULT if target == "gguf" else "")
    log.info("hashing %s to find a cached conversion", path)
    key = source_digest(path)[:16]
    out = settings.cache_root() / "converted" / f"{name}-{key}-{target}-{quantize or 'preset'}"
    if (out / MANIFEST_NAME).is_file():
        log.info("serving %s from its cached %s conversion in %s", path, target, out)
        return out
    log.warning("converting %s (%s) to %s on first use; later starts reuse %s", path, kind, target, out)
    try:
        _convert(path, target, quantize, out, profile.name)
    except (ConversionError, ParityError) as exc:
        raise ModelLoadError(f"converting {path} to {target} failed: {exc.one_line()}") from None
    except Exception as exc:  # a runtime failed inside the converter: one line, the server decides what follows
        raise ModelLoadError(
            f"converting {path} to {target} failed in the runtime: {type(exc).__name__}: {exc}"
        ) from exc
    log.info("converted %s to %s in %s", path, target, out)
    return out


def _convert(path: Path, target: str, quantize: str, out: Path, profile: str) -> dict[str, Any]:
    """The ``edge-runner convert`` run, its progress lines on stderr (the server log)."""
    from converters.cli import run_conversion
    from converters.options import ConvertOptions

    out.parent.mkdir(parents=True, exist_ok=True)
    opts = ConvertOptions(src=str(path), to=target, quantize=quantize, out=out, profile=profile)
    print(f"edge-runner: converting {path} -> {out} (pid {os.getpid()})", file=sys.stderr, flush=True)
    result: dict[str, Any] = run_conversion(opts)
    return result
