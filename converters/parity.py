"""Parity of an ONNX / OpenVINO / TFLite artifact, measured through the backend that will serve it.

The artifact folder is loaded exactly as the model repository would load it (its manifest, the
registry's default backend for the format, CPU), the source and the backend run the same feeds, and the
shared :class:`edge_runner.core.parity.ParityReport` records the comparison. What the serving path does
(input handling, OpenVINO's f32 precision default, TFLite batch resizing) is therefore what is measured.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from converters.sources.base import Feeds, Source
from edge_runner.backends.base import Backend, LoadOptions
from edge_runner.core.datatypes import to_numpy
from edge_runner.core.errors import InvalidInput
from edge_runner.core.manifest import Manifest
from edge_runner.core.parity import ParityReport, alone_feeds, alone_vs_batch, compare_outputs, sample_cosines

Runner = Callable[[Feeds], list[np.ndarray]]
#: ``evaluate(source_outputs, artifact_outputs)`` -> extra numbers for the report's ``details``
Evaluate = Callable[[list[np.ndarray], list[np.ndarray]], dict[str, Any]]


def serving_backend(manifest: Manifest) -> str:
    """The backend that serves ``manifest`` by default (its pinned one, else the format's own)."""
    from edge_runner.backends.registry import default_backend_for_format

    name = manifest.backend or default_backend_for_format(manifest.format)
    if name is None:
        raise ValueError(f"no backend serves format {manifest.format!r}")
    return name


@contextmanager
def served(manifest: Manifest, folder: Path, output_names: list[str]) -> Iterator[tuple[Runner, Backend]]:
    """A runner over the loaded serving backend: feeds in, outputs in ``output_names`` order out."""
    from edge_runner.backends.registry import get_backend

    backend = get_backend(serving_backend(manifest))(manifest, folder, LoadOptions())
    backend.load()
    try:
        meta = backend.metadata()
        specs = {t.name: t for t in meta.inputs}
        order = [t.name for t in meta.outputs]

        def run(feeds: Feeds) -> list[np.ndarray]:
            missing = [n for n in specs if n not in feeds]
            if missing:
                raise ValueError(f"the artifact takes inputs {missing} the source does not")
            inputs = {n: np.ascontiguousarray(feeds[n], dtype=_dtype(specs[n].datatype, feeds[n])) for n in specs}
            result = backend.infer(inputs)
            # outputs by name where the artifact kept the source's names, else by position
            names = output_names if all(n in result for n in output_names) else order
            return [np.asarray(result[n]) for n in names]

        yield run, backend
    finally:
        backend.unload()


def _dtype(datatype: str, value: np.ndarray) -> np.dtype[Any]:
    try:
        return to_numpy(datatype)
    except InvalidInput:
        return value.dtype


def median_latency_ms(run: Runner, feeds: Feeds, repeats: int = 5) -> float:
    """Median wall time of ``run(feeds)`` in milliseconds, after one warm-up call."""
    run(feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def measure(
    source: Source,
    manifest: Manifest,
    folder: Path,
    feeds: Feeds,
    size_artifact_bytes: int,
    evaluate: Evaluate | None = None,
    label: str = "",
    compare: dict[str, Path] | None = None,
) -> ParityReport:
    """Run ``source`` and the served artifact on ``feeds``; the parity report (thresholds applied).

    Text encoders also get ``details.batch_consistency`` / ``details.cosine_vs_source`` (see
    ``encoder_details``), for the artifact (named ``label``) and each file of ``compare``.
    Raises ValueError when the artifact's outputs cannot be matched with the source's.
    """
    with served(manifest, folder, source.output_names) as (run, backend):
        ref, art = source.reference(feeds), run(feeds)
        outputs = compare_outputs(source.output_names, ref, art, source.task)
        latency = (median_latency_ms(source.reference, feeds), median_latency_ms(run, feeds))
        device = backend.metadata().device
        details = evaluate(ref, art) if evaluate is not None else {}
        if source.task == "feature-extraction":
            runs = {label or manifest.quantization: (run, art), **_onnx_runs(compare or {}, source.output_names, feeds)}
            details.update(encoder_details(source, feeds, ref, runs))
    samples = next(iter(feeds.values())).shape[0]
    return ParityReport.measure(
        kind="tensor",
        quantization=manifest.quantization,
        task=source.task,
        outputs=outputs,
        primary=source.primary,
        samples=samples,
        sizes=(source.size_bytes, size_artifact_bytes),
        latency_ms=latency,
        measured_with=f"{backend.name} ({device})",
        details=details,
    )


def _onnx_runs(
    files: dict[str, Path], output_names: list[str], feeds: Feeds
) -> dict[str, tuple[Runner, list[np.ndarray]]]:
    """Runners (and their outputs on ``feeds``) over ONNX files with a plain ONNX Runtime CPU session."""
    import onnxruntime as ort

    runs: dict[str, tuple[Runner, list[np.ndarray]]] = {}
    for name, path in files.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = [i.name for i in session.get_inputs()]

        def run(f: Feeds, session: Any = session, inputs: list[str] = inputs) -> list[np.ndarray]:
            return [np.asarray(o) for o in session.run(output_names, {n: f[n] for n in inputs})]

        runs[name] = (run, run(feeds))
    return runs


def encoder_details(
    source: Source, feeds: Feeds, ref: list[np.ndarray], runs: dict[str, tuple[Runner, list[np.ndarray]]]
) -> dict[str, Any]:
    """Per-text cosine against the FP32 source, and each text alone vs inside the padded batch.

    ``runs`` maps a flavour name (``int8-static``, ``int8-dynamic``, ...) to its runner and its outputs on
    the padded batch ``feeds``; the source itself is measured as ``fp32-source``. Dynamic INT8 picks its
    activation ranges per call, so a text's embedding depends on what it is batched with; FP32 and static
    INT8 do not. Empty when ``feeds`` is not a text batch with an attention mask.
    """
    alone = alone_feeds(feeds)
    if alone is None or source.primary not in source.output_names:
        return {}
    index = source.output_names.index(source.primary)
    mask = feeds["attention_mask"]

    def consistency(run: Runner, batch_output: np.ndarray) -> float:
        return float(alone_vs_batch(batch_output, [run(f)[index] for f in alone]).min())

    min_cosine = {"fp32-source": consistency(source.reference, ref[index])}
    vs_source = {}
    for name, (run, outputs) in runs.items():
        min_cosine[name] = consistency(run, outputs[index])
        cosines = sample_cosines(ref[index], np.asarray(outputs[index]).reshape(ref[index].shape))
        vs_source[name] = {
            "per_text": [float(c) for c in cosines],
            "min": float(cosines.min()),
            "mean": float(cosines.mean()),
        }
    return {
        "batch_consistency": {
            "output": source.primary,
            "texts": len(alone),
            "padded_texts": int((np.asarray(mask).sum(axis=1) < mask.shape[1]).sum()),
            "min_cosine": min_cosine,
        },
        "cosine_vs_source": vs_source,
    }
