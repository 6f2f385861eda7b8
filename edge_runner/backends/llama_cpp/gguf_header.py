"""Read a GGUF file's key-value header without loading the model (for memory admission before a load).

Only scalars and strings are kept; arrays (the tokenizer's vocabulary) are skipped. The reader is bounded:
a hostile or truncated file raises ``ValueError`` instead of allocating what its length fields claim.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

MAGIC = b"GGUF"
MAX_KEYS = 1 << 16
MAX_STRING = 1 << 20  # longer metadata strings exist (chat templates) but stay well under this
MAX_ARRAY = 1 << 24
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9

Scalar = int | float | bool | str


def _read(f: BinaryIO, size: int) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return data


def _unpack(f: BinaryIO, fmt: str) -> int | float | bool:
    value: int | float | bool = struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    return value


def _string(f: BinaryIO) -> str:
    length = int(_unpack(f, "<Q"))
    if length > MAX_STRING:
        raise ValueError(f"GGUF string of {length} bytes")
    return _read(f, length).decode("utf-8", errors="replace")


def _skip_array(f: BinaryIO) -> None:
    kind, count = int(_unpack(f, "<I")), int(_unpack(f, "<Q"))
    if count > MAX_ARRAY:
        raise ValueError(f"GGUF array of {count} items")
    if kind == STRING:
        for _ in range(count):
            f.seek(int(_unpack(f, "<Q")), 1)
    elif kind in _SCALARS:
        f.seek(struct.calcsize(_SCALARS[kind]) * count, 1)
    else:
        raise ValueError(f"GGUF array of type {kind}")


def read_header(path: Path) -> dict[str, Scalar]:
    """The scalar and string keys of ``path``'s GGUF header (``general.architecture``, ``llama.block_count``...)."""
    values: dict[str, Scalar] = {}
    with path.open("rb") as f:
        if _read(f, 4) != MAGIC:
            raise ValueError(f"{path.name} is not a GGUF file")
        version = int(_unpack(f, "<I"))
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        _tensors, keys = int(_unpack(f, "<Q")), int(_unpack(f, "<Q"))
        if keys > MAX_KEYS:
            raise ValueError(f"GGUF header claims {keys} keys")
        for _ in range(keys):
            key = _string(f)
            kind = int(_unpack(f, "<I"))
            if kind == STRING:
                values[key] = _string(f)
            elif kind == ARRAY:
                _skip_array(f)
            elif kind in _SCALARS:
                values[key] = _unpack(f, _SCALARS[kind])
            else:
                raise ValueError(f"GGUF key {key!r} has unknown type {kind}")
    return values


def kv_bytes_per_token(header: dict[str, Scalar], bytes_per_value: int = 2) -> int:
    """K and V cache bytes one token takes in every layer (f16 cache by default); 0 when unknown."""
    arch = str(header.get("general.architecture", ""))

    def number(name: str, default: int = 0) -> int:
        value = header.get(f"{arch}.{name}", default)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default

    layers, width, heads = number("block_count"), number("embedding_length"), number("attention.head_count")
    if not (layers and width and heads):
        return 0
    kv_heads = number("attention.head_count_kv", heads) or heads
    key_len = number("attention.key_length", width // heads)
    value_len = number("attention.value_length", width // heads)
    return layers * kv_heads * (key_len + value_len) * bytes_per_value
