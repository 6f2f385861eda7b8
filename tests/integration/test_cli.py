"""The CLI end to end: models verbs, run, config --show, the seed's serve form, SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_runner.core.paths import DEFAULTS_DIR
from tests.conftest import ServerProcess, free_env

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


def test_sigterm_drains_in_flight_requests_and_exits_zero(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server("--models", "digits")
    results: list[int] = []
    body = json.dumps(
        {"inputs": [{"name": "input", "shape": [64, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 4096}]}
    ).encode()

    def call() -> None:
        for _ in range(20):
            try:
                req = urllib.request.Request(server.url + "/v2/models/digits/infer", data=body)
                with urllib.request.urlopen(req, timeout=30) as resp:
                    results.append(resp.status)
            except OSError:
                return

    workers = [threading.Thread(target=call) for _ in range(4)]
    for w in workers:
        w.start()
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    for w in workers:
        w.join(60)
    assert server.proc.wait(30) == 0
    assert results and set(results) == {200}
    assert "draining" in server.log_path.read_text()
