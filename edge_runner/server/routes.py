"""The route record shared by every route table (KServe v2, OpenAI, operations)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Route:
    """One URI template, the resource serving it, and a summary for the OpenAPI spec."""

    path: str
    resource: Any
    summary: str
    tag: str = "kserve-v2"
