"""Placeholder route table, filled in by the ollama API work (see the issue on client compatibility)."""

from __future__ import annotations

from edge_runner.server.routes import Route
from edge_runner.serving.service import ModelService


def ollama_routes(service: ModelService) -> list[Route]:
    """The ollama-compatible route table."""
    return []
