"""The loaded source model, whatever framework it came from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters.options import InputSpec

Feeds = dict[str, np.ndarray]
Reference = Callable[[Feeds], list[np.ndarray]]


@dataclass
class Source:
    """A source model ready for export, with a reference runner for parity checks.

    ``model`` is the framework object the exporters take (a torch module or
    ExportedProgram, a TF SavedModel path, ...). ``reference`` runs the source on
    numpy feeds and returns its outputs in ``output_names`` order.
    """

    kind: str
    framework: str
    path: Path
    model: Any
    inputs: list[InputSpec]
    output_names: list[str]
    reference: Reference
    task: str = ""
    size_bytes: int = 0
    extra_files: list[Path] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    int_high: int = 2
    sample_feeds: Callable[[int], Feeds] | None = None
    #: text models: texts -> feeds (padded batch); calibration from texts (``--calibration-texts``) needs it
    tokenize: Callable[[list[str]], Feeds] | None = None
    primary_output: str = ""

    @property
    def primary(self) -> str:
        """The output that parity thresholds are checked on."""
        return self.primary_output or self.output_names[0]


def flatten_outputs(value: Any) -> list[Any]:
    """Tensors of a (possibly nested) model output, in order."""
    if isinstance(value, dict):
        items: list[Any] = []
        for v in value.values():
            items.extend(flatten_outputs(v))
        return items
    if isinstance(value, list | tuple):
        items = []
        for v in value:
            items.extend(flatten_outputs(v))
        return items
    if value is None:
        return []
    return [value]


def path_size(path: Path) -> int:
    """Bytes of a file, or of all files under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def generated_feeds(inputs: list[InputSpec], batch: int, int_high: int, seed: int = 0) -> Feeds:
    """Random feeds of the right dtype and shape; integer inputs in [0, int_high)."""
    rng = np.random.default_rng(seed)
    feeds: Feeds = {}
    for spec in inputs:
        shape = (batch, *spec.dims[1:])
        if spec.dtype.startswith("float"):
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == "bool":
            feeds[spec.name] = np.ones(shape, dtype=bool)
        elif "mask" in spec.name:
            feeds[spec.name] = np.ones(shape, dtype=spec.dtype)
        else:
            feeds[spec.name] = rng.integers(0, max(int_high, 1), size=shape).astype(spec.dtype)
    return feeds
