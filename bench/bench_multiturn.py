"""Multi-turn chat: time to first token of turn 2 with prompt-prefix reuse vs without, side by side.

A chat's second turn re-sends the whole conversation. With reuse, the slot that served turn 1 still holds its
KV cache and only the new tokens are decoded; without it the whole conversation is decoded again. Both are
measured on real servers in the same run, on the same GGUF: "reuse" asks turn 2 of the server that answered
turn 1; "cold" asks the same turn-2 body of a second server that served only an unrelated warm-up (so no
prefix of this conversation is cached). ``usage.prompt_tokens_details.cached_tokens`` shows the reuse.

    .venv/bin/python -m bench.bench_multiturn [--model PATH.gguf] [--rounds 5] [--history-words 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

from bench.bench_llm import TINY, start_ours, stop

WORDS = [
    "edge",
    "servers",
    "answer",
    "requests",
    "close",
    "to",
    "the",
    "user",
    "while",
    "the",
    "model",
    "repository",
    "keeps",
    "every",
    "version",
    "signed",
    "and",
    "verified",
    "so",
    "a",
    "restart",
    "never",
    "loses",
    "what",
    "was",
    "loaded",
    "before",
    "the",
    "power",
    "went",
    "out",
]


def chat(url: str, messages: list[dict[str, str]], tokens: int) -> tuple[float, str, int]:
    """Stream one chat completion: (seconds to the first content token, the answer, cached prompt tokens)."""
    body = {
        "model": "bench",
        "messages": messages,
        "max_tokens": tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    start = time.perf_counter()
    first, text, cached = 0.0, [], 0
    with urllib.request.urlopen(request, timeout=600) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                piece = choice.get("delta", {}).get("content")
                if piece:
                    first = first or time.perf_counter()
                    text.append(piece)
            usage = chunk.get("usage")
            if usage:
                cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0))
    return (first or time.perf_counter()) - start, "".join(text), cached


def conversation(round_no: int, words: int) -> list[dict[str, str]]:
    history = " ".join(WORDS[(i + round_no) % len(WORDS)] for i in range(words))
    return [
        {"role": "system", "content": f"You are a terse assistant (conversation {round_no})."},
        {"role": "user", "content": f"Here are my notes: {history}. Summarise them."},
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=TINY / "model.gguf")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--history-words", type=int, default=300)
    parser.add_argument("--answer-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    reuse_ms, cold_ms, cached_reuse, cached_cold = [], [], [], []
    warm, warm_url = start_ours(args.model, args.threads, [])
    cold, cold_url = start_ours(args.model, args.threads, [])
    try:
        for url in (warm_url, cold_url):
            chat(url, [{"role": "user", "content": "warm-up"}], 4)
        for round_no in range(args.rounds):
            turn1 = conversation(round_no, args.history_words)
            _, answer, _ = chat(warm_url, turn1, args.answer_tokens)
            turn2 = [*turn1, {"role": "assistant", "content": answer}, {"role": "user", "content": "Shorter."}]
            seconds, _, cached = chat(warm_url, turn2, 4)
            reuse_ms.append(seconds * 1000)
            cached_reuse.append(cached)
            # the cold server: an unrelated request first, so no slot holds this conversation
            chat(cold_url, [{"role": "user", "content": f"unrelated {round_no}"}], 2)
            seconds, _, cached = chat(cold_url, turn2, 4)
            cold_ms.append(seconds * 1000)
            cached_cold.append(cached)
    finally:
        stop(warm)
        stop(cold)
    result = {
        "model": str(args.model),
        "ttft_turn2_reuse_ms_median": statistics.median(reuse_ms),
        "ttft_turn2_cold_ms_median": statistics.median(cold_ms),
        "cold_over_reuse": statistics.median(cold_ms) / statistics.median(reuse_ms),
        "cached_tokens_reuse": cached_reuse,
        "cached_tokens_cold": cached_cold,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
