"""The LLM KV cache is sized to the streams in use: none while idle, grown (1, 2, 4 slots) as streams arrive,
with running streams and cached prefixes carried into the larger context; optionally q8_0."""

from __future__ import annotations

import ctypes
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp")

from edge_runner.backends.base import LoadOptions
from edge_runner.backends.llama_cpp.llama_cpp_backend import LlamaCppBackend
from edge_runner.backends.llama_cpp.native import Batch, ContextSettings, NativeModel, restream
from edge_runner.core.generation import GenerationRequest, SamplingParams
from edge_runner.core.manifest import read_manifest

PROMPTS = ("What is assert?", "Tell me about lambda.", "Explain yield in Python.", "What is a class?")
GREEDY = SamplingParams(max_tokens=24, temperature=0.0)


def chat(text: str) -> GenerationRequest:
    return GenerationRequest(messages=({"role": "user", "content": text},), params=GREEDY)


def make(folder: Path, **options: Any) -> LlamaCppBackend:
    backend = LlamaCppBackend(
        read_manifest(folder), folder, LoadOptions(threads=2, options={"parallel": 4, "max_seq_len": 512, **options})
    )
    backend.load()
    return backend


def text_of(backend: LlamaCppBackend, prompt: str) -> str:
    return "".join(chunk.text for chunk in backend.generate(chat(prompt)))


def capacity(backend: LlamaCppBackend) -> int:
    native = backend._native
    assert native is not None
    return int(native.capacity)


@pytest.fixture(scope="module")
def reference(tiny_llm_dir: Path) -> dict[str, str]:
    """Each prompt's greedy answer on a context allocated for every slot at load (the old behaviour)."""
    backend = make(tiny_llm_dir, kv_preallocate=True)
    try:
        assert capacity(backend) == 4
        return {p: text_of(backend, p) for p in PROMPTS}
    finally:
        backend.unload()


def test_idle_model_holds_no_kv_cache_and_grows_with_streams(tiny_llm_dir: Path, reference: dict[str, str]) -> None:
    backend = make(tiny_llm_dir)
    try:
        assert capacity(backend) == 0 and backend._native is not None and not backend._native.ctx
        assert backend.context_length() == 512  # known before any context exists
        assert text_of(backend, PROMPTS[0]) == reference[PROMPTS[0]]
        assert capacity(backend) == 1
        # one stream running (first chunk read), then three more arrive: the context grows under it
        first = backend.generate(chat(PROMPTS[0]))
        head = next(first).text
        answers: dict[str, str] = {}

        def run(prompt: str) -> None:
            answers[prompt] = text_of(backend, prompt)

        threads = [threading.Thread(target=run, args=(p,)) for p in PROMPTS[1:]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        answers[PROMPTS[0]] = head + "".join(chunk.text for chunk in first)
        assert answers == reference
        assert capacity(backend) == 4
        # the cached prefix of the first prompt moved with the growth and is reused
        before = backend.engine.stats.cached_tokens
        assert text_of(backend, PROMPTS[0]) == reference[PROMPTS[0]]
        assert backend.engine.stats.cached_tokens > before
    finally:
        backend.unload()


def test_a_moved_sequence_keeps_its_cells(tiny_llm_dir: Path) -> None:
    """The positions llama.cpp reports for a sequence are the same after the context grows."""
    native = NativeModel(tiny_llm_dir / "model.gguf")
    try:
        native.configure(ContextSettings(n_slots=4, max_seq_len=256, threads=2))
        assert native.ensure_slots(2) == [] and native.capacity == 2
        tokens = native.tokenize("The import system of Python", add_special=True)
        batch = Batch(native, 64)
        for i, token in enumerate(tokens):
            batch.add(token, i, 1, i == len(tokens) - 1)
        batch.decode()
        batch.free()
        memory = native.lib.llama_get_memory(native.ctx)
        assert native.lib.llama_memory_seq_pos_max(memory, 1) == len(tokens) - 1
        assert native.ensure_slots(3, [1]) == [] and native.capacity == 4  # doubles, up to n_slots
        memory = native.lib.llama_get_memory(native.ctx)
        assert native.lib.llama_memory_seq_pos_max(memory, 1) == len(tokens) - 1
        assert native.lib.llama_memory_seq_pos_max(memory, 0) == -1
    finally:
        native.close()


def test_restream_refuses_states_it_does_not_understand() -> None:
    magic = (0xAF143CD8).to_bytes(4, "little")
    plain = magic + (1).to_bytes(4, "little") + (2).to_bytes(4, "little") + bytes(4) + b"CELL" + b"DATA"
    want = magic + (1).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"CELLDATA" + bytes(12)
    assert restream(plain, 1, 4) == want
    assert restream(plain, 1, 1) == magic + (1).to_bytes(4, "little") + (1).to_bytes(4, "little") + b"CELLDATA"
    assert restream(b"\x00" * 16 + plain[8:], 1, 4) is None  # not the seq-state magic
    assert restream(plain, 0, 4) is None  # a different sequence id than the state's
    assert restream(magic + plain[4:8] + (2).to_bytes(4, "little") + b"XXXX" + b"CELLDATA", 1, 4) is None


def test_an_idle_grown_cache_shrinks_to_the_most_recent_prefix(tiny_llm_dir: Path, reference: dict[str, str]) -> None:
    backend = make(tiny_llm_dir)
    try:
        engine = backend.engine
        engine.shrink_idle_s = 0.5
        # three streams at once: queued while the engine thread is held off, so they run side by side however
        # slowly this box schedules threads (24 tokens take ~10 ms; started from threads they need not overlap)
        with engine._cond:
            streams = {p: backend.generate(chat(p)) for p in PROMPTS[:3]}
        answers = {p: "".join(chunk.text for chunk in stream) for p, stream in streams.items()}
        assert answers == {p: reference[p] for p in PROMPTS[:3]}
        assert capacity(backend) >= 2
        assert text_of(backend, PROMPTS[3]) == reference[PROMPTS[3]]  # the most recent prefix
        deadline = time.monotonic() + 10
        while capacity(backend) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert capacity(backend) == 1
        assert engine.slots[0].cache and not any(slot.cache for slot in engine.slots[1:])
        before = engine.stats.cached_tokens
        assert text_of(backend, PROMPTS[3]) == reference[PROMPTS[3]]
        assert engine.stats.cached_tokens > before  # its prefix survived the shrink
        time.sleep(1.0)
        assert capacity(backend) == 1  # as small as it gets: no further resizing
    finally:
        backend.unload()


def test_a_preallocated_cache_never_shrinks(tiny_llm_dir: Path) -> None:
    backend = make(tiny_llm_dir, kv_preallocate=True)
    try:
        backend.engine.shrink_idle_s = 0.2
        text_of(backend, PROMPTS[0])
        time.sleep(0.8)
        assert capacity(backend) == 4 and backend.engine.slots[0].cache
    finally:
        backend.unload()


def bytes_per_cell(backend: LlamaCppBackend, seq_id: int) -> float:
    """The saved state of one sequence divided by the cells (tokens) it holds."""
    native = backend._native
    assert native is not None
    cells = 1 + int(native.lib.llama_memory_seq_pos_max(native.lib.llama_get_memory(native.ctx), seq_id))
    return int(native.lib.llama_state_seq_get_size(native.ctx, ctypes.c_int32(seq_id))) / cells


def test_q8_0_cache_answers_and_takes_about_half_the_bytes(tiny_llm_dir: Path, reference: dict[str, str]) -> None:
    sizes = {}
    for kind in ("f16", "q8_0"):
        backend = make(tiny_llm_dir, kv_cache_type=kind)
        try:
            text = text_of(backend, PROMPTS[1])
            assert text.strip()
            if kind == "f16":
                assert text == reference[PROMPTS[1]]
            sizes[kind] = bytes_per_cell(backend, 0)
        finally:
            backend.unload()
    assert 0.45 < sizes["q8_0"] / sizes["f16"] < 0.62, sizes


def test_unknown_kv_cache_type_is_refused(tiny_llm_dir: Path) -> None:
    from edge_runner.core.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="kv_cache_type"):
        make(tiny_llm_dir, kv_cache_type="q3_k")


def test_the_memory_budget_reserves_every_slot_at_the_cache_type_size(tiny_llm_dir: Path) -> None:
    from edge_runner.backends.llama_cpp.gguf_header import kv_bytes_per_token, read_header

    manifest = read_manifest(tiny_llm_dir)
    per_token = kv_bytes_per_token(read_header(tiny_llm_dir / "model.gguf"))
    sizes = {
        kind: LlamaCppBackend.working_memory_bytes(
            manifest, tiny_llm_dir, LoadOptions(options={"parallel": 4, "max_seq_len": 2048, "kv_cache_type": kind})
        )
        for kind in ("f16", "q8_0")
    }
    assert sizes == {"f16": 4 * 2048 * per_token, "q8_0": 4 * 2048 * per_token * 34 // 64}


def test_the_low_memory_profile_quantizes_the_kv_cache() -> None:
    from edge_runner.config.profiles import load_profile
    from edge_runner.config.settings import load_config

    profile = load_profile("cpu-lowmem")
    resolved = load_config({}, {}, None, profile.settings, profile.name)
    assert resolved.settings.kv_cache_type == "q8_0" and not resolved.settings.kv_preallocate
    assert load_config({}, {"EDGE_RUNNER_KV_CACHE_TYPE": "f16"}, None, profile.settings).settings.kv_cache_type == "f16"
