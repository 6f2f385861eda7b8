"""Triton's own client, unmodified, against a real `edge-runner serve` subprocess."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tests.conftest import ServerProcess

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture
def triton(start_server: Callable[..., ServerProcess]) -> object:
    server = start_server("--models", "digits")
    return httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_batch_of_16_held_out_digits(
    triton: object, binary: bool, digits_holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = digits_holdout
    correct = 0
    for start in range(0, 64, 16):
        batch = x[start : start + 16]
        inp = httpclient.InferInput("input", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch, binary_data=binary)
        out = httpclient.InferRequestedOutput("logits", binary_data=binary)
        result = triton.infer("digits", [inp], outputs=[out])  # type: ignore[attr-defined]
        logits = result.as_numpy("logits")
        assert logits.shape == (16, 10)
        correct += int((logits.argmax(1) == y[start : start + 16]).sum())
    assert correct / 64 >= 0.9


def test_metadata_config_stats_repository(triton: object) -> None:
    t = triton
    assert t.is_server_live() and t.is_server_ready() and t.is_model_ready("digits")  # type: ignore[attr-defined]
    meta = t.get_model_metadata("digits")  # type: ignore[attr-defined]
    assert meta["inputs"][0]["shape"] == [-1, 1, 8, 8]
    assert t.get_model_config("digits")["max_batch_size"] == 8  # type: ignore[attr-defined]
    inp = httpclient.InferInput("input", [2, 1, 8, 8], "FP32")
    inp.set_data_from_numpy(np.zeros((2, 1, 8, 8), np.float32))
    t.infer("digits", [inp], model_version="1")  # type: ignore[attr-defined]
    stats = t.get_inference_statistics("digits")["model_stats"][0]  # type: ignore[attr-defined]
    assert stats["inference_count"] == 2
    names = {m["name"] for m in t.get_model_repository_index()}  # type: ignore[attr-defined]
    assert "digits" in names
    t.unload_model("digits")  # type: ignore[attr-defined]
    assert not t.is_model_ready("digits")  # type: ignore[attr-defined]
    t.load_model("digits")  # type: ignore[attr-defined]
    assert t.is_model_ready("digits")  # type: ignore[attr-defined]


def test_errors_reach_the_client_with_messages(triton: object) -> None:
    inp = httpclient.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), np.float32))
    with pytest.raises(InferenceServerException, match=r"expected rank 4"):
        triton.infer("digits", [inp])  # type: ignore[attr-defined]
    with pytest.raises(InferenceServerException, match="not found"):
        triton.infer("nope", [inp])  # type: ignore[attr-defined]
    wrong = httpclient.InferInput("input", [1, 1, 8, 8], "FP64")
    wrong.set_data_from_numpy(np.zeros((1, 1, 8, 8), np.float64), binary_data=True)
    with pytest.raises(InferenceServerException, match="expected datatype FP32, got FP64"):
        triton.infer("digits", [wrong])  # type: ignore[attr-defined]
