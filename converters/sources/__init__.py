"""Source loaders: turn a path on disk into a :class:`~converters.sources.base.Source`."""

from __future__ import annotations

from converters.sources.detect import load_source

__all__ = ["load_source"]
