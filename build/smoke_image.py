"""HTTP checks of a container started with the seed's `docker run` line (used by build/build_images.sh --smoke).

    python build/smoke_image.py --port 8000 --model tiny-llm|digits [--timeout S] [--digits-onnx MODEL.onnx]

Waits for /v2/health/ready, then checks the answers themselves, printing each status and an abbreviated body:

- every model: ready 200, /v2/models/NAME metadata, /metrics with edge_runner_* series (--enable-metrics);
- an LLM (tiny-llm): OpenAI chat completion with text and token usage; its v2 infer answers 400 naming the route;
- digits: a v2 infer on a fixed batch equal (1e-4) to ONNX Runtime run here directly on the same ONNX file.

Exit status 1 when a check fails. Standard library + numpy (+ onnxruntime for --digits-onnx).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np

FAILURES: list[str] = []


def request(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")


def show(method: str, path: str, status: int, text: str) -> None:
    short = " ".join(text.split())
    print(f"  {method} {path} -> {status} {short[:300]}{' ...' if len(short) > 300 else ''}")


def check(ok: bool, what: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'}  {what}")
    if not ok:
        FAILURES.append(what)


def call(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    status, text = request(port, method, path, body)
    show(method, path, status, text)
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def wait_ready(port: int, timeout: float) -> float:
    start = time.monotonic()
    while True:
        try:
            status, _ = request(port, "GET", "/v2/health/ready")
            if status == 200:
                return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() - start > timeout:
            raise SystemExit(f"FAIL  not ready within {timeout:.0f}s")
        time.sleep(1)


def llm_checks(port: int, model: str) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "What is a generator?"}],
        "max_tokens": 24,
        "temperature": 0,
    }
    status, answer = call(port, "POST", "/v1/chat/completions", body)
    text = answer["choices"][0]["message"]["content"] if status == 200 else ""
    usage = answer.get("usage", {}) if status == 200 else {}
    check(status == 200 and bool(text.strip()), f"chat completion: 200 with text ({text[:40]!r})")
    check(0 < int(usage.get("completion_tokens", 0)) <= 24, f"chat usage: {usage}")
    # A generating model is served over the OpenAI routes; its v2 infer route answers 400 saying so.
    infer = {"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["The import system"]}]}
    status, answer = call(port, "POST", f"/v2/models/{model}/infer", infer)
    said = str(answer.get("error", "")) if isinstance(answer, dict) else ""
    check(status == 400 and "/v1/chat/completions" in said, "v2 infer on a generating model: 400 naming the route")


def digits_checks(port: int, model: str, onnx_path: str) -> None:
    import onnxruntime as ort

    x = (np.random.default_rng(0).integers(0, 17, size=(4, 1, 8, 8)) / 16.0).astype(np.float32)
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    status, answer = call(port, "POST", f"/v2/models/{model}/infer", body)
    check(status == 200, "v2 infer digits: 200")
    if status != 200:
        return
    out = answer["outputs"][0]
    got = np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})[0].astype(np.float64)
    same = got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-4, atol=1e-4))
    check(same, f"v2 infer digits == ONNX Runtime here (max |diff| {float(np.abs(got - want).max()):.2e})")
    print(f"      argmax {got.argmax(-1).tolist()} (reference {want.argmax(-1).tolist()})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", required=True)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--digits-onnx", default="")
    args = parser.parse_args()
    took = wait_ready(args.port, args.timeout)
    print(f"ok    ready after {took:.1f}s")
    status, _ = call(args.port, "GET", "/v2/health/ready")
    check(status == 200, "GET /v2/health/ready: 200")
    status, meta = call(args.port, "GET", f"/v2/models/{args.model}")
    check(status == 200 and isinstance(meta, dict) and meta.get("name") == args.model, "model metadata")
    if args.model == "digits":
        digits_checks(args.port, args.model, args.digits_onnx)
    else:
        llm_checks(args.port, args.model)
    status, text = request(args.port, "GET", "/metrics")
    series = sorted({line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("edge_runner_")})
    print(f"  GET /metrics -> {status} ({len(text.splitlines())} lines; {len(series)} edge_runner_* series)")
    check(status == 200 and any("request" in s for s in series), f"/metrics: {', '.join(series[:6])} ...")
    print(f"smoke_image: {args.model}: {len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
