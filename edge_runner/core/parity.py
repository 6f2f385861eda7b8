"""The parity report: how closely a converted artifact reproduces the model it came from.

Every producer (``edge-runner convert`` for ONNX / OpenVINO / TFLite and for GGUF, and the scripts that
build the embedded defaults through it) stores one ``ParityReport`` as ``manifest.parity``; the format is
documented once, in docs/manifest.md ("Parity report"). The runtime and the converters share this module,
so it needs nothing beyond numpy and the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

CLASSIFIER_TASKS = ("text-classification", "image-classification", "classification")
KINDS = ("tensor", "decoder", "encoder")


@dataclass(frozen=True)
class Thresholds:
    """Limits a report must meet; ``None`` means the metric is not checked for this model."""

    min_cosine: float
    min_top1: float | None = None
    min_sample_cosine: float | None = None

    def to_json(self) -> dict[str, float | None]:
        return {"min_cosine": self.min_cosine, "min_top1": self.min_top1, "min_sample_cosine": self.min_sample_cosine}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Thresholds:
        """Read current and earlier spellings (GGUF reports used the metric names as keys)."""
        cosine = data.get("min_cosine", data.get("mean_cosine", 0.0))
        top1 = data.get("min_top1", data.get("top1_agreement"))
        sample = data.get("min_sample_cosine")
        return cls(float(cosine), _opt_float(top1), _opt_float(sample))


# One table for every producer, keyed by (kind, quantization). "tensor": ONNX / OpenVINO / TFLite outputs
# (top-1 only enforced for classifiers); "decoder": next-token logits of a GGUF LLM at every prompt
# position (top-1 always enforced); "encoder": pooled GGUF embeddings (every sample, not just the mean).
THRESHOLDS: dict[tuple[str, str], Thresholds] = {
    ("tensor", "none"): Thresholds(0.9999, 0.99),
    ("tensor", "fp16"): Thresholds(0.999, 0.95),
    ("tensor", "int8"): Thresholds(0.99, 0.90),
    ("decoder", "f32"): Thresholds(0.999, 0.98),
    ("decoder", "f16"): Thresholds(0.999, 0.95),
    # Q8_0 top-1 is 0.85, not the 0.90 of tensor INT8: it is measured at every position of the sample
    # prompts, and on the random-weight test decoders near-tied logits flip under Q8_0's activation
    # quantization (0.886 seen on a random Qwen2) while trained models reach 0.96-1.0. The 0.90 that an
    # earlier tensor table listed for q8_0 never applied: ONNX/OpenVINO/TFLite refuse q8_0.
    ("decoder", "q8_0"): Thresholds(0.99, 0.85),
    # encoders: every sample's embedding within 0.99 cosine, at any quantization (the fallback row)
    ("encoder", "q8_0"): Thresholds(0.99, None, 0.99),
}
#: the row a quantization without its own row falls back to (K-quants, q4_0, int8 flavours)
FALLBACK = {"tensor": "int8", "decoder": "q8_0", "encoder": "q8_0"}


def quantization_level(quantization: str) -> str:
    """The threshold row of a quantization name (int8-static -> int8, fp16 -> f16 for GGUF kinds)."""
    if quantization.startswith("int8"):
        return "int8"
    return quantization


def thresholds_for(kind: str, quantization: str, task: str = "") -> Thresholds:
    """The limits for ``kind`` at ``quantization``; tensor top-1 is only checked for classifiers."""
    if kind not in KINDS:
        raise ValueError(f"unknown parity kind {kind!r}; expected one of {', '.join(KINDS)}")
    level = quantization_level(quantization)
    limits = THRESHOLDS.get((kind, level)) or THRESHOLDS[(kind, FALLBACK[kind])]
    if kind == "tensor" and task not in CLASSIFIER_TASKS:
        limits = replace(limits, min_top1=None)
    return limits


def _rows(array: np.ndarray) -> np.ndarray:
    if array.ndim == 0:
        return array.reshape(1, 1).astype(np.float64)
    return array.reshape(array.shape[0], -1).astype(np.float64)


def sample_cosines(ref: np.ndarray, art: np.ndarray) -> np.ndarray:
    """Cosine between each sample's flattened outputs (axis 0 = samples); two zero vectors count as 1."""
    a = _rows(ref)
    b = art.reshape(a.shape).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    both_zero = (na == 0) & (nb == 0)
    return np.asarray(np.where(both_zero, 1.0, dots / np.maximum(na * nb, 1e-30)), dtype=np.float64)


def mean_cosine(ref: np.ndarray, art: np.ndarray) -> float:
    """Mean over the samples of the cosine between each sample's flattened outputs."""
    return float(sample_cosines(ref, art).mean())


def top1_agreement(ref: np.ndarray, art: np.ndarray) -> float | None:
    """Share of positions where the arg-max over the last axis agrees; None if not a score output."""
    if ref.ndim < 2 or ref.shape[-1] < 2 or ref.dtype.kind != "f":
        return None
    return float((ref.argmax(axis=-1) == art.argmax(axis=-1)).mean())


def compare_outputs(
    names: Sequence[str], ref: Sequence[np.ndarray], art: Sequence[np.ndarray], task: str
) -> dict[str, dict[str, float]]:
    """Per-output metrics (max_abs_err, mean_cosine, min_cosine, top1_agreement); matched by position."""
    if len(art) < len(ref):
        raise ValueError(f"artifact returned {len(art)} outputs, source {len(ref)}")
    metrics: dict[str, dict[str, float]] = {}
    for name, r, a in zip(names, ref, art, strict=False):
        r, a = np.asarray(r), np.asarray(a)
        if a.size != r.size:
            raise ValueError(f"output {name}: artifact shape {a.shape} differs from source shape {r.shape}")
        a = a.reshape(r.shape)
        cosines = sample_cosines(r, a)
        entry = {
            "max_abs_err": float(np.max(np.abs(r.astype(np.float64) - a.astype(np.float64)))) if r.size else 0.0,
            "mean_cosine": float(cosines.mean()),
            "min_cosine": float(cosines.min()),
        }
        if task != "feature-extraction":
            top1 = top1_agreement(r, a)
            if top1 is not None:
                entry["top1_agreement"] = top1
        metrics[name] = entry
    return metrics


def alone_feeds(feeds: Mapping[str, np.ndarray], mask: str = "attention_mask") -> list[dict[str, np.ndarray]] | None:
    """Each row of a padded text batch as a batch of one, cut to its own tokens (``mask`` == 1).

    Inputs shaped like the mask are cut to the row's token positions (right or left padding); others keep
    the row. None when ``feeds`` has no 2-D ``mask``.
    """
    attention = feeds.get(mask)
    if attention is None or np.ndim(attention) != 2:
        return None
    rows = []
    for i in range(attention.shape[0]):
        keep = np.flatnonzero(np.asarray(attention[i]) != 0)
        rows.append(
            {
                name: (value[i : i + 1, keep] if value.shape[:2] == attention.shape else value[i : i + 1])
                for name, value in feeds.items()
            }
        )
    return rows


def alone_vs_batch(batch_output: np.ndarray, alone_outputs: Sequence[np.ndarray]) -> np.ndarray:
    """Cosine, per text, between its output inside the padded batch and its output run alone."""
    alone = np.concatenate([np.asarray(a).reshape(1, -1) for a in alone_outputs])
    return sample_cosines(np.asarray(batch_output).reshape(len(alone), -1), alone)


def check(metrics: Mapping[str, float | None], limits: Thresholds) -> list[str]:
    """The limits the primary output's ``metrics`` miss, as short sentences naming the metric."""
    failures = []
    cosine = metrics.get("mean_cosine")
    if cosine is None or not cosine >= limits.min_cosine:
        failures.append(f"mean_cosine {_fmt(cosine)} < {limits.min_cosine}")
    worst = metrics.get("min_cosine")
    if limits.min_sample_cosine is not None and (worst is None or not worst >= limits.min_sample_cosine):
        failures.append(f"min_cosine {_fmt(worst)} < {limits.min_sample_cosine}")
    top1 = metrics.get("top1_agreement")
    if limits.min_top1 is not None and (top1 is None or not top1 >= limits.min_top1):
        failures.append(f"top1_agreement {_fmt(top1)} < {limits.min_top1}")
    return failures


@dataclass(frozen=True)
class ParityReport:
    """One conversion's parity: the artifact, run by the runtime that serves it, against its source.

    ``max_abs_err`` / ``mean_cosine`` / ``top1_agreement`` are those of ``primary_output`` (the output the
    thresholds are checked on); ``outputs`` holds the same per output. ``details`` carries what only one
    producer measures (GGUF tokenizer agreement, held-out accuracy of the embedded defaults, ...).
    """

    kind: str
    samples: int
    primary_output: str
    max_abs_err: float | None
    mean_cosine: float | None
    top1_agreement: float | None
    outputs: dict[str, dict[str, float]]
    size_source_bytes: int
    size_artifact_bytes: int
    latency_source_ms: float | None
    latency_artifact_ms: float | None
    thresholds: Thresholds
    failures: tuple[str, ...]
    passed: bool
    measured_with: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def measure(
        cls,
        *,
        kind: str,
        quantization: str,
        task: str,
        outputs: dict[str, dict[str, float]],
        primary: str,
        samples: int,
        sizes: tuple[int, int],
        latency_ms: tuple[float, float],
        measured_with: str,
        details: Mapping[str, Any] | None = None,
    ) -> ParityReport:
        """A report with ``thresholds``, ``failures`` and ``passed`` filled from the shared table."""
        main = outputs.get(primary) or next(iter(outputs.values()))
        limits = thresholds_for(kind, quantization, task)
        failures = tuple(check(main, limits))
        return cls(
            kind=kind,
            samples=samples,
            primary_output=primary if primary in outputs else next(iter(outputs)),
            max_abs_err=main["max_abs_err"],
            mean_cosine=main["mean_cosine"],
            top1_agreement=main.get("top1_agreement"),
            outputs=outputs,
            size_source_bytes=sizes[0],
            size_artifact_bytes=sizes[1],
            latency_source_ms=latency_ms[0],
            latency_artifact_ms=latency_ms[1],
            thresholds=limits,
            failures=failures,
            passed=not failures,
            measured_with=measured_with,
            details=dict(details or {}),
        )

    @classmethod
    def not_measured(
        cls, kind: str, quantization: str, sizes: tuple[int, int], details: Mapping[str, Any] | None = None
    ) -> ParityReport:
        """A conversion that skipped the check: sizes only, and ``passed`` false, because nothing was shown."""
        return cls(
            kind=kind,
            samples=0,
            primary_output="",
            max_abs_err=None,
            mean_cosine=None,
            top1_agreement=None,
            outputs={},
            size_source_bytes=sizes[0],
            size_artifact_bytes=sizes[1],
            latency_source_ms=None,
            latency_artifact_ms=None,
            thresholds=thresholds_for(kind, quantization),
            failures=("not measured: the parity check was skipped",),
            passed=False,
            details={**(details or {}), "skipped": True},
        )

    def with_details(self, more: Mapping[str, Any]) -> ParityReport:
        """The same report with ``more`` added to ``details``."""
        return replace(self, details={**self.details, **more})

    def to_json(self) -> dict[str, Any]:
        """The ``manifest.parity`` object (keys documented in docs/manifest.md)."""
        src, art = self.size_source_bytes, self.size_artifact_bytes
        src_ms, art_ms = self.latency_source_ms, self.latency_artifact_ms
        return {
            "kind": self.kind,
            "samples": self.samples,
            "primary_output": self.primary_output,
            "max_abs_err": self.max_abs_err,
            "mean_cosine": self.mean_cosine,
            "top1_agreement": self.top1_agreement,
            "outputs": {name: dict(metrics) for name, metrics in self.outputs.items()},
            "size_bytes": {"source": src, "artifact": art, "ratio": art / src if src else None},
            "latency_ms": {
                "source": src_ms,
                "artifact": art_ms,
                "speedup": src_ms / art_ms if src_ms is not None and art_ms else None,
            },
            "thresholds": self.thresholds.to_json(),
            "failures": list(self.failures),
            "passed": self.passed,
            "measured_with": self.measured_with,
            "details": dict(self.details),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ParityReport:
        """Read a ``manifest.parity`` object, including the reports of earlier manifests.

        Earlier GGUF reports (``positions``, ``latency_ms_before/after``, ``size_bytes_before/after``) and
        the first embedded defaults (``heldout_*`` keys, no ``passed``) map onto the fields; every key
        without a field lands in ``details``.
        """
        known = {f for f in cls.__dataclass_fields__} | {"size_bytes", "latency_ms"}
        legacy = {"latency_ms_before", "latency_ms_after", "size_bytes_before", "size_bytes_after"}
        details = dict(data.get("details", {}))
        details.update({k: v for k, v in data.items() if k not in known and k not in legacy})
        samples = data.get("samples", data.get("positions", data.get("heldout_samples", 0)))
        size = data.get("size_bytes")
        size = size if isinstance(size, Mapping) else {}
        latency = data.get("latency_ms")
        latency = latency if isinstance(latency, Mapping) else {}
        kind = str(data.get("kind", "tensor"))
        failures = tuple(str(f) for f in data.get("failures", ()))
        return cls(
            kind=kind,
            samples=int(samples or 0),
            primary_output=str(data.get("primary_output", "")),
            max_abs_err=_opt_float(data.get("max_abs_err")),
            mean_cosine=_opt_float(data.get("mean_cosine")),
            top1_agreement=_opt_float(data.get("top1_agreement")),
            outputs={str(k): dict(v) for k, v in dict(data.get("outputs", {})).items()},
            size_source_bytes=int(size.get("source", data.get("size_bytes_before", 0)) or 0),
            size_artifact_bytes=int(size.get("artifact", data.get("size_bytes_after", 0)) or 0),
            latency_source_ms=_opt_float(latency.get("source", data.get("latency_ms_before"))),
            latency_artifact_ms=_opt_float(latency.get("artifact", data.get("latency_ms_after"))),
            thresholds=Thresholds.from_json(dict(data.get("thresholds", {}))),
            failures=failures,
            # a report that never said (the first embedded defaults) did not pass a check
            passed=bool(data.get("passed", False)),
            measured_with=str(data.get("measured_with", "")),
            details=details,
        )

    def summary_lines(self) -> list[str]:
        """A human-readable summary."""
        head = f"parity ({self.kind}) on {self.samples} samples"
        if self.primary_output:
            head += f" ({self.primary_output})"
        if self.measured_with:
            head += f" through {self.measured_with}"
        head += f": max abs err {_fmt(self.max_abs_err, '.3g')}, mean cosine {_fmt(self.mean_cosine)}"
        if self.top1_agreement is not None:
            head += f", top-1 {self.top1_agreement:.3f}"
        src, art = self.size_source_bytes, self.size_artifact_bytes
        size = f"size {src / 1e6:.2f} MB -> {art / 1e6:.2f} MB" + (f" ({art / src:.2f}x)" if src else "")
        lines = [head, size]
        if self.latency_source_ms is not None and self.latency_artifact_ms is not None:
            speed = self.latency_source_ms / self.latency_artifact_ms if self.latency_artifact_ms else None
            lines.append(
                f"latency {self.latency_source_ms:.2f} ms -> {self.latency_artifact_ms:.2f} ms"
                + (f" ({speed:.2f}x faster)" if speed else "")
            )
        consistency = self.details.get("batch_consistency")
        if isinstance(consistency, Mapping) and isinstance(consistency.get("min_cosine"), Mapping):
            figures = ", ".join(f"{k} {_fmt(_opt_float(v))}" for k, v in consistency["min_cosine"].items())
            lines.append(f"one text alone vs in a padded batch, min cosine: {figures}")
        lines.append("parity: PASS" if self.passed else "parity: FAIL - " + "; ".join(self.failures))
        return lines


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _fmt(value: float | None, spec: str = ".6f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)
