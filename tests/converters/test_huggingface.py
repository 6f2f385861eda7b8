"""Tiny random Hugging Face folders and the real all-MiniLM-L6-v2 to ONNX and OpenVINO IR."""

from __future__ import annotations

import numpy as np
import pytest

from tests.converters.test_torch_sources import assert_parity

pytest.importorskip("transformers")
pytest.importorskip("openvino")

EXPECTED = {
    "bert": ("text-classification", ["logits"]),
    "distilbert": ("feature-extraction", ["last_hidden_state", "sentence_embedding"]),
    "vit": ("image-classification", ["logits"]),
    "gpt2": ("text-generation", ["logits"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("target", ["onnx", "openvino"])
def test_tiny_hf_models_convert_with_parity(convert, hf_zoo, name, target):
    result = convert(hf_zoo[name], "--to", target)
    assert_parity(result)
    task, outputs = EXPECTED[name]
    assert result.manifest["task"] == task
    assert [o["name"] for o in result.manifest["outputs"]] == outputs
    if name != "vit":
        assert "tokenizer.json" in {f["path"] for f in result.manifest["files"]}
        assert [i["shape"] for i in result.manifest["inputs"]] == [[-1, -1], [-1, -1]]


@pytest.mark.slow
def test_task_override(convert, hf_zoo):
    result = convert(hf_zoo["bert"], "--to", "onnx", "--task", "feature-extraction")
    assert_parity(result)
    assert result.manifest["extra"]["embedding_output"] == "sentence_embedding"


def _torch_sentence_embedding(path, texts):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    return pooled, {k: v.numpy() for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def _cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.slow
def test_minilm_fp32_and_int8(convert, minilm_path, tmp_path):
    """FP32 ONNX cosine >= 0.9999; INT8 ONNX / OpenVINO cosine >= 0.99 at <= 0.3x the FP32 size."""
    import onnxruntime as ort

    texts = ["A man is eating food.", "The new movie is awesome.", "Edge servers answer quickly.", "Hello!"]
    expected, feeds = _torch_sentence_embedding(minilm_path, texts)
    fp32 = convert(minilm_path, "--to", "onnx", "--samples", "8")
    assert_parity(fp32)
    session = ort.InferenceSession(str(fp32.out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    assert _cosines(expected, got["sentence_embedding"]).min() >= 0.9999
    fp32_size = fp32.manifest["files"][0]["size"]
    for target in ("onnx", "openvino"):
        int8 = convert(minilm_path, "--to", target, "--quantize", "int8", "--samples", "8")
        assert_parity(int8, "int8")
        assert int8.parity["mean_cosine"] >= 0.99
        size = sum(f["size"] for f in int8.manifest["files"] if f["path"].startswith("model."))
        assert size <= 0.3 * fp32_size, (target, size, fp32_size)


@pytest.mark.slow
def test_gguf_handoff_publishes_atomically(convert, minilm_path):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("converters.gguf")
    result = convert(minilm_path, "--to", "gguf", "--quantize", "q8_0")
    assert result.rc == 0, result.stderr
    assert result.manifest["format"] == "gguf" and result.manifest["parity"]["passed"] is True
    assert not list(result.out.parent.glob(f".{result.out.name}*"))
