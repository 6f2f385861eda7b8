"""Converters from strings (env, files, flags) to typed setting values; each raises ValueError on bad input."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


def to_bool(value: Any) -> bool:
    """Accept bools and the usual strings."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false, 1/0, yes/no), got {value!r}")


def to_bytes(value: Any) -> int:
    """Sizes like ``512MB``, ``1.5GiB``, ``0`` (none) or a plain number of bytes; ``auto`` is -1."""
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text == "auto":
        return -1
    match = re.fullmatch(r"([0-9.]+)\s*([a-z]*)", text)
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ValueError(f"expected a size like 512MB, 2GiB, 1000000 or auto, got {value!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def to_duration_s(value: Any) -> float:
    """Durations like ``5m``, ``30s``, ``250ms``; ``-1`` means forever, ``0`` means now."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 5m, 30s, 250ms, 0 or -1, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite duration, got {value!r}")
        return float(value)
    text = str(value).strip().lower()
    match = re.fullmatch(r"(-?[0-9.]+)\s*(ms|s|m|h|)", text)
    if not match:
        raise ValueError(f"expected a duration like 5m, 30s, 250ms, 0 or -1, got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def int_at_least(low: int, high: int | None = None) -> Callable[[Any], int]:
    """An int converter that refuses values outside [low, high]."""

    def convert(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        number = int(value)
        if number < low or (high is not None and number > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"must be {bounds}, got {number}")
        return number

    return convert


def one_of(*choices: str) -> Callable[[Any], str]:
    """A string converter restricted to ``choices``."""

    def convert(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return convert


def to_version_policy(value: Any) -> str:
    """``latest``, ``latest:N`` (N >= 1), ``all`` or ``specific:1,2``."""
    text = str(value).strip()
    if re.fullmatch(r"latest(:[1-9][0-9]*)?|all|specific:[0-9]+(,[0-9]+)*", text) is None:
        raise ValueError(f"expected latest, latest:N (N >= 1), all or specific:1,2, got {value!r}")
    return text


def to_float_at_least_zero(value: Any) -> float:
    """A finite, non-negative float."""
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"must be a finite number >= 0, got {value!r}")
    return number


def to_int_list(value: Any) -> tuple[int, ...]:
    """``"1,4,8"`` or a list -> tuple of ints."""
    items = value if isinstance(value, list | tuple) else [v for v in str(value).split(",") if v.strip()]
    return tuple(int(v) for v in items)


def to_str_list(value: Any) -> tuple[str, ...]:
    """``"a,b"`` or a list -> tuple of str."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(str(v).strip() for v in items if str(v).strip())
