"""Every folder edge-runner knows by default, in one place.

The XDG helpers take the environment as an argument: only ``edge_runner.config`` reads the process
environment, once, and hands the resulting paths to everything else as settings.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
#: the embedded default models (digits and its twins, tiny-llm), read-only
DEFAULTS_DIR = PACKAGE_DIR / "defaults"


def bundled_profiles_dir() -> Path:
    """Built-in profiles: the frozen binary's bundle, the source tree, or a wheel's data files."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "profiles"
    source_tree = PACKAGE_DIR.parent / "profiles"
    if source_tree.is_dir():
        return source_tree
    return Path(sys.prefix) / "share" / "edge-runner" / "profiles"  # a wheel install (pyproject data-files)


def _xdg(environ: Mapping[str, str], variable: str, fallback: tuple[str, ...]) -> Path:
    value = environ.get(variable, "")
    if value and Path(value).is_absolute():  # the XDG spec: relative values are ignored
        return Path(value)
    home = environ.get("HOME") or str(Path.home())
    return Path(home).joinpath(*fallback)


def data_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME/edge-runner`` (default ``~/.local/share/edge-runner``)."""
    return _xdg(environ, "XDG_DATA_HOME", (".local", "share")) / "edge-runner"


def cache_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME/edge-runner`` (default ``~/.cache/edge-runner``)."""
    return _xdg(environ, "XDG_CACHE_HOME", (".cache",)) / "edge-runner"


def config_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/edge-runner`` (default ``~/.config/edge-runner``)."""
    return _xdg(environ, "XDG_CONFIG_HOME", (".config",)) / "edge-runner"


def default_trust_dir(environ: Mapping[str, str]) -> Path:
    """Public keys whose bundle signatures ``models import`` accepts without ``--verify``."""
    return config_dir(environ) / "trusted-keys"


def default_repository(environ: Mapping[str, str]) -> Path:
    """The writable model repository when none is configured."""
    return data_dir(environ) / "models"
