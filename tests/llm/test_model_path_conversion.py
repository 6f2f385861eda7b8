"""``--model-path`` of a source that is not a servable artifact: converted on first use, cached by source hash.

A tiny random Hugging Face Llama folder (to GGUF, answers over OpenAI) and a small Keras file (to ONNX,
answers over KServe v2), each served by a real ``serve`` subprocess; the second start of the same source
does not convert again (the log says it serves the cached folder, and the cached manifest is untouched).
Keras answers are checked against Keras itself, run here.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import ServerProcess, free_env

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow


def _post(server: ServerProcess, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(server.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as resp:
        return dict(json.loads(resp.read()))


def _two_starts(
    start_server: Callable[..., ServerProcess], env: dict[str, str], source: Path, name: str
) -> tuple[ServerProcess, Path]:
    """Start, stop, start again; returns the second server and the cached conversion folder."""
    first = start_server("--model-name", name, "--model-path", str(source), env=env, wait=False)
    first.wait_ready(600)
    log = first.log_path.read_text()
    assert f"converting {source}" in log, log[-3000:]
    converted = sorted((Path(env["EDGE_RUNNER_CACHE_DIR"]) / "converted").glob(f"{name}-*"))
    assert len(converted) == 1 and (converted[0] / "manifest.json").is_file()
    stamp = (converted[0] / "manifest.json").stat().st_mtime_ns
    assert first.stop() == 0
    second = start_server("--model-name", name, "--model-path", str(source), env=env, wait=False)
    second.wait_ready(120)
    log = second.log_path.read_text()
    assert "serving" in log and "cached" in log and f"converting {source}" not in log, log[-3000:]
    assert (converted[0] / "manifest.json").stat().st_mtime_ns == stamp
    return second, converted[0]


def test_hf_llama_folder_is_converted_once_and_chats(
    make_hf_decoder: Callable[[str], Path], start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    source = make_hf_decoder("llama")
    server, folder = _two_starts(start_server, free_env(tmp_path), source, "hf-llama")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "gguf" and manifest["quantization"] == "q8_0"
    assert manifest["parity"], "the parity report is kept with the conversion"
    body = {"model": "hf-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0}
    answer = _post(server, "/v1/chat/completions", body)
    assert answer["usage"]["completion_tokens"] >= 1 and answer["choices"][0]["finish_reason"] in ("stop", "length")


def test_keras_file_is_converted_once_and_infers(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    source = tmp_path / "small.keras"
    model.save(str(source))
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    expected = np.asarray(model(x))

    server, folder = _two_starts(start_server, free_env(tmp_path), source, "small")
    assert json.loads((folder / "manifest.json").read_text())["format"] == "onnx"
    meta = json.loads(urllib.request.urlopen(server.url + "/v2/models/small", timeout=30).read())
    (inp,), (out,) = meta["inputs"], meta["outputs"]
    body = {"inputs": [{"name": inp["name"], "shape": [4, 6], "datatype": "FP32", "data": x.ravel().tolist()}]}
    answer = _post(server, "/v2/models/small/infer", body)
    got = np.asarray(answer["outputs"][0]["data"], np.float32).reshape(4, 3)
    assert answer["outputs"][0]["name"] == out["name"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_hub_cache_folder_resolves_to_its_main_snapshot(tmp_path: Path) -> None:
    """A hub cache laid out as huggingface_hub writes it (built here: nothing is downloaded)."""
    from edge_runner.cli.prepare import hub_snapshot
    from edge_runner.core.errors import ModelLoadError

    repo = tmp_path / "models--org--tiny"
    for commit in ("aaa111", "bbb222"):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="2 snapshots"):
        hub_snapshot(repo)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("bbb222\n")
    assert hub_snapshot(repo) == repo / "snapshots" / "bbb222"
    assert hub_snapshot(tmp_path) == tmp_path  # anything else is left as it is
