"""The real MiniLM, converted to ONNX and registered, answers /v1/embeddings through the openai client."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ServerProcess, free_env

SENTENCES = ["The edge box serves models.", "A tuple is an immutable sequence.", "Embeddings map text to vectors."]


def _torch_reference(model_dir: Path) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    batch = tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


@pytest.mark.slow
def test_converted_minilm_embeddings_over_openai_api(
    minilm_path: Path, tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    openai = pytest.importorskip("openai")
    env = {**free_env(tmp_path), "HF_HUB_OFFLINE": "1"}
    converted = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_runner",
            "convert",
            str(minilm_path),
            "--to",
            "onnx",
            "--quantize",
            "int8",
            "--out",
            str(tmp_path / "minilm-int8"),
            "--register",
            "minilm",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert converted.returncode == 0, converted.stderr[-2000:]
    server = start_server("--models", "minilm", "--no-load-defaults", env=env)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    result = client.embeddings.create(model="minilm", input=SENTENCES)
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    assert got.shape == (3, 384) and result.usage.prompt_tokens > len(SENTENCES)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(got * _torch_reference(minilm_path), axis=1)
    assert cosine.min() >= 0.99, cosine
    single = client.embeddings.create(model="minilm", input=SENTENCES[0])
    # Dynamic INT8 quantizes activations per batch (padding included), so a text embedded alone and in a
    # batch differ slightly; both stay within the 0.99 cosine of the reference.
    assert np.dot(np.array(single.data[0].embedding), got[0]) > 0.98
    assert np.dot(np.array(single.data[0].embedding), _torch_reference(minilm_path)[0]) >= 0.99
    assert os.path.isdir(tmp_path / "minilm-int8")


def test_digits_refuses_embeddings(start_server: Callable[..., ServerProcess]) -> None:
    openai = pytest.importorskip("openai")
    server = start_server("--models", "digits")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="does not produce embeddings"):
        client.embeddings.create(model="digits", input="hello")
