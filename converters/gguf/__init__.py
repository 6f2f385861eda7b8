"""GGUF conversion: Hugging Face decoders, BERT and T5 encoders -> GGUF (docs/gguf-architectures.md).

Decoders: llama, mistral, qwen2, qwen3 (dense and MoE), gemma 1/2/3 (text), phi3, gpt2, starcoder2
(``families.DECODERS``). Embedding encoders: BERT (``bert``) and T5 (``t5encoder``, ``families.T5_ENCODERS``).

Entry point: ``convert_to_gguf(src, out, quantize="q8_0", ...) -> Manifest``. Heavy imports (torch,
transformers, llama_cpp) happen inside the functions that need them.
"""

from __future__ import annotations

from converters.gguf.convert import LLAMA_FTYPES, ParityError, convert_to_gguf

__all__ = ["LLAMA_FTYPES", "ParityError", "convert_to_gguf"]
