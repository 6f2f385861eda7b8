"""How much of a request body waitress keeps in memory (``serve.body_in_memory_bytes``)."""

from __future__ import annotations

from dataclasses import replace

import psutil

from edge_runner.cli.serve import BODY_IN_MEMORY_BYTES, body_in_memory_bytes
from edge_runner.config.settings import Settings

FLOOR = 512 * 2**10  # waitress's own threshold


def test_bodies_stay_in_memory_within_a_quarter_of_ram() -> None:
    ram = psutil.virtual_memory().total
    settings = Settings()
    held = body_in_memory_bytes(settings)
    assert FLOOR <= held <= BODY_IN_MEMORY_BYTES
    assert held == FLOOR or held * settings.connection_limit <= ram // 4
    if ram // (4 * settings.connection_limit) > 600_000:  # this machine and any with > 2.4 GB
        assert held > 600_000  # a 600 KB MobileNet tensor no longer goes to a temporary file
    # many connections: the floor; a small body limit caps it
    assert body_in_memory_bytes(replace(settings, connection_limit=10**9)) == FLOOR
    assert body_in_memory_bytes(replace(settings, max_body_bytes=700_000)) == min(700_000, held)
