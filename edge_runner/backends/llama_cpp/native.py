"""Thin typed layer over llama-cpp-python's low-level (ctypes) API.

Everything that touches ``llama_cpp`` pointers lives here, so the engine reads as plain Python and
the ctypes details (buffers, batch fields, ownership) are in one place. Not thread-safe: one
engine thread owns a ``NativeModel`` and its context.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runner.core.errors import InferenceError, ModelLoadError

_backend_lock = threading.Lock()
_backend_ready = False
_log_bridge: Any = None
llama_log = logging.getLogger("edge_runner.llama_cpp")
# ggml_log_level (ggml.h): NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continue the previous line)
_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}


def _install_log_bridge(lib: Any) -> None:
    """Route llama.cpp/ggml logging into Python logging (its chatter at DEBUG, warnings as warnings)."""
    global _log_bridge
    last = [logging.DEBUG]

    def forward(level: int, text: bytes, _user: Any) -> None:
        py_level = last[0] if level == 5 else _LEVELS.get(level, logging.DEBUG)
        last[0] = py_level
        if llama_log.isEnabledFor(py_level):
            message = text.decode("utf-8", errors="replace").rstrip()
            if message:
                llama_log.log(py_level, "%s", message)

    _log_bridge = lib.llama_log_callback(forward)  # keep a reference: C holds only the pointer
    lib.llama_log_set(_log_bridge, ctypes.c_void_p(0))


def llama() -> Any:
    """The ``llama_cpp`` module, with the ggml backend initialised and its logging bridged, once."""
    global _backend_ready
    import llama_cpp

    with _backend_lock:
        if not _backend_ready:
            _install_log_bridge(llama_cpp)
            llama_cpp.llama_backend_init()
            _backend_ready = True
    return llama_cpp


def _set_load_mode(lib: Any, params: Any, use_mmap: bool, use_mlock: bool) -> None:
    """mmap/mlock: recent llama.cpp has one ``load_mode`` enum, older builds two booleans.

    Setting a field a ctypes struct lacks silently adds a Python attribute, so check the fields.
    """
    fields = {name for name, *_ in type(params)._fields_}
    if "load_mode" in fields:
        modes = {(True, True): "MMAP_MLOCK", (False, True): "MLOCK", (True, False): "MMAP", (False, False): "NONE"}
        params.load_mode = getattr(lib, f"LLAMA_LOAD_MODE_{modes[(use_mmap, use_mlock)]}")
    else:
        params.use_mmap = use_mmap
        params.use_mlock = use_mlock


@dataclass(frozen=True)
class ContextSettings:
    """Size and threading of a generation context."""

    n_slots: int = 4
    max_seq_len: int = 2048
    n_batch: int = 512
    threads: int = 0
    threads_batch: int = 0
    embeddings: bool = False


class NativeModel:
    """A llama.cpp model (memory-mapped by default) plus one context with ``n_slots`` sequences."""

    def __init__(self, path: Path, *, use_mmap: bool = True, use_mlock: bool = False, n_gpu_layers: int = 0) -> None:
        lib = llama()
        self.lib = lib
        params = lib.llama_model_default_params()
        _set_load_mode(lib, params, use_mmap, use_mlock)
        params.n_gpu_layers = n_gpu_layers
        self.model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise ModelLoadError(f"llama.cpp could not load {path}; is it a valid GGUF file for this llama.cpp build?")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(lib.llama_model_n_ctx_train(self.model))
        self.ctx: Any = None
        self.settings = ContextSettings()
        self._piece = ctypes.create_string_buffer(256)

    def create_context(self, settings: ContextSettings) -> None:
        """Create the decoding context: ``n_slots`` sequences of ``max_seq_len`` tokens each."""
        lib = self.lib
        params = lib.llama_context_default_params()
        params.n_ctx = settings.n_slots * settings.max_seq_len
        params.n_batch = settings.n_batch
        params.n_ubatch = min(settings.n_batch, 512)
        params.n_seq_max = settings.n_slots
        params.n_threads = settings.threads or params.n_threads
        params.n_threads_batch = settings.threads_batch or settings.threads or params.n_threads_batch
        params.embeddings = settings.embeddings
        params.kv_unified = False
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise ModelLoadError(f"llama.cpp could not create a context of {params.n_ctx} tokens")
        self.settings = settings

    @property
    def n_ctx_seq(self) -> int:
        """Tokens one sequence may hold (llama.cpp pads the per-sequence share to 256)."""
        return int(self.lib.llama_n_ctx_seq(self.ctx)) if self.ctx else self.settings.max_seq_len

    def meta(self, key: str) -> str | None:
        """A GGUF metadata string (e.g. ``general.architecture``), or None."""
        size = self.lib.llama_model_meta_val_str(self.model, key.encode(), None, 0)
        if size < 0:
            return None
        buf = ctypes.create_string_buffer(size + 1)
        self.lib.llama_model_meta_val_str(self.model, key.encode(), buf, size + 1)
        return buf.value.decode("utf-8", errors="replace")

    def chat_template(self) -> str | None:
        """The default chat template stored in the GGUF file."""
        raw = self.lib.llama_model_chat_template(self.model, None)
        return raw.decode("utf-8") if raw else None

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        """Text -> token ids with the model's own tokenizer."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        tokens = (self.lib.llama_token * capacity)()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_special, parse_special)
        if n < 0:
            capacity = -n
            tokens = (self.lib.llama_token * capacity)()
            n = self.lib.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_special, parse_special)
        return list(tokens[:n])

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token (may be a partial UTF-8 sequence)."""
        n = self.lib.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.lib.llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
            return bytes(buf.raw[:n])
        return bytes(self._piece.raw[:n])

    def token_text(self, token: int) -> str:
        """A token's text with special tokens rendered (e.g. ``<|im_end|>``)."""
        return self.piece(token, special=True).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        """End-of-generation token (EOS, EOT, <|im_end|>, ...)."""
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    @property
    def add_bos(self) -> bool:
        """Whether the tokenizer prepends BOS to a fresh prompt."""
        return bool(self.lib.llama_vocab_get_add_bos(self.vocab))

    def special_text(self, which: str) -> str:
        """Text of the ``bos`` or ``eos`` token ('' when the model has none)."""
        token = getattr(self.lib, f"llama_vocab_{which}")(self.vocab)
        return self.token_text(token) if token >= 0 else ""

    def forget(self, seq_id: int, from_pos: int = 0) -> int:
        """Drop the KV cache of ``seq_id`` from ``from_pos`` on; return how many positions remain.

        Some memory types cannot drop a tail (recurrent state); then the whole sequence goes.
        """
        memory = self.lib.llama_get_memory(self.ctx)
        if self.lib.llama_memory_seq_rm(memory, seq_id, from_pos, -1):
            return from_pos
        self.lib.llama_memory_seq_rm(memory, seq_id, 0, -1)
        return 0

    def close(self) -> None:
        """Free the context and the model. Idempotent."""
        if self.ctx:
            self.lib.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = None


class Batch:
    """A reusable ``llama_batch`` of up to ``capacity`` tokens, one sequence id per token."""

    def __init__(self, native: NativeModel, capacity: int) -> None:
        self.native = native
        self.capacity = capacity
        self.raw = native.lib.llama_batch_init(capacity, 0, 1)
        self.n = 0

    def clear(self) -> None:
        """Start filling from the first position again."""
        self.n = 0

    def add(self, token: int, pos: int, seq_id: int, want_logits: bool) -> int:
        """Append a token; return its index in the batch (the logits index when ``want_logits``)."""
        raw, i = self.raw, self.n
        raw.token[i] = token
        raw.pos[i] = pos
        raw.n_seq_id[i] = 1
        raw.seq_id[i][0] = seq_id
        raw.logits[i] = want_logits
        self.n = i + 1
        return i

    def decode(self) -> None:
        """Run the model on the batch; raise InferenceError when llama.cpp refuses it."""
        self.raw.n_tokens = self.n
        status = self.native.lib.llama_decode(self.native.ctx, self.raw)
        if status != 0:
            raise InferenceError(f"llama_decode failed with status {status} on a batch of {self.n} tokens")

    def free(self) -> None:
        """Release the batch buffers. Idempotent."""
        if self.raw is not None:
            self.native.lib.llama_batch_free(self.raw)
            self.raw = None
