"""Placeholder route table, filled in by the anthropic API work (see the issue on client compatibility)."""

from __future__ import annotations

from edge_runner.server.routes import Route
from edge_runner.serving.service import ModelService


def anthropic_routes(service: ModelService) -> list[Route]:
    """The anthropic-compatible route table."""
    return []
