"""GGUF conversion: tiny random HF llama / mistral / qwen2 and the real MiniLM, checked against torch."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from converters.gguf import ParityError, convert_to_gguf  # noqa: E402
from converters.gguf.architectures import UnsupportedModel  # noqa: E402
from edge_runner.core import parity as parity_module  # noqa: E402
from edge_runner.core.parity import ParityReport  # noqa: E402

# other texts than the converter's own SAMPLE_TEXTS: the tests check the artifact themselves
CHECK_TEXTS = (
    "Small language models answer questions on edge boxes.",
    "for i in range(10):\n    print(i * i)",
    "The river was high in the morning after the rain.",
)
# the documented decoder limits (docs/manifest.md): mean cosine, top-1 agreement
DECODER_LIMITS = {"f16": (0.999, 0.95), "q8_0": (0.99, 0.85)}


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)))


def _llama_cpp_vs_torch_logits(src: Path, gguf_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Next-token logits at every position of CHECK_TEXTS: (HF torch, llama.cpp on the GGUF file)."""
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    llm = Llama(str(gguf_file), n_ctx=256, logits_all=True, n_threads=2, verbose=False)
    hf, gg = [], []
    for text in CHECK_TEXTS:
        ids = list(tokenizer(text)["input_ids"])
        with torch.no_grad():
            hf.append(model(torch.tensor([ids])).logits[0].numpy())
        llm.reset()
        llm.eval(ids)
        gg.append(np.array(llm.scores[: len(ids)], dtype=np.float32)[:, : hf[-1].shape[-1]])
    del llm
    return np.concatenate(hf), np.concatenate(gg)


@pytest.mark.parametrize("quantize", ["f16", "q8_0"])
@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_decoder_parity(arch: str, quantize: str, make_hf_decoder: Callable[[str], Path], tmp_path: Path) -> None:
    src = make_hf_decoder(arch)
    manifest = convert_to_gguf(src, tmp_path / "out", quantize=quantize, name=f"tiny-{arch}", threads=2)
    report = ParityReport.from_json(manifest.parity)
    assert report.passed, report
    assert (report.kind, report.measured_with, report.primary_output) == ("decoder", "llama.cpp", "logits")
    assert report.details["tokenizer_agreement"] == 1.0
    assert report.details["quantizer"] == ("llama.cpp" if quantize == "q8_0" else "gguf writer")
    # independently of the converter's report: llama.cpp on the written file against the HF model
    hf, gg = _llama_cpp_vs_torch_logits(src, tmp_path / "out" / "model.gguf")
    min_cosine, min_top1 = DECODER_LIMITS[quantize]
    assert _row_cosines(hf, gg).mean() >= min_cosine
    assert np.mean(hf.argmax(-1) == gg.argmax(-1)) >= min_top1
    assert (manifest.format, manifest.backend, manifest.quantization, manifest.task) == (
        "gguf",
        "llama_cpp",
        quantize,
        "text-generation",
    )
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk["files"][0]["path"] == "model.gguf"
    reader = gguf.GGUFReader(str(tmp_path / "out" / "model.gguf"))
    assert reader.fields["tokenizer.chat_template"].contents().startswith("{% for message")
    expected_arch = "qwen2" if arch == "qwen2" else "llama"
    assert reader.fields["general.architecture"].contents() == expected_arch
    if quantize == "q8_0":
        types = {t.tensor_type for t in reader.tensors if len(t.shape) == 2}
        assert gguf.GGMLQuantizationType.Q8_0 in types


def test_q8_0_is_smaller_than_f16(make_hf_decoder: Callable[[str], Path], tmp_path: Path) -> None:
    src = make_hf_decoder("llama")
    f16 = convert_to_gguf(src, tmp_path / "f16", quantize="f16", check_parity=False)
    q8 = convert_to_gguf(src, tmp_path / "q8", quantize="q8_0", check_parity=False)
    assert q8.files[0].size < f16.files[0].size
    report = ParityReport.from_json(q8.parity)
    assert report.size_source_bytes > report.size_artifact_bytes == q8.files[0].size
    assert report.passed is False and report.details["skipped"] is True  # nothing was measured


def test_drift_beyond_threshold_fails_loudly_unless_allowed(
    make_hf_decoder: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(parity_module.THRESHOLDS, ("decoder", "q8_0"), parity_module.Thresholds(0.99, 1.01))
    src = make_hf_decoder("llama")
    with pytest.raises(ParityError, match="top1_agreement"):
        convert_to_gguf(src, tmp_path / "a", quantize="q8_0")
    manifest = convert_to_gguf(src, tmp_path / "b", quantize="q8_0", allow_drift=True)
    assert manifest.parity["passed"] is False


def test_unsupported_architecture_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["FalconForCausalLM"]}))
    with pytest.raises(UnsupportedModel, match="FalconForCausalLM"):
        convert_to_gguf(tmp_path, tmp_path / "out")


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["f16", "q8_0"])
def test_minilm_embeddings(quantize: str, minilm_dir: Path, tmp_path: Path) -> None:
    manifest = convert_to_gguf(minilm_dir, tmp_path / "minilm", quantize=quantize, name="minilm", threads=2)
    report = ParityReport.from_json(manifest.parity)
    assert report.kind == "encoder" and report.passed, report
    assert report.details["min_cosine"] >= 0.99
    assert manifest.task == "feature-extraction"
    # independently: llama.cpp embeddings of the written file against mean-pooled torch embeddings
    import torch
    from llama_cpp import Llama
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModel.from_pretrained(minilm_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        hidden = [model(**tokenizer(t, return_tensors="pt")).last_hidden_state[0] for t in CHECK_TEXTS]
    expected = np.stack([h.mean(0).numpy() for h in hidden])
    llm = Llama(str(tmp_path / "minilm" / "model.gguf"), embedding=True, n_ctx=128, n_threads=2, verbose=False)
    got = np.array([llm.embed(t) for t in CHECK_TEXTS], dtype=np.float32)
    del llm
    assert _row_cosines(expected, got).min() >= 0.99  # the documented encoder limit
