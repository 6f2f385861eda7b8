"""GGUF conversion: tiny random HF llama / mistral / qwen2 and the real MiniLM, checked against torch."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from converters.gguf import ParityError, convert_to_gguf  # noqa: E402
from converters.gguf import parity as parity_module  # noqa: E402
from converters.gguf.architectures import UnsupportedModel  # noqa: E402


@pytest.mark.parametrize("quantize", ["f16", "q8_0"])
@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_decoder_parity(arch: str, quantize: str, make_hf_decoder: Callable[[str], Path], tmp_path: Path) -> None:
    src = make_hf_decoder(arch)
    manifest = convert_to_gguf(src, tmp_path / "out", quantize=quantize, name=f"tiny-{arch}", threads=2)
    report = manifest.parity
    assert report["passed"], report
    assert report["top1_agreement"] >= (0.85 if quantize == "q8_0" else 0.95)
    assert report["mean_cosine"] >= 0.99
    assert report["tokenizer_agreement"] == 1.0
    assert report["quantizer"] == ("llama.cpp" if quantize == "q8_0" else "gguf writer")
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
    assert q8.parity["size_bytes_before"] > q8.parity["size_bytes_after"]


def test_drift_beyond_threshold_fails_loudly_unless_allowed(
    make_hf_decoder: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(parity_module.DECODER_THRESHOLDS_BY_QUANT, "q8_0", {"top1_agreement": 1.01})
    src = make_hf_decoder("llama")
    with pytest.raises(ParityError, match="top1_agreement"):
        convert_to_gguf(src, tmp_path / "a", quantize="q8_0")
    manifest = convert_to_gguf(src, tmp_path / "b", quantize="q8_0", allow_drift=True)
    assert manifest.parity["passed"] is False


def test_unsupported_architecture_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(UnsupportedModel, match="GPT2LMHeadModel"):
        convert_to_gguf(tmp_path, tmp_path / "out")


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["f16", "q8_0"])
def test_minilm_embeddings(quantize: str, minilm_dir: Path, tmp_path: Path) -> None:
    manifest = convert_to_gguf(minilm_dir, tmp_path / "minilm", quantize=quantize, name="minilm", threads=2)
    report = manifest.parity
    assert report["kind"] == "encoder"
    assert report["min_cosine"] >= 0.99, report
    assert manifest.task == "feature-extraction"
