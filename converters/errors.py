"""Errors of the conversion stage, each mapped to a CLI exit code.

``ConversionError`` covers bad input and unsupported models (exit 2): it carries a
one-line cause and a one-line fix. ``ParityError`` means the artifact was built but
drifted past its thresholds (exit 3).
"""

from __future__ import annotations

import re
from typing import Any

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_PARITY = 3


class ConversionError(Exception):
    """Bad input or an unsupported model: the user can fix it (exit code 2)."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, cause: str, fix: str = "") -> None:
        super().__init__(cause)
        self.cause = cause
        self.fix = fix

    def one_line(self) -> str:
        """Cause and fix on one line, as printed by the CLI."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", self.cause).replace("\n", " ").strip()
        return f"{text} (fix: {self.fix})" if self.fix else text


class ParityError(Exception):
    """The artifact's outputs drifted past the thresholds (exit code 3)."""

    exit_code = EXIT_PARITY

    def __init__(self, failures: list[str], report: dict[str, Any]) -> None:
        super().__init__("; ".join(failures))
        self.failures = failures
        self.report = report

    def one_line(self) -> str:
        """The failed checks on one line."""
        return (
            "parity thresholds missed: "
            + "; ".join(self.failures)
            + " (fix: try a milder --quantize, give --calibration data, or pass --allow-drift to keep it anyway)"
        )
