"""Parity of a GGUF file against the Hugging Face torch model it came from.

Decoders: the same token ids go through both models; next-token logits at every position are
compared (top-1 agreement, max abs error, mean cosine). The GGUF file's own tokenizer is checked
against the HF tokenizer on the same texts. Encoders: pooled sentence embeddings are compared by
cosine similarity. Both sides are timed so the report carries latency before/after.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b",
    "Edge devices run small models close to the data they serve.",
    "An assignment statement evaluates the expression list and assigns the result.",
)

# thresholds: the conversion fails below them unless drift is allowed. Decoder top-1 agreement is
# measured at every position of the sample prompts; on random-weight test models near-ties flip
# under Q8_0 activation quantization (seen: 0.886 on a random Qwen2), trained models reach ~1.0.
DECODER_THRESHOLDS = {"top1_agreement": 0.9, "mean_cosine": 0.99}
DECODER_THRESHOLDS_BY_QUANT = {
    "f32": {"top1_agreement": 0.98, "mean_cosine": 0.999},
    "f16": {"top1_agreement": 0.95, "mean_cosine": 0.999},
    "q8_0": {"top1_agreement": 0.85, "mean_cosine": 0.99},
}
ENCODER_THRESHOLDS = {"min_cosine": 0.99}


def _threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _hf_ids(tokenizer: Any, src: Path, texts: tuple[str, ...]) -> list[list[int]]:
    ids = [list(tokenizer(text)["input_ids"]) for text in texts]
    if getattr(tokenizer, "chat_template", None):
        chat = tokenizer.apply_chat_template([{"role": "user", "content": texts[0]}], add_generation_prompt=True)
        ids.append(list(chat["input_ids"] if isinstance(chat, dict) or hasattr(chat, "keys") else chat))
    return ids


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = np.sum(a * b, axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12
    return np.asarray(num / den)


def decoder_parity(src: Path, gguf_path: Path, texts: tuple[str, ...] = SAMPLE_TEXTS) -> dict[str, Any]:
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
    return {
        "kind": "decoder",
        "positions": int(hf_all.shape[0]),
        "top1_agreement": round(float(np.mean(hf_all.argmax(-1) == gg_all.argmax(-1))), 4),
        "max_abs_err": round(float(np.max(np.abs(hf_all - gg_all))), 5),
        "mean_cosine": round(float(np.mean(_cosine(hf_all, gg_all))), 5),
        "tokenizer_agreement": round(sum(token_match) / len(token_match), 4),
        "latency_ms_before": round(hf_s * 1000 / len(prompts), 2),
        "latency_ms_after": round(gg_s * 1000 / len(prompts), 2),
    }


def _plain_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _hf_embeddings(src: Path, texts: tuple[str, ...], pooling: str) -> tuple[np.ndarray, float]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src)
    model = AutoModel.from_pretrained(src, dtype=torch.float32).eval()
    started = time.perf_counter()
    rows = []
    with torch.no_grad():
        for text in texts:
            batch = tokenizer(text, return_tensors="pt")
            hidden = model(**batch).last_hidden_state[0].numpy()
            rows.append(hidden[0] if pooling == "cls" else hidden.mean(axis=0))
    return np.stack(rows), time.perf_counter() - started


def encoder_parity(
    src: Path, gguf_path: Path, pooling: str = "mean", texts: tuple[str, ...] = SAMPLE_TEXTS
) -> dict[str, Any]:
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
    cos = _cosine(hf, gg)
    return {
        "kind": "encoder",
        "samples": len(texts),
        "min_cosine": round(float(cos.min()), 5),
        "mean_cosine": round(float(cos.mean()), 5),
        "max_abs_err": round(float(np.max(np.abs(hf - gg))), 5),
        "latency_ms_before": round(hf_s * 1000 / len(texts), 2),
        "latency_ms_after": round(gg_s * 1000 / len(texts), 2),
    }


def thresholds_for(kind: str, quantize: str) -> dict[str, float]:
    """The parity thresholds for an encoder or decoder at a quantization (K-quants get the defaults)."""
    if kind == "encoder":
        return dict(ENCODER_THRESHOLDS)
    return dict(DECODER_THRESHOLDS_BY_QUANT.get(quantize, DECODER_THRESHOLDS))


def check_thresholds(report: dict[str, Any], quantize: str = "q8_0") -> list[str]:
    """Names of the metrics below their threshold (empty when parity holds)."""
    thresholds = thresholds_for(str(report.get("kind")), quantize)
    report["thresholds"] = thresholds
    return [f"{key} {report[key]} < {limit}" for key, limit in thresholds.items() if float(report[key]) < limit]
