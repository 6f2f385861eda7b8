#!/usr/bin/env bash
# Smoke test of a built edge-runner binary against the Python package (the reference), answer for answer:
#
#   build/smoke_binary.sh dist/edge-runner-linux-x86_64          (one file)
#   build/smoke_binary.sh dist/edge-runner-linux-x86_64.d/edge-runner   (one folder)
#
# The binary and `python -m edge_runner` (EDGE_RUNNER_SMOKE_PYTHON, default: this checkout's .venv/bin/python,
# which `make serve` / `make test` create) serve the same requests; their answers must agree. The binary's own
# verdicts are never trusted: every figure it returns is compared with the reference's. Checked:
#   - v2 infer on digits (ONNX Runtime), digits-openvino (OpenVINO IR), digits-tflite (LiteRT), and an ONNX file
#     registered with `models add` (listed by `models list`), all over HTTP from one `serve`;
#   - `run digits --backend openvino` (ONNX through OpenVINO's ONNX frontend) and `run digits` (ONNX Runtime);
#   - tiny-llm (llama.cpp) greedy chat completions over the OpenAI API, token for token with log-probabilities
#     (a divergence is accepted only on a near tie: see llm_check), and `run tiny-llm PROMPT`;
#   - `doctor --json` reports all four runtimes available; `--version`; `convert` exits non-zero and says how to
#     get the converter.
# Exits non-zero, naming each failed check, on any failure.
# EDGE_RUNNER_SMOKE_TIMEOUT_SCALE (default 1) multiplies every timeout: a binary of another architecture run under
# qemu user emulation (build/build_binary_aarch64.sh --smoke) starts and answers several times slower.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -ne 1 ]; then
  echo "usage: $0 BINARY" >&2
  exit 2
fi
BINARY="$1"
if [ ! -x "$BINARY" ] || [ -d "$BINARY" ]; then
  echo "smoke: $BINARY is not an executable file (build it with 'make binary')" >&2
  exit 2
fi
PY="${EDGE_RUNNER_SMOKE_PYTHON:-$ROOT/.venv/bin/python}"
if ! "$PY" -c "import edge_runner, numpy" >/dev/null 2>&1; then
  echo "smoke: the reference Python $PY cannot import edge_runner (run 'make serve' once, or set" \
    "EDGE_RUNNER_SMOKE_PYTHON to a Python with edge-runner and its four runtimes installed)" >&2
  exit 2
fi
exec "$PY" - "$BINARY" "$ROOT" <<'EOF'
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

BINARY = [str(Path(sys.argv[1]).resolve())]
ROOT = Path(sys.argv[2])
REFERENCE = [sys.executable, "-m", "edge_runner"]
TMP = Path(tempfile.mkdtemp(prefix="edge-runner-smoke-"))
failures: list[str] = []
SCALE = float(os.environ.get("EDGE_RUNNER_SMOKE_TIMEOUT_SCALE", "1"))
# the servers' own per-request deadline (default 30 s) scaled too; unchanged (not passed) at scale 1
slow_deadline = ["--request-timeout-ms", str(int(30000 * SCALE))] if SCALE != 1 else []


def check(condition: bool, what: str, detail: str = "") -> bool:
    print(("ok    " if condition else "FAIL  ") + what + ("" if condition or not detail else f"\n      {detail}"))
    if not condition:
        failures.append(what)
    return condition


def env_for(side: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNNER_")}
    env.update(EDGE_RUNNER_MODEL_REPOSITORY=str(TMP / side / "repo"), EDGE_RUNNER_CACHE_DIR=str(TMP / side / "cache"))
    return env


def cli(command: list[str], side: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args],
        env=env_for(side),
        capture_output=True,
        text=True,
        timeout=timeout * SCALE,
        stdin=subprocess.DEVNULL,
        cwd=TMP,
    )


class Server:
    def __init__(self, command: list[str], side: str) -> None:
        (TMP / side).mkdir(parents=True, exist_ok=True)
        self.ready = TMP / side / "port"
        self.log = TMP / side / "server.log"
        self.proc = subprocess.Popen(
            [*command, "serve", "--port", "0", "--ready-file", str(self.ready), "--max-seq-len", "256", *slow_deadline],
            env=env_for(side),
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=TMP,
        )
        self.url = ""

    def wait(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s * SCALE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self.ready.exists() and self.ready.read_text().strip():
                url = f"http://127.0.0.1:{self.ready.read_text().strip()}"
                try:
                    with urllib.request.urlopen(url + "/v2/health/ready", timeout=2):
                        self.url = url
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout_s * SCALE:.0f}s:\n{self.log.read_text()[-3000:]}")

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=120 * SCALE) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"POST {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def logits(server: Server, model: str, x: np.ndarray) -> np.ndarray:
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    out = server.post(f"/v2/models/{model}/infer", body)["outputs"][0]
    return np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])


def same_numbers(what: str, got: np.ndarray, want: np.ndarray) -> None:
    close = got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-4, atol=1e-4))
    detail = f"binary {got.ravel()[:4]} vs reference {want.ravel()[:4]} (shapes {got.shape}, {want.shape})"
    check(close and bool((got.argmax(-1) == want.argmax(-1)).all()), what, detail)


def run_json(command: list[str], side: str, *args: str) -> tuple[int, str, object]:
    result = cli(command, side, "run", *args, "--json")
    try:
        return result.returncode, result.stderr, json.loads(result.stdout)
    except json.JSONDecodeError:
        return result.returncode, result.stderr + result.stdout, None


def cli_checks(x: np.ndarray) -> None:
    version = cli(BINARY, "bin", "--version")
    check(version.returncode == 0 and "edge-runner" in version.stdout, "--version", version.stderr[-500:])
    doctor = cli(BINARY, "bin", "doctor", "--json")
    runtimes = json.loads(doctor.stdout)["runtimes"] if doctor.returncode == 0 else {}
    for name in ("onnxruntime", "openvino", "tflite", "llama_cpp"):
        info = runtimes.get(name, {})
        check(bool(info.get("available")), f"doctor: {name} available", str(info or doctor.stderr[-500:]))
    convert = cli(BINARY, "bin", "convert", "model.pt", "--to", "onnx")
    check(
        convert.returncode != 0 and "edge-runner[convert]" in convert.stderr,
        "convert: exits non-zero and names the convert extra",
        f"exit {convert.returncode}: {convert.stderr[-500:]}",
    )
    onnx = ROOT / "edge_runner" / "defaults" / "digits" / "1" / "model.onnx"
    added = cli(BINARY, "bin", "models", "add", str(onnx), "--name", "smoke-digits")
    check(added.returncode == 0, "models add smoke-digits (ONNX file)", added.stderr[-500:])
    listed = cli(BINARY, "bin", "models", "--json", "list")
    names = [m.get("name") for m in json.loads(listed.stdout)] if listed.returncode == 0 else []
    check(
        {"smoke-digits", "digits", "digits-openvino", "digits-tflite", "tiny-llm"} <= set(names),
        "models list: the added model and every embedded default",
        f"listed {names}; {listed.stderr[-300:]}",
    )
    (TMP / "input.json").write_text(json.dumps({"input": x.tolist()}))
    for extra, what in (
        ([], "run digits (onnxruntime)"),
        (["--backend", "openvino"], "run digits --backend openvino (ONNX on OpenVINO)"),
    ):
        args = ["digits", "--input", str(TMP / "input.json"), *extra]
        rc_b, err_b, got = run_json(BINARY, "bin", *args)
        rc_r, err_r, want = run_json(REFERENCE, "ref", *args)
        if check(rc_b == 0 and rc_r == 0 and isinstance(got, dict), f"{what}: exits 0", (err_b or err_r)[-800:]):
            same_numbers(f"{what}: binary == reference", np.asarray(got["logits"]), np.asarray(want["logits"]))
    chat = cli(BINARY, "bin", "run", "tiny-llm", "def main", timeout=300)
    check(
        chat.returncode == 0 and chat.stdout.strip() != "", "run tiny-llm PROMPT: exits 0 with text", chat.stderr[-800:]
    )


# llama.cpp's float sums run in a different order on the binary's baseline (SSE2) build than on the reference's
# native build, so greedy decoding may take the other branch where two tokens are within rounding of each other;
# after that the texts differ legitimately. So: token for token equal with log-probabilities within LOGPROB_TOL, up
# to a divergence (if any) that must be a near tie in the reference's own top log-probabilities.
LOGPROB_TOL = 0.15
TIE_TOL = 0.1


def llm_check(binary: Server, reference: Server, prompt: str) -> None:
    body = {
        "model": "tiny-llm",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 48,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 5,
    }
    got = binary.post("/v1/chat/completions", body)["choices"][0]["logprobs"]["content"]
    want = reference.post("/v1/chat/completions", body)["choices"][0]["logprobs"]["content"]
    worst, diverged = 0.0, ""
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        if g["token"] != w["token"]:
            alternatives = {t["token"]: t["logprob"] for t in w["top_logprobs"]}
            gap = w["logprob"] - alternatives.get(g["token"], float("-inf"))
            diverged = f"diverged at token {i} ({g['token']!r} vs {w['token']!r}, gap {gap:.4f})"
            check(gap <= TIE_TOL, f"tiny-llm {prompt!r}: divergence only on a near tie", diverged)
            break
        worst = max(worst, abs(g["logprob"] - w["logprob"]))
    else:
        check(
            len(got) == len(want) and len(got) > 0,
            f"tiny-llm {prompt!r}: same token count",
            f"{len(got)} vs {len(want)}",
        )
    check(
        worst <= LOGPROB_TOL,
        f"tiny-llm {prompt!r} greedy: binary agrees with reference ({diverged or f'{len(got)} tokens identical'}, "
        f"max |logprob diff| {worst:.4f})",
        f"max |logprob diff| {worst:.4f} > {LOGPROB_TOL}",
    )


def server_checks(x: np.ndarray) -> None:
    servers = {"bin": Server(BINARY, "bin"), "ref": Server(REFERENCE, "ref")}
    try:
        for server in servers.values():
            server.wait()
        check(True, "serve: binary and reference ready")
        for model in ("digits", "digits-openvino", "digits-tflite"):
            same_numbers(
                f"v2 infer {model}: binary == reference",
                logits(servers["bin"], model, x),
                logits(servers["ref"], model, x),
            )
        same_numbers(
            "v2 infer smoke-digits (added by models add) == reference digits",
            logits(servers["bin"], "smoke-digits", x),
            logits(servers["ref"], "digits", x),
        )
        for prompt in ("What is a generator?", "The import system", "def main"):
            llm_check(servers["bin"], servers["ref"], prompt)
    finally:
        for server in servers.values():
            server.stop()


def main() -> int:
    print(f"smoke: {BINARY[0]} against {' '.join(REFERENCE)} (work dir {TMP})")
    x = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    start = time.monotonic()
    try:
        cli_checks(x)
        server_checks(x)
    except Exception as exc:  # a crash of the harness is a failure too, with its reason
        check(False, f"smoke harness: {type(exc).__name__}", str(exc)[-3000:])
    print(f"smoke: {len(failures)} failure(s) in {time.monotonic() - start:.0f}s")
    if failures:
        print("smoke: FAILED: " + "; ".join(failures), file=sys.stderr)
        print(f"smoke: logs kept in {TMP}", file=sys.stderr)
        return 1
    shutil.rmtree(TMP, ignore_errors=True)
    return 0


sys.exit(main())
EOF
