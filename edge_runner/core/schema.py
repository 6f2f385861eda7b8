"""Checkers for TOML tables (profiles, backend option tables): each returns an error text, or ``""`` when fine.

Backends declare their profile table with these (``Backend.option_schema``), so a third-party backend's table is
validated like a built-in one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Checker = Callable[[Any], str]


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(value: Any) -> str:
    return "" if is_int(value) else "expected an integer"


def number(value: Any) -> str:
    return "" if is_int(value) or isinstance(value, float) else "expected a number"


def boolean(value: Any) -> str:
    return "" if isinstance(value, bool) else "expected true or false"


def string(value: Any) -> str:
    return "" if isinstance(value, str) else "expected a string"


def string_or_int(value: Any) -> str:
    return "" if isinstance(value, str) or is_int(value) else "expected a string or an integer"


def duration(value: Any) -> str:
    return "" if isinstance(value, str | float) or is_int(value) else "expected a duration (5m, 30s, -1)"


def scalar(value: Any) -> str:
    return "" if isinstance(value, str | bool | float) or is_int(value) else "expected a string, number or bool"


def one_of(*choices: str) -> Checker:
    return lambda v: "" if v in choices else f"expected one of {', '.join(choices)}"


def list_of(item: Checker, what: str) -> Checker:
    def check(value: Any) -> str:
        if not isinstance(value, list):
            return f"expected a list of {what}"
        errors = [(i, item(x)) for i, x in enumerate(value)]
        bad = [f"item {i + 1}: {e}" for i, e in errors if e]
        return f"{bad[0]} (expected a list of {what})" if bad else ""

    return check


def positive_int(value: Any) -> str:
    return "" if is_int(value) and value > 0 else "expected a positive integer"


def table_of(item: Checker, what: str) -> Checker:
    def check(value: Any) -> str:
        if not isinstance(value, dict):
            return f"expected a table of {what}"
        bad = [k for k, v in value.items() if item(v)]
        return f"{bad[0]}: {item(value[bad[0]])}" if bad else ""

    return check


def record(schema: Mapping[str, Checker], required: tuple[str, ...] = ()) -> Checker:
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


STRINGS = list_of(string, "strings")
SCALARS = table_of(scalar, "strings, numbers or bools")
