"""KServe v2 datatypes and their numpy equivalents."""

from __future__ import annotations

import numpy as np

from edge_runner.core.errors import InvalidInput

# BYTES maps to numpy object arrays of ``bytes``; BF16 has no numpy dtype and
# travels as raw uint16 words (the runtime that accepts it decides).
_TO_NUMPY: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
    "BF16": np.dtype(np.uint16),
}

_FROM_NUMPY: dict[str, str] = {str(dt): name for name, dt in _TO_NUMPY.items() if name not in ("BYTES", "BF16")}

DATATYPES = tuple(_TO_NUMPY)


def to_numpy(datatype: str) -> np.dtype[np.generic]:
    """numpy dtype for a KServe datatype name; InvalidInput if unknown."""
    try:
        return _TO_NUMPY[datatype]
    except KeyError:
        raise InvalidInput(f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}") from None


def from_numpy(dtype: np.dtype[np.generic]) -> str:
    """KServe datatype name for a numpy dtype (object/str/bytes -> BYTES)."""
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    try:
        return _FROM_NUMPY[str(dtype)]
    except KeyError:
        raise InvalidInput(f"numpy dtype {dtype} has no KServe datatype") from None


def element_size(datatype: str) -> int:
    """Bytes per element in the binary encoding (BYTES is variable: 0)."""
    if datatype == "BYTES":
        return 0
    return int(to_numpy(datatype).itemsize)
