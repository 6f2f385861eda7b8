"""Independent checks of a converted artifact: served by its backend, compared in the test with the source.

The converter's own ``parity.passed`` is the converter grading itself; these helpers load the written folder
through the serving backend (the registry's, as ``edge-runner serve`` would), run the source framework in the
test on the same inputs, and compare the two with plain numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_runner.backends.base import LoadOptions
from edge_runner.backends.registry import default_backend_for_format, get_backend
from edge_runner.core.datatypes import to_numpy
from edge_runner.core.manifest import read_manifest

# the documented limits (docs/manifest.md, "Parity report"): min mean cosine, min top-1 for classifiers;
# FP32 is held to 0.999 here, below the converter's own 0.9999, as an independent sanity bound
LIMITS = {"none": (0.999, 0.99), "fp16": (0.999, 0.95), "int8": (0.99, 0.90)}


def served_outputs(folder: Path, feeds: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the artifact in ``folder`` on ``feeds``, through its serving backend on CPU."""
    manifest = read_manifest(folder)
    name = manifest.backend or default_backend_for_format(manifest.format)
    assert name is not None, manifest.format
    backend = get_backend(name)(manifest, folder, LoadOptions(threads=1))
    backend.load()
    try:
        specs = backend.metadata().inputs
        if isinstance(feeds, np.ndarray):
            assert len(specs) == 1, [s.name for s in specs]
            feeds = {specs[0].name: feeds}
        return backend.infer({s.name: np.asarray(feeds[s.name], dtype=to_numpy(s.datatype)) for s in specs})
    finally:
        backend.unload()


def cosines(expected: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Cosine of each sample's flattened outputs."""
    a = np.asarray(expected, np.float64).reshape(len(expected), -1)
    b = np.asarray(got, np.float64).reshape(a.shape)
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def assert_close(expected: np.ndarray, got: np.ndarray, level: str = "none", classifier: bool = False) -> None:
    """Mean cosine (and top-1 agreement for classifiers) within the documented limits of ``level``."""
    min_cosine, min_top1 = LIMITS[level]
    cos = cosines(expected, got)
    assert cos.mean() >= min_cosine, (level, cos)
    if classifier:
        top1 = float(np.mean(np.argmax(expected, -1) == np.argmax(np.asarray(got).reshape(expected.shape), -1)))
        assert top1 >= min_top1, (level, top1)


def assert_parity(
    result: Any,
    expected: np.ndarray,
    feeds: Mapping[str, np.ndarray] | np.ndarray,
    level: str = "none",
    *,
    output: str | None = None,
    classifier: bool = False,
) -> dict[str, np.ndarray]:
    """Exit 0 with a passing report, and the served artifact matching ``expected`` (the source's output)."""
    assert result.rc == 0, result.stderr
    assert result.parity["passed"] is True, result.parity
    got = served_outputs(result.out, feeds)
    assert_close(expected, got[output] if output else next(iter(got.values())), level, classifier)
    return got
