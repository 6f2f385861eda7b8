"""GGUF files as people have them: a bare file, split files (``NAME-00001-of-00003.gguf``), or a folder of
quantization variants (``m-Q8_0.gguf`` beside ``m-Q4_K_M.gguf``), described as manifests without copying.

A variant's quantization comes from its header (``general.file_type``); splits are one variant whose
first part is the file llama.cpp opens (it finds the other parts by name). Which variant serves: the one
named by ``QUANTIZATION`` when there is one, else the largest (least quantized) that fits the memory
budget, else the smallest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edge_runner.backends.llama_cpp.gguf_header import read_header
from edge_runner.core.errors import ManifestError
from edge_runner.core.manifest import FileEntry, Manifest

SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$")
#: llama.cpp's ``llama_ftype`` values (general.file_type) as quantization names
FILE_TYPES = {
    0: "f32",
    1: "f16",
    2: "q4_0",
    3: "q4_1",
    7: "q8_0",
    8: "q5_0",
    9: "q5_1",
    10: "q2_k",
    11: "q3_k_s",
    12: "q3_k_m",
    13: "q3_k_l",
    14: "q4_k_s",
    15: "q4_k_m",
    16: "q5_k_s",
    17: "q5_k_m",
    18: "q6_k",
    32: "bf16",
}
#: architectures llama.cpp runs as encoders (embeddings), not generators
ENCODERS = ("bert", "nomic-bert", "jina-bert-v2", "modern-bert")


@dataclass(frozen=True)
class Variant:
    """One servable GGUF: its files (the first is the one to open), quantization and total size."""

    files: tuple[Path, ...]
    quantization: str
    size: int


def _quantization(path: Path) -> str:
    try:
        file_type = read_header(path).get("general.file_type")
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: not a readable GGUF file ({exc})") from None
    return FILE_TYPES.get(int(file_type), f"type-{file_type}") if isinstance(file_type, int) else "unknown"


def variants(folder: Path) -> list[Variant]:
    """Every GGUF variant in ``folder``; a split with missing parts is an error that names them."""
    singles: list[tuple[Path, ...]] = []
    splits: dict[tuple[str, int], list[Path]] = {}
    for path in sorted(folder.glob("*.gguf")):
        match = SPLIT.match(path.name)
        if match:
            splits.setdefault((match["stem"], int(match["count"])), []).append(path)
        else:
            singles.append((path,))
    groups = list(singles)
    for (stem, count), parts in sorted(splits.items()):
        missing = [f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
        missing = [m for m in missing if not (folder / m).is_file()]
        if missing:
            raise ManifestError(f"{folder}: split GGUF {stem} lacks {', '.join(missing)}")
        groups.append(tuple(sorted(parts)))
    return [Variant(files, _quantization(files[0]), sum(p.stat().st_size for p in files)) for files in groups]


def pick(found: list[Variant], prefer: str, budget: int) -> Variant:
    """``prefer`` (a quantization name) if present; else the largest that fits ``budget``; else the smallest."""
    if not found:
        raise ManifestError("no .gguf file found")
    wanted = [v for v in found if prefer and v.quantization == prefer.lower()]
    if wanted:
        return wanted[0]
    fitting = [v for v in found if not budget or v.size <= budget]
    return max(fitting, key=lambda v: v.size) if fitting else min(found, key=lambda v: v.size)


def gguf_manifest(variant: Variant, name: str, version: int = 1) -> Manifest:
    """A manifest for ``variant`` (file checksums left empty: nothing was copied or verified)."""
    first = variant.files[0]
    header = read_header(first)
    arch = str(header.get("general.architecture", ""))
    extra: dict[str, object] = {"architecture": arch}
    context = header.get(f"{arch}.context_length")
    if isinstance(context, int):
        extra["context_length"] = context
    return Manifest(
        name=name,
        version=version,
        format="gguf",
        backend="llama_cpp",
        files=tuple(FileEntry(p.name, "", p.stat().st_size) for p in variant.files),
        quantization=variant.quantization,
        task="feature-extraction" if arch in ENCODERS else "text-generation",
        source={"path": str(first.resolve())},
        extra=extra,
    )
