"""Per-request ``keep_alive`` (Ollama's field, accepted on the OpenAI routes too, as Docker Model Runner
does): how long the model stays loaded after this request; ``0`` unloads it once the answer is out."""

from __future__ import annotations

import logging
from typing import Any

from edge_runner.config.converters import to_duration_s
from edge_runner.core.errors import EdgeRunnerError, InvalidInput
from edge_runner.serving.loaded_model import LoadedModel
from edge_runner.serving.service import ModelService

log = logging.getLogger("edge_runner.server.keep_alive")
#: keep_alive 0 while other requests still use the model: the reaper unloads it once they are done
ALMOST_NOW_S = 0.001


def keep_alive_s(body: dict[str, Any]) -> float | None:
    """``keep_alive`` as seconds (``5m``, ``300``, ``-1`` forever, ``0`` unload after the answer); None if absent."""
    value = body.get("keep_alive")
    if value is None:
        return None
    try:
        seconds = to_duration_s(value)
    except ValueError as exc:
        raise InvalidInput(f"keep_alive: {exc}") from None
    return -1.0 if seconds < 0 else seconds


def start_keep_alive(service: ModelService, entry: LoadedModel, seconds: float | None) -> None:
    """A non-zero ``keep_alive`` applies from now on (idle time counts from the end of the request)."""
    if seconds:
        service.set_keep_alive(entry.name, seconds)


def end_keep_alive(service: ModelService, entry: LoadedModel, seconds: float | None) -> None:
    """``keep_alive: 0``: unload now, or as soon as other requests on the model are done."""
    if seconds != 0:
        return
    try:
        service.set_keep_alive(entry.name, 0.0 if entry.in_flight() == 0 else ALMOST_NOW_S)
    except EdgeRunnerError as exc:  # unloaded meanwhile: nothing left to do
        log.info("keep_alive 0 on %s: %s", entry.name, exc.message)
