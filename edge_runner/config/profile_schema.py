"""The strict schema of hardware profile files (documented in ``docs/profiles.md``).

Each table maps its keys to a checker that returns an error text or ``""``. Unknown tables, unknown
keys and wrong types raise ``ConfigError`` naming the file and the dotted key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from edge_runner.core.errors import ConfigError

Checker = Callable[[Any], str]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any) -> str:
    return "" if _is_int(value) else "expected an integer"


def _number(value: Any) -> str:
    return "" if _is_int(value) or isinstance(value, float) else "expected a number"


def _bool(value: Any) -> str:
    return "" if isinstance(value, bool) else "expected true or false"


def _str(value: Any) -> str:
    return "" if isinstance(value, str) else "expected a string"


def _str_or_int(value: Any) -> str:
    return "" if isinstance(value, str) or _is_int(value) else "expected a string or an integer"


def _duration(value: Any) -> str:
    return "" if isinstance(value, str | float) or _is_int(value) else "expected a duration (5m, 30s, -1)"


def _scalar(value: Any) -> str:
    return "" if isinstance(value, str | bool | float) or _is_int(value) else "expected a string, number or bool"


def _one_of(*choices: str) -> Checker:
    return lambda v: "" if v in choices else f"expected one of {', '.join(choices)}"


def _list_of(item: Checker, what: str) -> Checker:
    def check(value: Any) -> str:
        if not isinstance(value, list):
            return f"expected a list of {what}"
        errors = [(i, item(x)) for i, x in enumerate(value)]
        bad = [f"item {i + 1}: {e}" for i, e in errors if e]
        return f"{bad[0]} (expected a list of {what})" if bad else ""

    return check


def _positive_int(value: Any) -> str:
    return "" if _is_int(value) and value > 0 else "expected a positive integer"


def _table_of(item: Checker, what: str) -> Checker:
    def check(value: Any) -> str:
        if not isinstance(value, dict):
            return f"expected a table of {what}"
        bad = [k for k, v in value.items() if item(v)]
        return f"{bad[0]}: {item(value[bad[0]])}" if bad else ""

    return check


def _record(schema: Mapping[str, Checker], required: tuple[str, ...] = ()) -> Checker:
    def check(value: Any) -> str:
        if not isinstance(value, dict):
            return "expected a table"
        for key in required:
            if key not in value:
                return f"missing required key {key!r}"
        for key, item in value.items():
            if key not in schema:
                return f"unknown key {key!r} (known: {', '.join(schema)})"
            error = schema[key](item)
            if error:
                return f"{key}: {error}"
        return ""

    return check


_STRINGS = _list_of(_str, "strings")
_SCALARS = _table_of(_scalar, "strings, numbers or bools")

SETTINGS: dict[str, Checker] = {
    "threads": _int,
    "max_batch_size": _int,
    "max_queue_delay_ms": _number,
    "preferred_batch_sizes": _list_of(_int, "integers"),
    "dynamic_batching": _bool,
    "memory_budget": _str_or_int,
    "max_concurrent_requests": _int,
    "max_queue_size": _int,
    "keep_alive": _duration,
}

SCHEMA: dict[str, dict[str, Checker]] = {
    "profile": {
        "description": _str,
        "backend_order": _STRINGS,
        "quantization_preset": _str,
    },
    "settings": SETTINGS,
    "onnxruntime": {
        "devices": _STRINGS,
        "provider_options": _table_of(_SCALARS, "provider tables"),
        "inter_op_threads": _int,
        "use_mmap": _bool,
    },
    "openvino": {
        "devices": _STRINGS,
        "performance_hint": _one_of("latency", "throughput", "cumulative_throughput"),
        "num_streams": _str_or_int,
        "inference_precision": lambda v: _str(v) and _table_of(_str, "device = precision")(v),
        "static_shapes": _bool,
        "static_batch_sizes": _list_of(_positive_int, "positive integers"),
        "num_requests": _int,
        "config": _SCALARS,
        "use_mmap": _bool,
    },
    "llama_cpp": {
        "devices": _STRINGS,
        "n_gpu_layers": _int,
        "n_batch": _int,
        "parallel": _int,
        "max_queue": _int,
        "use_mmap": _bool,
    },
    "tflite": {
        "devices": _STRINGS,
        "delegates": _table_of(
            _record({"library": _str, "options": _SCALARS}, required=("library",)), "delegate tables"
        ),
    },
    "auto": {
        "rules": _list_of(
            _record(
                {
                    "profile": _str,
                    "reason": _str,
                    "when": _record(
                        {
                            "arch": lambda v: _str(v) and _STRINGS(v),
                            "nvidia_gpu": _bool,
                            "jetson": _bool,
                            "npu": _bool,
                            "max_ram_gib": _number,
                            "min_ram_gib": _number,
                            "max_cores": _int,
                        }
                    ),
                },
                required=("profile",),
            ),
            "rule tables with profile, when and reason",
        ),
    },
}

#: the backend tables (everything else in a profile is profile-wide)
BACKEND_TABLES = ("onnxruntime", "openvino", "llama_cpp", "tflite")


def validate_profile(data: Mapping[str, Any], source: str) -> None:
    """Raise ConfigError for the first unknown table/key or wrongly typed value in ``data``."""
    for table, body in data.items():
        schema = SCHEMA.get(table)
        if schema is None:
            raise ConfigError(f"profile {source}: unknown table [{table}]; known tables: {', '.join(SCHEMA)}")
        if not isinstance(body, dict):
            raise ConfigError(f"profile {source}: {table} must be a table ([{table}])")
        for key, value in body.items():
            if key not in schema:
                raise ConfigError(
                    f"profile {source}: unknown key {table}.{key}; known keys of [{table}]: {', '.join(schema)}"
                )
            error = schema[key](value)
            if error:
                raise ConfigError(f"profile {source}: bad value for {table}.{key}: {error}, got {value!r}")
    if "auto" in data and "rules" not in data["auto"]:
        raise ConfigError(f"profile {source}: [auto] needs a rules list")
    order = data.get("profile", {}).get("backend_order", [])
    if order:
        from edge_runner.backends.registry import all_backend_names

        known = all_backend_names()
        unknown = [b for b in order if b not in known]
        if unknown:
            raise ConfigError(
                f"profile {source}: bad value for profile.backend_order: unknown backend "
                f"{unknown[0]!r}; known backends: {', '.join(known)}"
            )
