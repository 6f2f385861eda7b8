"""Input validation against a model's metadata: once, in shared code, for every backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edge_runner.backends.base import ModelMetadata
from edge_runner.core.errors import InvalidInput
from edge_runner.core.manifest import TensorSpec


def _check_shape(spec: TensorSpec, shape: tuple[int, ...]) -> None:
    if len(shape) != len(spec.shape):
        raise InvalidInput(
            f"input {spec.name!r}: expected rank {len(spec.shape)} with shape {list(spec.shape)} "
            f"(-1 = any), got shape {list(shape)}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
        if want >= 0 and want != got:
            raise InvalidInput(
                f"input {spec.name!r}: dimension {axis} must be {want} (expected shape "
                f"{list(spec.shape)}, -1 = any), got shape {list(shape)}"
            )


def validate_inputs(
    meta: ModelMetadata,
    inputs: Mapping[str, np.ndarray],
    datatypes: Mapping[str, str],
    outputs: Sequence[str] | None,
    max_elements: int = 1 << 28,
) -> None:
    """Check names, datatypes, shapes and requested outputs; raise InvalidInput saying what was expected."""
    specs = {spec.name: spec for spec in meta.inputs}
    for name in inputs:
        if name not in specs:
            raise InvalidInput(f"unknown input {name!r}; the model's inputs are {sorted(specs)}")
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise InvalidInput(f"missing input(s) {missing}; the model needs {sorted(specs)}")
    for name, array in inputs.items():
        spec = specs[name]
        if datatypes.get(name, spec.datatype) != spec.datatype:
            raise InvalidInput(f"input {name!r}: expected datatype {spec.datatype}, got {datatypes[name]}")
        _check_shape(spec, tuple(array.shape))
        if array.size > max_elements:
            raise InvalidInput(f"input {name!r}: {array.size} elements exceeds the limit of {max_elements}")
    batch_sizes = {int(a.shape[0]) for a in inputs.values() if a.ndim}
    if meta.capabilities.batching and len(batch_sizes) > 1:
        raise InvalidInput(f"inputs disagree on the batch dimension: {sorted(batch_sizes)}")
    if outputs is not None:
        known = {spec.name for spec in meta.outputs}
        for name in outputs:
            if name not in known:
                raise InvalidInput(f"unknown output {name!r}; the model's outputs are {sorted(known)}")
