"""Thin typed layer over llama-cpp-python's low-level (ctypes) API.

Everything that touches ``llama_cpp`` pointers lives here, so the engine reads as plain Python and
the ctypes details (buffers, batch fields, ownership) are in one place. Not thread-safe: one
engine thread owns a ``NativeModel`` and its context.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
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
    from edge_runner.backends.llama_cpp.bindings import import_llama_cpp

    llama_cpp = import_llama_cpp()

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


#: KV cache element types a context may use (``kv_cache_type``); quantized V needs flash attention
KV_CACHE_TYPES = {"f16": "GGML_TYPE_F16", "q8_0": "GGML_TYPE_Q8_0"}


@dataclass(frozen=True)
class ContextSettings:
    """Size and threading of a generation context."""

    n_slots: int = 4
    max_seq_len: int = 2048
    n_batch: int = 512
    threads: int = 0
    threads_batch: int = 0
    embeddings: bool = False
    kv_cache_type: str = "f16"
    #: allocate the KV cache of every slot when the context is configured, instead of as streams need them
    preallocate: bool = False


class NativeModel:
    """A llama.cpp model (memory-mapped by default) plus one context of up to ``n_slots`` sequences.

    The context, and with it the KV cache, is sized to the sequences in use: none until the first stream,
    then grown (1, 2, 4, ... up to ``n_slots`` sequences) by ``ensure_slots``, which carries every cached
    sequence into the larger context. ``preallocate`` sizes it for every slot at once, as a fixed context.
    """

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
        #: sequences (slots) the current context holds a KV cache for
        self.capacity = 0
        self.settings = ContextSettings()
        self._piece = ctypes.create_string_buffer(256)

    def configure(self, settings: ContextSettings) -> None:
        """Set the context's shape; with ``preallocate`` create it for every slot now, else on first use."""
        if settings.kv_cache_type not in KV_CACHE_TYPES:
            raise ModelLoadError(f"kv_cache_type {settings.kv_cache_type!r} is not one of {', '.join(KV_CACHE_TYPES)}")
        if not settings.preallocate and not self.plain_kv_cache:
            settings = replace(settings, preallocate=True)  # its memory cannot be moved into a larger context
        self.settings = settings
        if settings.preallocate:
            self.ensure_slots(settings.n_slots)

    def _new_context(self, n_seq: int) -> Any:
        settings, lib = self.settings, self.lib
        params = lib.llama_context_default_params()
        # llama.cpp pads n_ctx up (to 256) and gives each sequence n_ctx / n_seq_max cells: never fewer
        # than max_seq_len, whatever the number of sequences, so the context length does not change as it grows
        params.n_ctx = n_seq * settings.max_seq_len
        params.n_batch = settings.n_batch
        params.n_ubatch = min(settings.n_batch, 512)
        params.n_seq_max = n_seq
        params.n_threads = settings.threads or params.n_threads
        params.n_threads_batch = settings.threads_batch or settings.threads or params.n_threads_batch
        params.embeddings = settings.embeddings
        params.kv_unified = False
        if settings.kv_cache_type != "f16":
            kv_type = getattr(lib, KV_CACHE_TYPES[settings.kv_cache_type])
            params.type_k = params.type_v = kv_type
            params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED  # a quantized V cache needs it
        ctx = lib.llama_init_from_model(self.model, params)
        if not ctx:
            raise ModelLoadError(
                f"llama.cpp could not create a context of {params.n_ctx} tokens ({n_seq} sequences, "
                f"{settings.kv_cache_type} KV cache)"
            )
        return ctx

    def ensure_slots(self, wanted: int, cached: Sequence[int] = ()) -> list[int]:
        """Grow the context to hold at least ``wanted`` sequences (doubling, up to ``n_slots``).

        The KV cache of each sequence in ``cached`` is copied into the new context; returns the ids whose
        copy failed (their cache is empty in the new context). Nothing changes when the context is big enough.
        """
        if wanted <= self.capacity:
            return []
        capacity = min(self.settings.n_slots, max(wanted, 2 * self.capacity))
        return self._rebuild(capacity, {seq_id: seq_id for seq_id in cached})

    def shrink(self, keep: int | None) -> bool:
        """Shrink the context to one sequence holding the KV cache of ``keep`` (as sequence 0), or none.

        Returns whether the cache of ``keep`` moved. Only for a context that grows (not ``preallocate``).
        """
        if self.settings.preallocate:
            raise ValueError("a preallocated context keeps its size")
        lost = self._rebuild(1, {} if keep is None else {keep: 0})
        return keep is not None and not lost

    def _rebuild(self, capacity: int, moves: Mapping[int, int]) -> list[int]:
        """Replace the context by one of ``capacity`` sequences, copying each ``src: dst`` of ``moves``;
        returns the sources whose copy failed."""
        ctx = self._new_context(capacity)
        lost = [src for src, dst in moves.items() if self.ctx and not self._copy_sequence(self.ctx, ctx, src, dst)]
        if self.ctx:
            self.lib.llama_free(self.ctx)
        self.ctx, self.capacity = ctx, capacity
        llama_log.debug("KV cache resized to %d sequence(s) of %d tokens", capacity, self.settings.max_seq_len)
        return lost

    @property
    def plain_kv_cache(self) -> bool:
        """Whether the model's memory is one attention KV cache (not recurrent, hybrid or sliding-window),
        the layout ``_copy_sequence`` can move between contexts."""
        lib = self.lib
        return not (
            lib.llama_model_is_recurrent(self.model)
            or lib.llama_model_is_hybrid(self.model)
            or int(lib.llama_model_n_swa(self.model)) > 0
        )

    def _copy_sequence(self, src: Any, dst: Any, src_id: int, dst_id: int) -> bool:
        """Copy one sequence's KV cells (positions and K/V) from context ``src`` to ``dst``."""
        lib = self.lib
        size = int(lib.llama_state_seq_get_size(src, src_id))
        buf = (ctypes.c_uint8 * size)()
        written = int(lib.llama_state_seq_get_data(src, buf, size, src_id))
        data = restream(bytes(buf[:written]), src_id, self.capacity_of(dst))
        if data is None:
            return False
        raw = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        return int(lib.llama_state_seq_set_data(dst, raw, len(data), dst_id)) > 0

    def capacity_of(self, ctx: Any) -> int:
        """Sequences (KV streams) a context holds."""
        return int(self.lib.llama_n_seq_max(ctx))

    @property
    def n_ctx_seq(self) -> int:
        """Tokens one sequence may hold (the same for every size of the context)."""
        return self.settings.max_seq_len

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
        if not self.ctx:
            return 0
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
            self.capacity = 0
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = None


_U32 = 4
#: what ``llama_state_seq_get_data`` writes before the memory's own state: a u32 magic and the i32 sequence id
_STATE_MAGIC = 0xAF143CD8


def restream(state: bytes, seq_id: int, n_stream: int) -> bytes | None:
    """Sequence ``seq_id``'s saved state, re-laid out for a context with ``n_stream`` sequences; None if the
    state is not the plain layout this understands.

    The state is ``u32 magic, i32 seq_id``, then the non-unified KV cache's ``u32 n_stream`` and, per stream,
    ``u32 cell_count`` followed (when non-zero) by that stream's cells. A sequence lives in stream
    ``seq_id``, so every other stream is an empty count. llama.cpp refuses a state whose stream count
    differs from the context's, and puts the one non-empty stream it reads into the stream of the sequence
    it restores, so the sequence's block is written first and empty counts fill up to ``n_stream``.
    """
    if len(state) < 4 * _U32 or int.from_bytes(state[:_U32], "little") != _STATE_MAGIC:
        return None
    if int.from_bytes(state[_U32 : 2 * _U32], "little", signed=True) != seq_id:
        return None
    old = int.from_bytes(state[2 * _U32 : 3 * _U32], "little")
    head, tail = _U32 * (3 + seq_id), _U32 * (old - seq_id - 1)
    if not (seq_id < old and n_stream >= 1) or len(state) < head + tail + _U32:
        return None
    if any(state[3 * _U32 : head]) or any(state[len(state) - tail :]):
        return None
    block = state[head : len(state) - tail]
    return state[: 2 * _U32] + n_stream.to_bytes(_U32, "little") + block + bytes(_U32 * (n_stream - 1))


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
