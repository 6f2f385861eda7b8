"""The CLI end to end: models verbs, run, config --show, the seed's serve form, SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_runner.core.paths import DEFAULTS_DIR
from tests.conftest import ServerProcess, free_env, write_fake_model

DIGITS = DEFAULTS_DIR / "digits" / "1"


def cli(tmp: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_runner", *args],
        capture_output=True,
        text=True,
        env=env or free_env(tmp),
        timeout=120,
    )


def test_models_add_list_inspect_export_import_rm(tmp_path: Path) -> None:
    added = cli(tmp_path, "models", "--json", "add", str(DIGITS / "model.onnx"), "--name", "mine")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["inputs"][0]["name"] == "input"
    listed = json.loads(cli(tmp_path, "models", "--json", "list").stdout)
    assert {"name": "mine", "versions": [1], "source": "repository"} in listed
    assert {"name": "digits", "versions": [1], "source": "embedded"} in listed
    inspected = json.loads(cli(tmp_path, "models", "--json", "inspect", "mine").stdout)
    assert inspected["checksums"] == "ok"
    bundle = tmp_path / "mine.tar.gz"
    assert cli(tmp_path, "models", "export", "mine", "--out", str(bundle)).returncode == 0
    assert cli(tmp_path, "models", "import", str(bundle), "--name", "copy").returncode == 0
    assert cli(tmp_path, "models", "rm", "mine").returncode == 0
    mine = [
        m["name"] for m in json.loads(cli(tmp_path, "models", "--json", "list").stdout) if m["source"] != "embedded"
    ]
    assert mine == ["copy"]
    embedded = cli(tmp_path, "models", "rm", "digits")
    assert embedded.returncode == 1 and "not in the writable repository" in embedded.stderr


def test_models_errors_are_one_line_with_exit_codes(tmp_path: Path) -> None:
    bad = cli(tmp_path, "models", "add", str(DIGITS / "model.onnx"), "--name", "../evil")
    assert bad.returncode == 1 and "invalid model name '../evil'" in bad.stderr and "Traceback" not in bad.stderr
    missing = cli(tmp_path, "models", "inspect", "ghost")
    assert missing.returncode == 1 and "not in the repository" in missing.stderr


def test_run_with_npy_and_json_inputs(tmp_path: Path, digits_holdout: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits_holdout
    np.save(tmp_path / "x.npy", x[:5])
    out = cli(tmp_path, "run", "digits", "--input", str(tmp_path / "x.npy"), "--json")
    assert out.returncode == 0, out.stderr
    logits = np.array(json.loads(out.stdout)["logits"])
    assert (logits.argmax(1) == y[:5]).mean() >= 0.8
    (tmp_path / "x.json").write_text(json.dumps({"input": x[:2].tolist()}))
    text = cli(tmp_path, "run", "digits", "--input", str(tmp_path / "x.json"))
    assert "argmax:" in text.stdout


def test_config_show_reports_values_and_sources(tmp_path: Path) -> None:
    (tmp_path / "edge.toml").write_text("max_queue_delay_ms = 7\n")
    env = {**free_env(tmp_path), "MAX_BATCH_SIZE": "3"}
    out = cli(
        tmp_path, "config", "--show", "--json", "--config", str(tmp_path / "edge.toml"), "--port", "9001", env=env
    )
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert (rows["max_batch_size"]["value"], rows["max_batch_size"]["source"]) == (3, "env MAX_BATCH_SIZE")
    assert rows["max_queue_delay_ms"]["source"] == str(tmp_path / "edge.toml")
    assert (rows["port"]["value"], rows["port"]["source"]) == (9001, "cli")
    bad = cli(tmp_path, "config", "--show", env={**free_env(tmp_path), "EDGE_RUNNER_MAX_BATCHES": "1"})
    assert bad.returncode == 2 and "unknown environment variable EDGE_RUNNER_MAX_BATCHES" in bad.stderr


def test_seed_form_without_verb_serves_one_model(tmp_path: Path) -> None:
    # The seed line has no verb: edge-runner --model-name N --model-path P [--max-seq-len] [--enable-metrics]
    ready = tmp_path / "seed-port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_runner",
            "--model-name",
            "seeded",
            "--model-path",
            str(DIGITS / "model.onnx"),
            "--max-seq-len",
            "1024",
            "--enable-metrics",
            "--port",
            "0",
            "--ready-file",
            str(ready),
        ],
        env=free_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        url = f"http://127.0.0.1:{ready.read_text()}"
        body = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/v2/repository/index", data=b"") as resp:
                    body = json.loads(resp.read())
                    if body and body[0]["state"] == "READY":
                        break
            except OSError:
                time.sleep(0.1)
        assert body == [{"name": "seeded", "version": "1", "state": "READY", "reason": ""}]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def _outcome(url: str, body: bytes) -> str:
    """``ok`` (200 with the full answer), ``refused`` (503 + Retry-After, or the listener is closed), or what was
    lost: any other status, a dropped connection or a timeout after the request was sent."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer = json.loads(resp.read())
            return "ok" if resp.status == 200 and answer["outputs"][0]["shape"] == [2, 4] else f"bad answer {answer}"
    except urllib.error.HTTPError as err:
        return "refused" if err.code == 503 and err.headers.get("Retry-After") else f"HTTP {err.code}"
    except urllib.error.URLError as err:
        return "refused" if isinstance(err.reason, ConnectionRefusedError) else f"lost: {err.reason!r}"
    except OSError as err:  # RemoteDisconnected, ConnectionResetError, timeouts: an accepted request was dropped
        return f"lost: {err!r}"


def test_sigterm_drains_in_flight_requests_and_exits_zero(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Every request sent before SIGTERM is answered; after it, work is refused explicitly, never dropped."""
    write_fake_model(tmp_path / "repo", "slow", delay_ms=250)
    server = start_server("--models", "slow", "--no-load-defaults")
    url = server.url + "/v2/models/slow/infer"
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1.0] * 8}]}).encode()
    records: list[tuple[float, str]] = []  # (send time, outcome)
    signalled = threading.Event()

    def client() -> None:
        while True:
            sent = time.monotonic()
            outcome = _outcome(url, body)
            records.append((sent, outcome))
            if outcome != "ok" or (signalled.is_set() and sent > sigterm_at[0] + 1.0):
                return

    sigterm_at = [float("inf")]
    workers = [threading.Thread(target=client) for _ in range(6)]
    for w in workers:
        w.start()
    time.sleep(0.8)  # six clients on one 250 ms worker: some running, some queued
    sigterm_at[0] = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    signalled.set()
    for w in workers:
        w.join(60)
    assert server.proc.wait(30) == 0
    before = [outcome for sent, outcome in records if sent < sigterm_at[0]]
    lost = [outcome for _, outcome in records if outcome not in ("ok", "refused")]
    assert lost == [], [(round(t - sigterm_at[0], 3), o) for t, o in records if o != "ok"]
    assert before and set(before) == {"ok"}, before  # accepted before SIGTERM: all answered
    assert len(before) >= 6  # at least one full round was in flight when the signal came
    assert "draining" in server.log_path.read_text()


def test_drain_outcome_classifier_sees_a_lost_request(tmp_path: Path) -> None:
    """The check above must be able to fail: a server that closes the connection mid-request is 'lost'."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def drop_one() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()  # read the request, answer nothing

    thread = threading.Thread(target=drop_one)
    thread.start()
    assert _outcome(f"http://127.0.0.1:{port}/x", b"{}").startswith("lost")
    thread.join(10)
    listener.close()
    assert _outcome(f"http://127.0.0.1:{port}/x", b"{}") == "refused"


def test_single_model_mode_exits_non_zero_when_its_model_cannot_be_served(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """The seed's form serves one model: without it the server must not report ready (an orchestrator restarts it)."""
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx graph")
    server = start_server("--model-name", "m", "--model-path", str(broken), wait=False)
    assert server.proc.wait(60) == 1
    log = server.log_path.read_text()
    assert "cannot serve" in log and "ready:" not in log


def test_sigterm_during_startup_loads_answers_every_request(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Liveness answers while models load; a SIGTERM then refuses work explicitly and exits 0."""
    write_fake_model(tmp_path / "repo", "big", load_delay_ms=4000)
    server = start_server("--models", "big", "--no-load-defaults", wait=False)
    deadline = time.monotonic() + 30
    while not (server.ready_file.exists() and server.ready_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.ready_file.read_text()}"
    with urllib.request.urlopen(url + "/v2/health/live", timeout=5) as resp:
        assert resp.status == 200  # alive while loading
    try:
        urllib.request.urlopen(url + "/v2/health/ready", timeout=5)
        raise AssertionError("ready before its model loaded")
    except urllib.error.HTTPError as err:
        assert err.code == 503
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1.0] * 8}]}).encode()
    outcomes: list[str] = []
    sender = threading.Thread(
        target=lambda: outcomes.extend(_outcome(url + "/v2/models/big/infer", body) for _ in range(5))
    )
    sender.start()
    server.proc.send_signal(signal.SIGTERM)
    sender.join(30)
    assert server.proc.wait(30) == 0
    assert outcomes and set(outcomes) <= {"refused"}, outcomes  # 503 + Retry-After or closed: never dropped
