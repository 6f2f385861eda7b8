"""Progress output: a redrawn bar on a terminal, plain lines otherwise.

Progress always goes to stderr so that ``--json`` keeps stdout machine-readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Reports numbered steps of a conversion."""

    def __init__(self, total: int, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._started = time.perf_counter()

    def step(self, message: str) -> None:
        """Announce the next step."""
        self.done = min(self.done + 1, self.total)
        if self.quiet:
            return
        elapsed = time.perf_counter() - self._started
        if self.tty:
            width = 20
            filled = int(width * self.done / max(self.total, 1))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r\x1b[2K[{bar}] {self.done}/{self.total} {message} ({elapsed:.1f}s)")
        else:
            self.stream.write(f"[{self.done}/{self.total}] {message} ({elapsed:.1f}s)\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        """A side remark that does not advance the step count."""
        if self.quiet:
            return
        prefix = "\n" if self.tty else ""
        self.stream.write(f"{prefix}  {message}\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the bar line on a terminal."""
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
