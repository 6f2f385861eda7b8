"""Text in, embeddings out, for tensor encoders (a converted MiniLM/BERT served by ONNX Runtime or OpenVINO).

The converter copies the tokenizer beside the artifact and records in the manifest's ``extra`` which file
it is (``tokenizer``) and which output holds the pooled sentence embedding (``embedding_output``). Any backend
with an ``infer`` can then answer ``/v1/embeddings``; vectors are L2-normalised, as sentence-transformers does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runner.backends.base import Backend, Tensors
from edge_runner.core.errors import InvalidInput, UnsupportedOperation
from edge_runner.core.manifest import Manifest

EMBEDDING_TASKS = ("feature-extraction", "sentence-embedding", "sentence-similarity")
MAX_TOKENS = 512

Infer = Callable[[Tensors, Sequence[str] | None], Tensors]


def can_embed(manifest: Manifest) -> bool:
    """A tensor model embeds text when it is an encoder with a tokenizer and a pooled output."""
    return manifest.task in EMBEDDING_TASKS and bool(manifest.extra.get("tokenizer"))


class TextEncoder:
    """Tokenizes with the model's own ``tokenizer.json`` and runs the pooled-output graph."""

    def __init__(self, manifest: Manifest, folder: Path, input_names: Sequence[str]) -> None:
        self.manifest = manifest
        self.path = folder / str(manifest.extra.get("tokenizer", "tokenizer.json"))
        self.output = str(manifest.extra.get("embedding_output", "sentence_embedding"))
        self.input_names = tuple(input_names)
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                try:
                    from tokenizers import Tokenizer
                except ImportError:
                    raise UnsupportedOperation(
                        "embeddings from tensor encoders need the 'tokenizers' package (pip install tokenizers)"
                    ) from None
                tokenizer = Tokenizer.from_file(str(self.path))
                tokenizer.enable_truncation(MAX_TOKENS)
                tokenizer.no_padding()
                self._tokenizer = tokenizer
            return self._tokenizer

    def feeds(self, texts: Sequence[str]) -> Tensors:
        """input_ids / attention_mask (/ token_type_ids) padded to the longest text."""
        if not texts:
            raise InvalidInput("no texts to embed")
        encodings = self._load().encode_batch(list(texts))
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), np.int64)
        mask = np.zeros((len(texts), width), np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        missing = [n for n in self.input_names if n not in available]
        if missing:
            raise UnsupportedOperation(f"model {self.manifest.name!r} needs inputs {missing} that text cannot fill")
        return {name: available[name] for name in self.input_names}

    def embed(self, texts: Sequence[str], infer: Infer) -> np.ndarray:
        """Unit-length sentence embeddings, one row per text."""
        vectors = infer(self.feeds(texts), [self.output])[self.output].astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.asarray(vectors / np.maximum(norms, 1e-12))

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the texts take (for the usage field)."""
        return sum(len(e.ids) for e in self._load().encode_batch(list(texts)))


class TextEmbeddingBackend(Backend):
    """A tensor backend that also answers ``embed`` when its manifest describes a text encoder."""

    _text_encoder: TextEncoder | None = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence embeddings (tokenizer and pooled output from the manifest)."""
        if not can_embed(self.manifest):
            return super().embed(texts)
        return self._encoder().embed(texts, self.infer)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the texts take, for the OpenAI usage field."""
        return self._encoder().count_tokens(texts)

    def _encoder(self) -> TextEncoder:
        if self._text_encoder is None:
            names = [t.name for t in self.metadata().inputs]
            self._text_encoder = TextEncoder(self.manifest, self.folder, names)
        return self._text_encoder
