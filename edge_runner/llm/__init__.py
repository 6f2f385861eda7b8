"""LLM serving on llama.cpp: continuous batching engine, sampling, chat templates, streaming text.

Importing this package does not import llama_cpp; ``edge_runner.llm.native`` does, lazily.
"""

from __future__ import annotations

from edge_runner.llm.types import GenerationChunk, GenerationRequest, SamplingParams, Usage

__all__ = ["GenerationChunk", "GenerationRequest", "SamplingParams", "Usage"]
