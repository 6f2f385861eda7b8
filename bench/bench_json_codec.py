"""KServe v2 JSON tensors: our codec (simdjson/orjson, numpy straight in and out) beside the stdlib baseline.

One MobileNet-sized request (1x224x224x3 FP32, ~3 MB of JSON) and its 1x1000 answer, decoded and encoded
in-process (decode: simdjson straight into numpy; also the orjson-lists path it replaced); the baseline is
the stdlib codec of before (``json.loads`` + ``np.asarray``, ``json.dumps`` of ``tolist()``).
All run side by side in this one run; the ratios are what counts, not the milliseconds.

    .venv/bin/python -m bench.bench_json_codec [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np

from edge_runner.protocol import json_body
from edge_runner.protocol.kserve_codec import decode_request, encode_response


def _median_ms(work: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 224, 224, 3)).astype(np.float32)
    request = {
        "inputs": [{"name": "input", "shape": list(image.shape), "datatype": "FP32", "data": image.ravel().tolist()}]
    }
    body = json.dumps(request).encode()
    logits = rng.standard_normal((1, 1000)).astype(np.float32)
    big = rng.standard_normal((1, 224, 224, 3)).astype(np.float32)  # an image-sized answer (segmentation-like)

    def ours_decode() -> object:
        return decode_request(body, None).inputs["input"]

    def orjson_lists_decode() -> object:  # the previous codec: orjson builds a Python float per element
        limit = json_body.TENSOR_PATH_BYTES
        json_body.TENSOR_PATH_BYTES = 1 << 62
        try:
            return decode_request(body, None).inputs["input"]
        finally:
            json_body.TENSOR_PATH_BYTES = limit

    def stdlib_decode() -> object:
        entry = json.loads(body)["inputs"][0]
        return np.asarray(entry["data"], dtype=np.float32).reshape(entry["shape"])

    parsed = decode_request(body, None)

    def ours_encode(array: np.ndarray) -> Callable[[], object]:
        return lambda: encode_response("m", "1", parsed, {"out": array}, {"out": "FP32"})

    def stdlib_encode(array: np.ndarray) -> Callable[[], object]:
        def run() -> object:
            out = {"name": "out", "datatype": "FP32", "shape": list(array.shape), "data": array.ravel().tolist()}
            return json.dumps({"model_name": "m", "model_version": "1", "outputs": [out]}, separators=(",", ":"))

        return run

    np.testing.assert_array_equal(ours_decode(), stdlib_decode())  # same tensor every way
    np.testing.assert_array_equal(orjson_lists_decode(), stdlib_decode())
    encoded, _ = encode_response("m", "1", parsed, {"out": big}, {"out": "FP32"})
    ours_json = json.loads(encoded)["outputs"][0]["data"]
    assert np.array_equal(np.asarray(ours_json, np.float32), big.ravel()), "encoded values differ"

    rows = [
        ("decode 1x224x224x3 FP32 request", ours_decode, stdlib_decode),
        ("decode, orjson lists (previous codec)", orjson_lists_decode, stdlib_decode),
        ("encode 1x1000 FP32 answer", ours_encode(logits), stdlib_encode(logits)),
        ("encode 1x224x224x3 FP32 answer", ours_encode(big), stdlib_encode(big)),
    ]
    print(f"request body {len(body) / 1e6:.1f} MB; median of {args.repeat} runs each, interleaved per row")
    print(f"{'step':36} {'stdlib ms':>10} {'ours ms':>9} {'speed-up':>9}")
    for label, ours, baseline in rows:
        base_ms, ours_ms = _median_ms(baseline, args.repeat), _median_ms(ours, args.repeat)
        print(f"{label:36} {base_ms:10.2f} {ours_ms:9.2f} {base_ms / ours_ms:8.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
