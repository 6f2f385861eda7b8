"""GGUF conversion: Hugging Face decoders (llama, mistral, qwen2) and BERT encoders -> GGUF.

Entry point: ``convert_to_gguf(src, out, quantize="q8_0", ...) -> Manifest``. Heavy imports (torch,
transformers, llama_cpp) happen inside the functions that need them.
"""

from __future__ import annotations

from converters.gguf.convert import LLAMA_FTYPES, ParityError, convert_to_gguf

__all__ = ["LLAMA_FTYPES", "ParityError", "convert_to_gguf"]
