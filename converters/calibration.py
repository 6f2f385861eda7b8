"""Calibration data: a .npy/.npz file or a folder of them, split into single-sample feeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converters.errors import ConversionError
from converters.options import InputSpec
from converters.sources.base import Feeds, Source, generated_feeds

MAX_SAMPLES = 64
MAX_PARITY_SAMPLES = 1024  # --parity-data: held-out sets are bigger than calibration sets


def _from_file(path: Path, inputs: list[InputSpec]) -> Feeds:
    try:
        data = np.load(str(path), allow_pickle=False)
    except Exception as exc:
        raise ConversionError(
            f"calibration file {path} is not a readable .npy/.npz ({exc})", "save arrays with numpy.save / numpy.savez"
        ) from exc
    if isinstance(data, np.ndarray):
        if len(inputs) != 1:
            raise ConversionError(
                f"{path} holds one array but the model has {len(inputs)} inputs",
                "use an .npz with one array per input name: " + ", ".join(s.name for s in inputs),
            )
        return {inputs[0].name: data}
    with data:
        missing = [s.name for s in inputs if s.name not in data.files]
        if missing:
            raise ConversionError(
                f"{path} lacks arrays for inputs {missing} (has {data.files})",
                "name the .npz arrays after the model inputs",
            )
        return {s.name: data[s.name] for s in inputs}


def _check(feeds: Feeds, inputs: list[InputSpec], where: Path) -> Feeds:
    out: Feeds = {}
    for spec in inputs:
        value = feeds[spec.name]
        if value.ndim == len(spec.dims) - 1:
            value = value[None, ...]
        if value.ndim != len(spec.dims):
            raise ConversionError(
                f"calibration input {spec.name} in {where} has shape {value.shape}, "
                f"expected rank {len(spec.dims)} like {spec.dims}",
                "match the model's input rank",
            )
        out[spec.name] = value.astype(spec.dtype, copy=False)
    return out


def load_calibration(
    path: Path, inputs: list[InputSpec], limit: int = MAX_SAMPLES, flag: str = "--calibration"
) -> list[Feeds]:
    """Single-sample feeds (batch of 1) from ``path``, at most ``limit`` of them."""
    if not path.exists():
        raise ConversionError(f"{flag} {path} does not exist", "give a .npy, .npz or a folder of them")
    files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz")) if path.is_dir() else [path]
    if not files:
        raise ConversionError(f"{flag} folder {path} holds no .npy/.npz files", "add samples saved with numpy")
    samples: list[Feeds] = []
    for file in files:
        batch = _check(_from_file(file, inputs), inputs, file)
        count = next(iter(batch.values())).shape[0]
        samples.extend({k: v[i : i + 1] for k, v in batch.items()} for i in range(count))
        if len(samples) >= limit:
            break
    return samples[:limit]


def stack(samples: list[Feeds]) -> Feeds:
    """One batch from single-sample feeds (they must share shapes)."""
    return {k: np.concatenate([s[k] for s in samples], axis=0) for k in samples[0]}


def parity_feeds(source: Source, calibration: list[Feeds], count: int) -> Feeds:
    """Sample inputs for parity: calibration samples, tokenized sample texts, or generated ones."""
    if calibration:
        chosen = calibration[:count]
        shapes = {tuple(v.shape for v in s.values()) for s in chosen}
        return stack(chosen) if len(shapes) == 1 else chosen[0]
    if source.sample_feeds is not None:
        return source.sample_feeds(count)
    return generated_feeds(source.inputs, count, source.int_high, seed=1)
