"""Parity between a source model and its artifact: errors, cosine, top-1, size and latency.

Thresholds depend on the quantization level; ``check`` lists the ones missed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

THRESHOLDS: dict[str, dict[str, float]] = {
    "none": {"min_cosine": 0.9999, "min_top1": 0.99},
    "fp16": {"min_cosine": 0.999, "min_top1": 0.95},
    "int8": {"min_cosine": 0.99, "min_top1": 0.90},
    "q8_0": {"min_cosine": 0.99, "min_top1": 0.90},
}
CLASSIFIER_TASKS = ("text-classification", "image-classification", "classification")


def level(quantization: str) -> str:
    """Threshold level for a quantization name (int8-static -> int8)."""
    return "int8" if quantization.startswith("int8") else quantization


def mean_cosine(ref: np.ndarray, art: np.ndarray) -> float:
    """Mean over the batch of the cosine between each sample's flattened outputs."""
    a = ref.reshape(ref.shape[0], -1).astype(np.float64) if ref.ndim else ref.reshape(1, 1).astype(np.float64)
    b = art.reshape(a.shape).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = np.where(both_zero, 1.0, dots / np.maximum(na * nb, 1e-30))
    return float(cos.mean())


def top1_agreement(ref: np.ndarray, art: np.ndarray) -> float | None:
    """Share of positions where the arg-max over the last axis agrees; None if not a score output."""
    if ref.ndim < 2 or ref.shape[-1] < 2 or ref.dtype.kind != "f":
        return None
    return float((ref.argmax(axis=-1) == art.argmax(axis=-1)).mean())


def compare_outputs(names: list[str], ref: list[np.ndarray], art: list[np.ndarray], task: str) -> dict[str, Any]:
    """Per-output metrics; outputs are matched by position."""
    if len(art) < len(ref):
        raise ValueError(f"artifact returned {len(art)} outputs, source {len(ref)}")
    metrics: dict[str, Any] = {}
    for name, r, a in zip(names, ref, art, strict=False):
        a = np.asarray(a)
        if a.size != r.size:
            raise ValueError(f"output {name}: artifact shape {a.shape} differs from source shape {r.shape}")
        a = a.reshape(r.shape)
        entry: dict[str, Any] = {
            "max_abs_err": float(np.max(np.abs(r.astype(np.float64) - a.astype(np.float64)))) if r.size else 0.0,
            "mean_cosine": mean_cosine(r, a),
        }
        if task != "feature-extraction":
            top1 = top1_agreement(r, a)
            if top1 is not None:
                entry["top1_agreement"] = top1
        metrics[name] = entry
    return metrics


def build_report(
    outputs: dict[str, Any],
    primary: str,
    quantization: str,
    task: str,
    samples: int,
    sizes: tuple[int, int],
    latency_ms: tuple[float, float],
) -> dict[str, Any]:
    """The report stored in the manifest; ``passed``/``failures`` filled from the thresholds."""
    main = outputs.get(primary) or next(iter(outputs.values()))
    src_bytes, art_bytes = sizes
    src_ms, art_ms = latency_ms
    report: dict[str, Any] = {
        "samples": samples,
        "primary_output": primary,
        "max_abs_err": main["max_abs_err"],
        "mean_cosine": main["mean_cosine"],
        "top1_agreement": main.get("top1_agreement"),
        "outputs": outputs,
        "size_bytes": {
            "source": src_bytes,
            "artifact": art_bytes,
            "ratio": art_bytes / src_bytes if src_bytes else None,
        },
        "latency_ms": {"source": src_ms, "artifact": art_ms, "speedup": src_ms / art_ms if art_ms else None},
        "thresholds": dict(THRESHOLDS.get(level(quantization), THRESHOLDS["int8"])),
    }
    report["failures"] = check(report, task)
    report["passed"] = not report["failures"]
    return report


def check(report: dict[str, Any], task: str) -> list[str]:
    """The thresholds a report misses, as short sentences."""
    limits = report["thresholds"]
    failures = []
    if report["mean_cosine"] < limits["min_cosine"]:
        failures.append(f"mean cosine {report['mean_cosine']:.6f} < {limits['min_cosine']}")
    top1 = report.get("top1_agreement")
    if task in CLASSIFIER_TASKS and top1 is not None and top1 < limits["min_top1"]:
        failures.append(f"top-1 agreement {top1:.3f} < {limits['min_top1']}")
    return failures


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A human-readable summary of a report."""
    size, lat = report["size_bytes"], report["latency_ms"]
    lines = [
        f"parity on {report['samples']} samples ({report['primary_output']}): "
        f"max abs err {report['max_abs_err']:.3g}, mean cosine {report['mean_cosine']:.6f}"
        + (f", top-1 {report['top1_agreement']:.3f}" if report.get("top1_agreement") is not None else ""),
        f"size {size['source'] / 1e6:.2f} MB -> {size['artifact'] / 1e6:.2f} MB"
        + (f" ({size['ratio']:.2f}x)" if size["ratio"] else ""),
        f"latency {lat['source']:.2f} ms -> {lat['artifact']:.2f} ms"
        + (f" ({lat['speedup']:.2f}x faster)" if lat["speedup"] else ""),
        "parity: PASS" if report["passed"] else "parity: FAIL - " + "; ".join(report["failures"]),
    ]
    return lines
