"""LLM serving benchmark, side by side in one run, on the same GGUF file.

1. single-stream decode tok/s: our server (HTTP + SSE) vs llama-cpp-python in-process (ratio);
2. aggregate tok/s with N concurrent streams vs 1 stream on our server, and vs llama-cpp-python's
   own OpenAI server (``python -m llama_cpp.server``, when its extras are installed);
3. RSS of the server with the model loaded, split into file-backed (mapped GGUF) and anonymous
   memory, with mmap on and off (``--no-mmap``) - shows the weights are mapped, not copied.

Generation tok/s = tokens / (time of the last token - time the request was sent), where ``tokens`` is
the server's own ``usage.completion_tokens`` (SSE events may carry several tokens each, so counting
events or timing from the first event would flatter a server that batches its events). Every run
generates exactly ``--tokens`` tokens (end-of-generation is ignored/suppressed) and the baselines are
timed the same way: llama-cpp-python's Python loop in-process, and llama.cpp's own C++ ``llama-server``
built from the same vendored sources (``bash bench/peers/build_llama_server.sh``, then ``--llama-server``).

Usage: python -m bench.bench_llm [--model PATH.gguf | --big] [--tokens 128] [--streams 4] [--threads 2]
``--big`` first builds a ~107 MB random-weight Llama GGUF with our converter (cached in --workdir).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

from edge_runner.core.paths import DEFAULTS_DIR  # noqa: E402

TINY = DEFAULTS_DIR / "tiny-llm" / "1"
PROMPT = "Tell me about the import statement."


def stream_tokens(url: str, body: dict[str, Any]) -> tuple[int, float, float, float]:
    """POST a streaming completion; return (tokens, t_start, t_first, t_last) from SSE frames."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    start = time.perf_counter()
    first = last = 0.0
    tokens = 0
    with urllib.request.urlopen(request, timeout=600) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                now = time.perf_counter()
                first = first or now
                last = now
                tokens += 1
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    return tokens, start, first, last


def completion_body(tokens: int, model: str, eog_bias: dict[str, float] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0.0}
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    if eog_bias is None:
        body["ignore_eos"] = True
    else:
        body["logit_bias"] = eog_bias
    return body


def http_runs(url: str, body: dict[str, Any], streams: int) -> dict[str, float]:
    """``streams`` concurrent streaming requests; per-stream decode tok/s and aggregate tok/s."""
    results: list[tuple[int, float, float, float]] = []
    lock = threading.Lock()

    def worker() -> None:
        result = stream_tokens(url, body)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=worker) for _ in range(streams)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    total = sum(r[0] for r in results)
    rates = [r[0] / (r[3] - r[1]) for r in results if r[3] > r[1]]
    return {
        "aggregate_tok_s": total / wall,
        "decode_tok_s_per_stream": sum(rates) / max(1, len(rates)),
        "ttft_ms_mean": 1000 * sum(r[2] - r[1] for r in results) / max(1, len(results)),
        "tokens_per_stream": [r[0] for r in results],
    }


def in_process_decode(model: Path, tokens: int, threads: int) -> float:
    """llama-cpp-python's own token loop (``Llama.generate``), greedy, detokenizing each token."""
    from llama_cpp import Llama

    llm = Llama(str(model), n_ctx=2048, n_threads=threads, n_batch=512, verbose=False)
    prompt = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    best = 0.0
    for _ in range(2):  # the first run warms the caches
        llm.reset()  # no prompt reuse between runs: every run processes its prompt, as a request does
        stamps = []
        start = time.perf_counter()
        for token in llm.generate(prompt, temp=0.0, top_k=1):
            llm.detokenize([token])
            stamps.append(time.perf_counter())
            if len(stamps) == tokens:
                break
        best = max(best, len(stamps) / (stamps[-1] - start))
    llm.close()
    return best


def eog_tokens(model: Path) -> list[int]:
    """End-of-generation ids of a GGUF (so baselines can suppress them)."""
    from edge_runner.backends.llama_cpp.native import NativeModel

    native = NativeModel(model)
    ids = [t for t in range(native.n_vocab) if native.is_eog(t)]
    native.close()
    return ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready in {timeout_s}s")


def start_ours(model: Path, threads: int, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """edge-runner serve with the one GGUF (seed form: --model-name/--model-path)."""
    port = free_port()
    cmd = [sys.executable, "-m", "edge_runner", "serve", "--port", str(port), "--model-name", "bench"]
    cmd += ["--model-path", str(model.parent), "--threads", str(threads), "--http-threads", "16"]
    cmd += ["--log-level", "warning", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
    return proc, f"http://127.0.0.1:{port}"


def start_llama_cpp_server(model: Path, threads: int) -> tuple[subprocess.Popen[bytes], str] | None:
    """llama-cpp-python's OpenAI server, or None when its extras (fastapi, uvicorn, ...) are missing."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--port", str(port)]
    # queue concurrent requests instead of cutting the running one short (its default interrupts it)
    cmd += ["--n_threads", str(threads), "--n_ctx", "2048", "--interrupt_requests", "False"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", proc, 120)
    except RuntimeError:
        proc.kill()
        proc.wait()
        return None
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_of(pid: int, gguf: Path) -> dict[str, float]:
    """RSS split from /proc: anonymous, file-backed, and the resident part of the GGUF mapping (MiB)."""
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.split()[0] if value.split() else ""
    mapped = 0
    current = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if "-" in line.split(" ")[0] and len(line.split()) >= 5:
            current = line.split()[-1] if len(line.split()) >= 6 else ""
        elif line.startswith("Rss:") and current == str(gguf.resolve()):
            mapped += int(line.split()[1])
    mib = 1024.0
    return {
        "rss_mib": int(status["VmRSS"]) / mib,
        "rss_anon_mib": int(status["RssAnon"]) / mib,
        "rss_file_mib": int(status["RssFile"]) / mib,
        "gguf_mapped_resident_mib": mapped / mib,
        "gguf_file_mib": gguf.stat().st_size / mib / mib,
    }


def build_big(workdir: Path) -> Path:
    """A ~107 MB random-weight Llama (hidden 1024, 8 layers) converted by our converter to Q8_0."""
    out = workdir / "big-random" / "1"
    if (out / "model.gguf").is_file():
        return out / "model.gguf"
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from converters.gguf import convert_to_gguf

    hf = workdir / "big-hf"
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=2048,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    )
    LlamaForCausalLM(config).save_pretrained(hf)
    from scripts import train_tiny_llm  # the same tokenizer recipe as tiny-llm

    train_tiny_llm.train_tokenizer(train_tiny_llm.training_texts(train_tiny_llm.corpus()), hf)
    convert_to_gguf(hf, out, quantize="q8_0", name="big-random", check_parity=False)
    shutil.rmtree(hf)
    return out / "model.gguf"


def measure(model: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure for one GGUF file."""
    report: dict[str, Any] = {"model": str(model), "tokens": args.tokens, "threads": args.threads}
    eog = eog_tokens(model)
    report["llama_cpp_python_in_process_decode_tok_s"] = in_process_decode(model, args.tokens, args.threads)
    proc, url = start_ours(model, args.threads, [])
    try:
        body = completion_body(args.tokens, "bench")
        http_runs(url + "/v1/completions", body, 1)  # warm-up
        one = http_runs(url + "/v1/completions", body, 1)
        http_runs(url + "/v1/completions", body, args.streams)  # warm-up: the KV cache grows to the streams once
        many = http_runs(url + "/v1/completions", body, args.streams)
        report["rss_mmap"] = rss_of(proc.pid, model)
    finally:
        stop(proc)
    report["ours_decode_tok_s"] = one["decode_tok_s_per_stream"]
    report["ours_1_stream_aggregate_tok_s"] = one["aggregate_tok_s"]
    report[f"ours_{args.streams}_streams_aggregate_tok_s"] = many["aggregate_tok_s"]
    report["ours_tokens_per_stream"] = many["tokens_per_stream"]
    report["ratio_decode_ours_vs_in_process"] = (
        one["decode_tok_s_per_stream"] / report["llama_cpp_python_in_process_decode_tok_s"]
    )
    report[f"ratio_{args.streams}_vs_1_stream"] = many["aggregate_tok_s"] / one["aggregate_tok_s"]
    proc, _ = start_ours(model, args.threads, ["--no-mmap"])
    try:
        report["rss_no_mmap"] = rss_of(proc.pid, model)
    finally:
        stop(proc)
    if args.llama_server is not None:
        report.update(_native_server(model, args, eog, one, many))
    else:
        report["llama_server_cpp"] = (
            "not run: build it with bash bench/peers/build_llama_server.sh, pass --llama-server"
        )
    started = start_llama_cpp_server(model, args.threads)
    if started is None:
        report["llama_cpp_server"] = "not available (pip install 'llama-cpp-python[server]')"
        return report
    proc, url = started
    try:
        bias = {str(t): -100 for t in eog}
        theirs = http_runs(url + "/v1/completions", completion_body(args.tokens, "bench", bias), args.streams)
    finally:
        stop(proc)
    report[f"llama_cpp_server_{args.streams}_streams_aggregate_tok_s"] = theirs["aggregate_tok_s"]
    report["llama_cpp_server_tokens_per_stream"] = theirs["tokens_per_stream"]
    report[f"ratio_{args.streams}_streams_ours_vs_llama_cpp_server"] = (
        many["aggregate_tok_s"] / theirs["aggregate_tok_s"]
    )
    return report


def llama_bench_tg(llama_bench: Path, model: Path, tokens: int, threads: int) -> float:
    """llama.cpp's ``llama-bench`` text generation (``tg``) tok/s: decode in C++, no sampling, no server."""
    cmd = [str(llama_bench), "-m", str(model), "-t", str(threads), "-p", "0", "-n", str(tokens), "-r", "3"]
    out = subprocess.run([*cmd, "-o", "json"], capture_output=True, text=True, check=True, timeout=600).stdout
    return float(json.loads(out)[0]["avg_ts"])


def _native_server(
    model: Path, args: argparse.Namespace, eog: list[int], one: dict[str, Any], many: dict[str, Any]
) -> dict[str, Any]:
    """llama.cpp's C++ server on the same file: 1 stream and ``--streams`` streams (``--parallel`` slots)."""
    port = free_port()
    cmd = [str(args.llama_server), "-m", str(model), "-t", str(args.threads), "--port", str(port)]
    cmd += ["--host", "127.0.0.1", "--parallel", str(args.streams), "-c", str(2048 * args.streams), "--no-webui"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", proc)
        body = completion_body(args.tokens, "bench", {str(t): -100 for t in eog})
        http_runs(url + "/v1/completions", body, 1)  # warm-up
        theirs_one = http_runs(url + "/v1/completions", body, 1)
        http_runs(url + "/v1/completions", body, args.streams)  # warm-up, as for ours
        theirs_many = http_runs(url + "/v1/completions", body, args.streams)
    finally:
        stop(proc)
    figures: dict[str, Any] = {}
    bench_bin = args.llama_server.parent / "llama-bench"
    if bench_bin.is_file():
        tg = llama_bench_tg(bench_bin, model, args.tokens, args.threads)
        figures[f"llama_bench_tg{args.tokens}_tok_s"] = tg
        figures["ratio_1_stream_ours_vs_llama_bench"] = one["decode_tok_s_per_stream"] / tg
    return figures | {
        "llama_server_cpp_1_stream_tok_s": theirs_one["decode_tok_s_per_stream"],
        f"llama_server_cpp_{args.streams}_streams_aggregate_tok_s": theirs_many["aggregate_tok_s"],
        "ratio_1_stream_ours_vs_llama_server_cpp": one["decode_tok_s_per_stream"]
        / theirs_one["decode_tok_s_per_stream"],
        f"ratio_{args.streams}_streams_ours_vs_llama_server_cpp": many["aggregate_tok_s"]
        / theirs_many["aggregate_tok_s"],
    }


def main() -> int:
    """Run the benchmark and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=TINY / "model.gguf")
    parser.add_argument("--big", action="store_true", help="also measure a ~100 MB random-weight GGUF")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "edge-runner-bench-llm")
    parser.add_argument(
        "--llama-server", type=Path, default=None, help="llama.cpp's llama-server (bench/peers/build_llama_server.sh)"
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    reports = [measure(args.model, args)]
    if args.big:
        reports.append(measure(build_big(args.workdir), args))
    print(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
