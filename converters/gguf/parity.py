"""Parity of a GGUF file (run by llama.cpp) against the Hugging Face torch model it came from.

Only the GGUF-specific part lives here: running both models. Decoders: the same token ids go through
both; next-token logits at every position are compared. The GGUF file's own tokenizer is checked against
the HF tokenizer on the same texts (``details.tokenizer_agreement``). Encoders: pooled sentence
embeddings are compared per sample. Metrics, thresholds and the report are the shared ones of
:mod:`edge_runner.core.parity` (kinds ``decoder`` and ``encoder``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runner.core.parity import ParityReport, compare_outputs

SAMPLE_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b",
    "Edge devices run small models close to the data they serve.",
    "An assignment statement evaluates the expression list and assigns the result.",
)


def _threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _hf_ids(tokenizer: Any, src: Path, texts: tuple[str, ...]) -> list[list[int]]:
    ids = [list(tokenizer(text)["input_ids"]) for text in texts]
    if getattr(tokenizer, "chat_template", None):
        chat = tokenizer.apply_chat_template([{"role": "user", "content": texts[0]}], add_generation_prompt=True)
        ids.append(list(chat["input_ids"] if isinstance(chat, dict) or hasattr(chat, "keys") else chat))
    return ids


def decoder_parity(
    src: Path,
    gguf_path: Path,
    quantize: str,
    sizes: tuple[int, int],
    details: dict[str, Any] | None = None,
    texts: tuple[str, ...] = SAMPLE_TEXTS,
) -> ParityReport:
    """Compare next-token logits of the GGUF file (llama.cpp) with the HF torch model."""
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edge_runner.backends.llama_cpp.native import llama

    llama()  # bridges llama.cpp logging into Python logging

    tokenizer = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    prompts = _hf_ids(tokenizer, src, texts)
    started = time.perf_counter()
    with torch.no_grad():
        hf_logits = [model(torch.tensor([ids])).logits[0].numpy() for ids in prompts]
    hf_s = time.perf_counter() - started
    llm = Llama(str(gguf_path), n_ctx=512, logits_all=True, n_threads=_threads(), verbose=False)
    started = time.perf_counter()
    gg_logits = []
    for ids in prompts:
        llm.reset()
        llm.eval(ids)
        gg_logits.append(np.array(llm.scores[: len(ids)], dtype=np.float32))
    gg_s = time.perf_counter() - started
    token_match = [llm.tokenize(t.encode(), add_bos=False, special=True) == _plain_ids(tokenizer, t) for t in texts]
    del llm
    hf_all, gg_all = np.concatenate(hf_logits), np.concatenate(gg_logits)[:, : hf_logits[0].shape[-1]]
    return ParityReport.measure(
        kind="decoder",
        quantization=quantize,
        task="text-generation",
        outputs=compare_outputs(["logits"], [hf_all], [gg_all], "text-generation"),
        primary="logits",
        samples=int(hf_all.shape[0]),  # every prompt position is a sample
        sizes=sizes,
        latency_ms=(hf_s * 1000 / len(prompts), gg_s * 1000 / len(prompts)),
        measured_with="llama.cpp",
        details={
            **(details or {}),
            "prompts": len(prompts),
            "tokenizer_agreement": round(sum(token_match) / len(token_match), 4),
        },
    )


def _plain_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _hf_embeddings(src: Path, texts: tuple[str, ...], pooling: str) -> tuple[np.ndarray, float]:
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(src)
    # AutoModel of a T5 folder is the encoder-decoder; the GGUF holds (and llama.cpp pools) the encoder
    is_t5 = AutoConfig.from_pretrained(src).model_type == "t5"
    model = (T5EncoderModel if is_t5 else AutoModel).from_pretrained(src, dtype=torch.float32).eval()
    started = time.perf_counter()
    rows = []
    with torch.no_grad():
        for text in texts:
            batch = tokenizer(text, return_tensors="pt")
            hidden = model(**batch).last_hidden_state[0].numpy()
            rows.append(hidden[0] if pooling == "cls" else hidden.mean(axis=0))
    return np.stack(rows), time.perf_counter() - started


def encoder_parity(
    src: Path,
    gguf_path: Path,
    quantize: str,
    sizes: tuple[int, int],
    details: dict[str, Any] | None = None,
    pooling: str = "mean",
    texts: tuple[str, ...] = SAMPLE_TEXTS,
) -> ParityReport:
    """Compare pooled embeddings of the GGUF file (llama.cpp) with the HF torch encoder."""
    from llama_cpp import Llama

    from edge_runner.backends.llama_cpp.native import llama

    llama()
    hf, hf_s = _hf_embeddings(src, texts, pooling)
    llm = Llama(str(gguf_path), embedding=True, n_ctx=512, n_threads=_threads(), verbose=False)
    started = time.perf_counter()
    gg = np.array([llm.embed(text) for text in texts], dtype=np.float32)
    gg_s = time.perf_counter() - started
    del llm
    outputs = compare_outputs(["embedding"], [hf], [gg], "feature-extraction")
    return ParityReport.measure(
        kind="encoder",
        quantization=quantize,
        task="feature-extraction",
        outputs=outputs,
        primary="embedding",
        samples=len(texts),
        sizes=sizes,
        latency_ms=(hf_s * 1000 / len(texts), gg_s * 1000 / len(texts)),
        measured_with="llama.cpp",
        details={**(details or {}), "pooling": pooling, "min_cosine": outputs["embedding"]["min_cosine"]},
    )
