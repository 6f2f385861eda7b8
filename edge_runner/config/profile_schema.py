"""The strict schema of hardware profile files (documented in ``docs/profiles.md``).

Profile-wide tables are declared here; each backend's table is the backend's own ``option_schema``
(``edge_runner.backends.registry.option_schemas``), and the ``[settings]`` table is checked by the same
converters as every other settings layer (``edge_runner.config.settings``). Unknown tables, unknown
keys and wrong types raise ``ConfigError`` naming the file and the dotted key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge_runner.backends.registry import all_backend_names, option_schemas
from edge_runner.config.settings import convert_setting
from edge_runner.core.errors import ConfigError
from edge_runner.core.schema import STRINGS, Checker, boolean, integer, list_of, number, record, string

PROFILE_TABLES: dict[str, dict[str, Checker]] = {
    "profile": {
        "description": string,
        "backend_order": STRINGS,
        "quantization_preset": string,
    },
    "auto": {
        "rules": list_of(
            record(
                {
                    "profile": string,
                    "reason": string,
                    "when": record(
                        {
                            "arch": lambda v: string(v) and STRINGS(v),
                            "nvidia_gpu": boolean,
                            "jetson": boolean,
                            "npu": boolean,
                            "max_ram_gib": number,
                            "min_ram_gib": number,
                            "max_cores": integer,
                        }
                    ),
                },
                required=("profile",),
            ),
            "rule tables with profile, when and reason",
        ),
    },
}


def schema() -> dict[str, dict[str, Checker]]:
    """Every table a profile may hold: profile-wide ones plus one per registered backend."""
    return {**PROFILE_TABLES, **{name: dict(table) for name, table in option_schemas().items()}}


def _check_settings(body: Mapping[str, Any], source: str) -> None:
    for key, value in body.items():
        try:
            convert_setting(key, value, "its [settings] table")
        except ConfigError as exc:
            raise ConfigError(f"profile {source}: settings.{key}: {exc.message}") from None


def validate_profile(data: Mapping[str, Any], source: str) -> None:
    """Raise ConfigError for the first unknown table/key or wrongly typed value in ``data``."""
    tables = schema()
    registered = set(all_backend_names())
    for table, body in data.items():
        if table != "settings" and table not in tables and table not in registered:
            names = ", ".join(["settings", *tables])
            raise ConfigError(f"profile {source}: unknown table [{table}]; known tables: {names}")
        if not isinstance(body, dict):
            raise ConfigError(f"profile {source}: {table} must be a table ([{table}])")
        if table == "settings":
            _check_settings(body, source)
            continue
        table_schema = tables.get(table)
        if table_schema is None:
            continue  # a registered backend whose module does not import here: its table is never used
        for key, value in body.items():
            if key not in table_schema:
                raise ConfigError(
                    f"profile {source}: unknown key {table}.{key}; known keys of [{table}]: {', '.join(table_schema)}"
                )
            error = table_schema[key](value)
            if error:
                raise ConfigError(f"profile {source}: bad value for {table}.{key}: {error}, got {value!r}")
    if "auto" in data and "rules" not in data["auto"]:
        raise ConfigError(f"profile {source}: [auto] needs a rules list")
    order = data.get("profile", {}).get("backend_order", [])
    known = all_backend_names()
    unknown = [b for b in order if b not in known]
    if unknown:
        raise ConfigError(
            f"profile {source}: bad value for profile.backend_order: unknown backend "
            f"{unknown[0]!r}; known backends: {', '.join(known)}"
        )
