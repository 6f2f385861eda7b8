"""Memory accounting: process RSS, file mappings of a model's artifacts, and the budget.

A model's footprint = RSS growth measured around its load (anonymous memory the
runtime allocated) + the resident part of its artifact files mapped into the
process (``/proc/self/smaps``; weights that are mapped, not copied, are shared
with the page cache and other processes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

_SMAPS = Path("/proc/self/smaps")


@dataclass(frozen=True)
class MappedFiles:
    """Total mapped size and resident bytes (Rss) and proportional share (Pss) of some files."""

    size_bytes: int = 0
    rss_bytes: int = 0
    pss_bytes: int = 0


def process_rss() -> int:
    """Resident set size of this process."""
    return int(psutil.Process().memory_info().rss)


def mapped_files(folder: Path) -> MappedFiles:
    """File-backed mappings of files under ``folder`` in this process (zeros where smaps is absent)."""
    return mapped_by_folder([folder])[folder]


def mapped_by_folder(folders: Sequence[Path]) -> dict[Path, MappedFiles]:
    """``mapped_files`` for several folders in one read of ``/proc/self/smaps`` (it is long: read it once)."""
    totals = {folder: [0, 0, 0] for folder in folders}
    if not _SMAPS.exists() or not folders:
        return {folder: MappedFiles() for folder in folders}
    prefixes = [(str(folder.resolve()) + os.sep, folder) for folder in folders]
    current: list[int] | None = None
    fields = {"Size:": 0, "Rss:": 1, "Pss:": 2}
    with _SMAPS.open() as fh:
        for line in fh:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                parts = line.split(maxsplit=5)
                path = parts[5].strip() if len(parts) == 6 else ""
                current = next((totals[folder] for prefix, folder in prefixes if path.startswith(prefix)), None)
            elif current is not None and head in fields:
                current[fields[head]] += int(line.split()[1]) * 1024
    return {folder: MappedFiles(*values) for folder, values in totals.items()}


def available_bytes() -> int:
    """Memory available to us: the cgroup limit when set (containers), else system available."""
    limit_path = Path("/sys/fs/cgroup/memory.max")
    available = int(psutil.virtual_memory().available)
    try:
        text = limit_path.read_text().strip()
        if text != "max":
            cgroup_free = int(text) - int(Path("/sys/fs/cgroup/memory.current").read_text())
            return min(available, max(cgroup_free, 0))
    except (OSError, ValueError):
        pass
    return available


def resolve_budget(configured: int) -> int:
    """Bytes all models may use: configured value, ``auto`` (-1) = 80% of what is available now, 0 = no limit."""
    if configured < 0:
        return int(available_bytes() * 0.8)
    return configured


def estimate_load_bytes(artifact_bytes: int, mmap: bool) -> int:
    """A load's expected footprint before it happens (used to decide evictions).

    Runtimes that copy weights need about the artifact size plus working
    memory; mapped weights still become resident as they are touched.
    """
    overhead = 16 * 2**20
    return int(artifact_bytes * (1.1 if mmap else 1.5)) + overhead


def fmt_mb(value: int) -> str:
    """Bytes as a short MB string for messages."""
    return f"{value / 2**20:.1f} MB"


@dataclass(frozen=True)
class Resident:
    """A loaded model as the budget sees it."""

    key: tuple[str, int]
    footprint: int
    idle: bool
    last_used: float


def plan_evictions(loaded: list[Resident], need: int, budget: int) -> list[tuple[str, int]]:
    """Keys to evict (idle ones, least recently used first) so ``need`` more bytes fit; [] if it already fits.

    Raises ValueError with a sized explanation when even evicting every idle model is not enough.
    """
    used = sum(r.footprint for r in loaded)
    if budget <= 0 or used + need <= budget:
        return []
    evict, freed = [], 0
    for resident in sorted((r for r in loaded if r.idle), key=lambda r: r.last_used):
        evict.append(resident.key)
        freed += resident.footprint
        if used - freed + need <= budget:
            return evict
    busy = ", ".join(f"{k[0]} v{k[1]} ({fmt_mb(r)})" for k, r in ((r.key, r.footprint) for r in loaded if not r.idle))
    raise ValueError(
        f"needs about {fmt_mb(need)} but the memory budget is {fmt_mb(budget)} with {fmt_mb(used)} in "
        f"use; evicting every idle model frees only {fmt_mb(freed)}" + (f"; busy: {busy}" if busy else "")
    )
