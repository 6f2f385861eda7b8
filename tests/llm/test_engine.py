"""The continuous-batching engine and the llama.cpp backend on the embedded tiny-llm."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp")

from edge_runner.backends.base import LoadOptions
from edge_runner.backends.llama_cpp.llama_cpp_backend import LlamaCppBackend
from edge_runner.core.errors import InvalidInput, ModelNotReady, Overloaded
from edge_runner.core.generation import GenerationChunk, GenerationRequest, SamplingParams
from edge_runner.core.manifest import read_manifest

PROMPTS = ("What is assert?", "Tell me about lambda.", "Explain yield in Python.", "What is a class?")
GREEDY = SamplingParams(max_tokens=24, temperature=0.0)


@pytest.fixture(scope="module")
def backend(tiny_llm_dir: Path) -> Iterator[LlamaCppBackend]:
    options = LoadOptions(threads=2, options={"parallel": 4, "max_seq_len": 512, "max_queue": 2})
    instance = LlamaCppBackend(read_manifest(tiny_llm_dir), tiny_llm_dir, options)
    instance.load()
    yield instance
    instance.unload()


def chat(text: str, params: SamplingParams = GREEDY) -> GenerationRequest:
    return GenerationRequest(messages=({"role": "user", "content": text},), params=params)


def run(backend: LlamaCppBackend, request: GenerationRequest) -> tuple[str, GenerationChunk]:
    chunks = list(backend.generate(request))
    return "".join(c.text for c in chunks), chunks[-1]


def wait_idle(backend: LlamaCppBackend, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while backend.engine.load()["active"] or backend.engine.load()["waiting"]:
        assert time.monotonic() < deadline, backend.engine.load()
        time.sleep(0.02)


def test_metadata(backend: LlamaCppBackend) -> None:
    caps = backend.metadata().capabilities
    assert caps.generate and not caps.embed and not caps.batching and caps.max_concurrency == 4
    assert backend.metadata().inputs[0].name == "text_input"


def test_greedy_matches_llama_cpp_python(backend: LlamaCppBackend, tiny_llm_dir: Path) -> None:
    from llama_cpp import Llama

    prompt = "An assignment statement"
    ours, last = run(backend, GenerationRequest(prompt=prompt, params=GREEDY))
    reference = Llama(str(tiny_llm_dir / "model.gguf"), n_ctx=512, n_threads=2, verbose=False)
    theirs = reference.create_completion(prompt, max_tokens=24, temperature=0.0)["choices"][0]["text"]
    reference.close()
    assert ours == theirs
    assert last.usage is not None and last.usage.prompt_tokens > 0


def test_concurrent_streams_match_sequential_and_share_decode_calls(backend: LlamaCppBackend) -> None:
    sequential = [run(backend, chat(p))[0] for p in PROMPTS]
    results: dict[int, str] = {}
    calls_before = backend.engine.stats.decode_calls
    tokens_before = backend.engine.stats.generated_tokens

    def worker(i: int) -> None:
        results[i] = run(backend, chat(PROMPTS[i]))[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [results[i] for i in range(len(PROMPTS))] == sequential
    calls = backend.engine.stats.decode_calls - calls_before
    tokens = backend.engine.stats.generated_tokens - tokens_before
    assert calls < tokens, "streams were decoded one at a time, not batched"


def test_seed_reproducible(backend: LlamaCppBackend) -> None:
    params = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=1234)
    assert run(backend, chat("What is with?", params))[0] == run(backend, chat("What is with?", params))[0]


def test_stop_string_and_length(backend: LlamaCppBackend) -> None:
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    full, last = run(backend, chat("What is for?", params))
    assert last.finish_reason == "length" and last.usage is not None and last.usage.completion_tokens == 40
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip()
    cut, last = run(backend, chat("What is for?", SamplingParams(max_tokens=40, temperature=0.0, stop=(stop,))))
    assert last.finish_reason == "stop"
    assert cut == full[: full.index(stop)]


def test_prefix_reuse_reports_cached_tokens(backend: LlamaCppBackend) -> None:
    question = "Tell me about the import statement and packages."
    _, first = run(backend, chat(question))
    _, second = run(backend, chat(question))
    assert first.usage is not None and second.usage is not None
    assert second.usage.cached_tokens >= second.usage.prompt_tokens - 1


def test_cancel_frees_the_slot(backend: LlamaCppBackend) -> None:
    stream = backend.generate(chat("What is try?", SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True)))
    next(stream)
    assert backend.engine.load()["active"] == 1
    stream.close()  # type: ignore[attr-defined]
    wait_idle(backend)


def test_overload_beyond_slots_and_queue(backend: LlamaCppBackend) -> None:
    long = SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True)
    streams = [backend.generate(chat(f"What is {i}?", long)) for i in range(6)]  # 4 slots + 2 queued
    with pytest.raises(Overloaded) as info:
        backend.generate(chat("one too many", long))
    assert info.value.retry_after_s >= 1
    for stream in streams:
        stream.close()  # type: ignore[attr-defined]
    wait_idle(backend)
    assert run(backend, chat("after", GREEDY))[1].finish_reason in ("stop", "length")


def test_json_mode_output_is_json(backend: LlamaCppBackend) -> None:
    text, last = run(backend, chat("Give me JSON.", SamplingParams(max_tokens=120, temperature=0.0, json_mode=True)))
    assert text.lstrip().startswith("{")
    if last.finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_long_prompt_prefilled_in_several_batches_gives_the_same_answer(
    backend: LlamaCppBackend, tiny_llm_dir: Path
) -> None:
    prompt = " ".join(f"The {w} statement." for w in ("if", "for", "while", "try", "with", "def", "class") * 6)
    request = GenerationRequest(prompt=prompt, params=GREEDY)
    small = LlamaCppBackend(
        read_manifest(tiny_llm_dir), tiny_llm_dir, LoadOptions(threads=2, options={"n_batch": 32, "max_seq_len": 512})
    )
    small.load()
    try:
        chunked, last = run(small, request)
        assert last.usage is not None and last.usage.prompt_tokens > 3 * 32
        assert small.engine.stats.decode_calls >= 4 + last.usage.completion_tokens - 1
    finally:
        small.unload()
    assert chunked == run(backend, request)[0]


def test_prompt_longer_than_context_is_rejected(backend: LlamaCppBackend) -> None:
    with pytest.raises(InvalidInput, match="context"):
        backend.generate(GenerationRequest(prompt="word " * 2000, params=GREEDY))


def test_infer_v2_text(backend: LlamaCppBackend) -> None:
    import numpy as np

    out = backend.infer({"text_input": np.array([b"What is del?"], dtype=object)})
    assert out["text_output"].shape == (1,)


def test_unload_is_idempotent(tiny_llm_dir: Path) -> None:
    instance = LlamaCppBackend(read_manifest(tiny_llm_dir), tiny_llm_dir, LoadOptions(threads=1))
    instance.load()
    instance.unload()
    instance.unload()
    with pytest.raises(ModelNotReady):
        instance.generate(chat("x"))


def test_unload_never_frees_native_memory_under_a_running_step(tiny_llm_dir: Path) -> None:
    """Unload used to free the context after a 30 s join timeout even with the thread still in llama_decode."""
    instance = LlamaCppBackend(read_manifest(tiny_llm_dir), tiny_llm_dir, LoadOptions(threads=2))
    instance.load()
    engine, native = instance.engine, instance._native
    assert native is not None
    inside, go_on = threading.Event(), threading.Event()
    real_step = engine._step

    def held_step() -> None:  # a decode step that takes longer than unload is willing to wait
        inside.set()
        go_on.wait(30)
        real_step()

    engine._step = held_step  # type: ignore[method-assign]
    stream = instance.generate(chat("What is pass?"))
    assert inside.wait(30)
    freed: list[bool] = []

    def release() -> None:
        freed.append(engine._thread.is_alive() and threading.current_thread() is not engine._thread)
        native.close()

    assert engine.close(release=release, join_timeout_s=0.1) is False
    assert freed == []  # nothing freed while the thread is inside the step
    with pytest.raises(Exception, match="unloaded while generating"):
        list(stream)
    go_on.set()
    engine._thread.join(30)
    assert freed == [False], "freed exactly once, by the engine thread itself as it left"


def test_the_kv_cache_is_in_the_memory_budget(tiny_llm_dir: Path, make_manager: Any) -> None:
    """Admission counts slots x context x per-token K/V bytes, read from the GGUF header before loading."""
    import gguf

    from edge_runner.backends.llama_cpp.gguf_header import kv_bytes_per_token, read_header
    from edge_runner.core.errors import MemoryBudgetExceeded
    from edge_runner.serving.memory import estimate_load_bytes

    path = tiny_llm_dir / "model.gguf"
    reader = gguf.GGUFReader(path)

    def field(name: str) -> int:
        return int(reader.fields[name].contents())

    layers, heads = field("llama.block_count"), field("llama.attention.head_count")
    kv_heads, width = field("llama.attention.head_count_kv"), field("llama.embedding_length")
    assert kv_bytes_per_token(read_header(path)) == layers * kv_heads * 2 * (width // heads) * 2
    manifest = read_manifest(tiny_llm_dir)
    options = LoadOptions(options={"parallel": 4, "max_seq_len": 2048})
    kv = LlamaCppBackend.working_memory_bytes(manifest, tiny_llm_dir, options)
    assert kv == 4 * 2048 * kv_bytes_per_token(read_header(path))
    weights = estimate_load_bytes(sum(f.size for f in manifest.files), True)
    # a budget the weights fit in, but not the weights and the KV cache: refused before loading
    manager = make_manager(memory_budget=weights + kv // 2, max_seq_len=2048, load_defaults=True)
    with pytest.raises(MemoryBudgetExceeded):
        manager.load("tiny-llm")
    assert make_manager(memory_budget=weights + kv + (1 << 20), max_seq_len=2048).load("tiny-llm")
