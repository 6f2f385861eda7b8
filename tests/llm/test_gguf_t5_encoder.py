"""GGUF conversion of T5 encoders used for embeddings (sentence-t5 / GTR style), checked against transformers.

Tiny random T5 folders (tests/llm/gguf_fixtures.py: d_model 64, 2 layers, 4 heads, a 500-piece
SentencePiece Unigram tokenizer trained here, with T5's normalizer pipeline and a precompiled charsmap)
are converted to F16, Q8_0 and Q4_K_M ``t5encoder`` files. The test runs them in our llama.cpp backend
(the path /v1/embeddings takes) and compares with ``T5EncoderModel`` + mean pooling computed here, never
with the converter's own verdict: llama.cpp's Unigram tokenizer gives transformers' ids, and the pooled
embeddings agree to cosine >= 0.999 (F16) / 0.99 (Q8_0; Q4_K_M only a loose floor). The served test
goes through ``edge-runner convert`` and ``serve``; the llama-server test checks the metadata with
llama.cpp's own C++ server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

for _runtime in ("llama_cpp", "transformers", "torch"):
    pytest.importorskip(_runtime)
gguf = pytest.importorskip("gguf")

from converters.gguf import convert_to_gguf  # noqa: E402
from converters.gguf.architectures import UnsupportedModel, supported_names  # noqa: E402
from tests.conftest import ServerProcess, free_env  # noqa: E402
from tests.llm.gguf_fixtures import (  # noqa: E402
    DENSE_KINDS,
    T5_KINDS,
    T5_WHITESPACE,
    build_hf_t5,
    build_sentence_t5,
    build_unigram_tokenizer,
    whitespace_charsmap,
)

# llama.cpp's own C++ server (same factory, binary lookup and LLAMA_SERVER_BIN as the decoder cross-check)
from tests.llm.test_gguf_llama_server import _post, llama_server, llama_server_binary  # noqa: E402, F401

TEXTS = (
    "Small language models answer questions on edge boxes.",
    "for i in range(10):\n    print(i * i)  # 2024 squares",
    "  The river   was high in the morning after the rain.  ",
    "Indented:\n    text, tabs\tand Unicode: caf\u00e9 \u2192 na\u00efve!",
    "Return the value of the named attribute of an object.",
    "a",
)
# Q4_K_M: a loose floor only (64-wide rows make llama.cpp fall back to Q5_0/Q8_0 for most tensors)
MIN_COSINE = {"f16": 0.999, "q8_0": 0.99, "q4_k_m": 0.95}


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Factory: the tiny HF folder of a ``T5_KINDS`` entry, built once per module."""
    tokenizer = build_unigram_tokenizer(tmp_path_factory.mktemp("tok-unigram"))
    made: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in made:
            made[kind] = build_hf_t5(kind, tmp_path_factory.mktemp(f"hf-{kind}"), tokenizer)
        return made[kind]

    return make


@pytest.fixture(scope="module")
def sentence_t5_dir(tmp_path_factory: pytest.TempPathFactory, t5_dir: Callable[[str], Path]) -> Callable[[str], Path]:
    """Factory: a sentence-transformers sentence-t5 / GTR style folder per ``DENSE_KINDS`` entry."""
    pytest.importorskip("sentence_transformers")
    made: dict[str, Path] = {}

    def make(dense: str) -> Path:
        if dense not in made:
            made[dense] = build_sentence_t5(tmp_path_factory.mktemp(f"st5-{dense}"), t5_dir("t5-gated-gelu"), dense)
        return made[dense]

    return make


def sentence_transformers_embeddings(src: Path, texts: tuple[str, ...]) -> np.ndarray:
    """What sentence-transformers itself gives for the folder: encoder, pooling, Dense, Normalize."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(src), device="cpu")
    return np.asarray(model.encode(list(texts), normalize_embeddings=True), dtype=np.float32)


def torch_embeddings(src: Path, texts: tuple[str, ...]) -> tuple[np.ndarray, list[list[int]]]:
    """transformers' T5 encoder, mean-pooled over the attention mask and L2-normalised, plus the token ids."""
    import torch
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(src)
    model = T5EncoderModel.from_pretrained(src, dtype=torch.float32).eval()
    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    ids = [list(tokenizer(text)["input_ids"]) for text in texts]
    return torch.nn.functional.normalize(pooled, dim=1).numpy(), ids


def backend_embeddings(folder: Path, texts: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Our llama.cpp backend on the converted folder: every text in one call, and each text alone."""
    from edge_runner.backends.base import LoadOptions
    from edge_runner.backends.llama_cpp.llama_cpp_backend import LlamaCppBackend
    from edge_runner.core.manifest import read_manifest

    backend = LlamaCppBackend(read_manifest(folder), folder, LoadOptions(threads=2, options={"max_seq_len": 256}))
    backend.load()
    try:
        together = backend.embed(list(texts))
        alone = np.concatenate([backend.embed([text]) for text in texts])
    finally:
        backend.unload()
    return together, alone


def llama_cpp_ids(gguf_file: Path, texts: tuple[str, ...]) -> list[list[int]]:
    """llama.cpp's tokenizer on the GGUF file, special tokens added as the model says (``</s>`` for T5)."""
    from llama_cpp import Llama

    llm = Llama(str(gguf_file), vocab_only=True, verbose=False)
    try:
        return [llm.tokenize(text.encode("utf-8"), add_bos=True) for text in texts]
    finally:
        llm.close()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)))


@pytest.mark.slow
@pytest.mark.parametrize("quantize", list(MIN_COSINE))
@pytest.mark.parametrize("kind", list(T5_KINDS))
def test_t5_encoder_embeddings_match_torch(
    kind: str, quantize: str, t5_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    src = t5_dir(kind)
    manifest = convert_to_gguf(src, tmp_path, quantize=quantize, name=f"tiny-{kind}", check_parity=False, threads=2)
    gguf_file = tmp_path / "model.gguf"
    reference, hf_ids = torch_embeddings(src, TEXTS)
    # the check can tell texts apart: the reference embeddings of different texts are far from each other
    off_diagonal = (reference @ reference.T)[~np.eye(len(TEXTS), dtype=bool)]
    assert off_diagonal.max() < 0.95
    assert llama_cpp_ids(gguf_file, TEXTS) == hf_ids
    together, alone = backend_embeddings(tmp_path, TEXTS)
    together_cos, alone_cos = cosines(together, reference), cosines(alone, reference)
    print(
        f"\n{kind} {quantize}: min cos together {together_cos.min():.6f}, alone {alone_cos.min():.6f}, "
        f"tokens {sum(map(len, hf_ids))} equal"
    )  # the figures docs/gguf-architectures.md quotes
    assert together.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert together_cos.min() >= MIN_COSINE[quantize], together_cos
    assert alone_cos.min() >= MIN_COSINE[quantize], alone_cos
    reader = gguf.GGUFReader(str(gguf_file))
    fields = {name: reader.fields[name].contents() for name in reader.fields if not name.startswith("GGUF.")}
    assert fields["general.architecture"] == "t5encoder"
    assert fields["tokenizer.ggml.model"] == "t5"
    # the normalizer travels as is: llama.cpp folds the tabs and newlines of TEXTS with it
    assert bytes(fields["tokenizer.ggml.precompiled_charsmap"]) == whitespace_charsmap(T5_WHITESPACE)
    assert fields["tokenizer.ggml.remove_extra_whitespaces"] is True
    assert fields["t5encoder.pooling_type"] == int(gguf.PoolingType.MEAN)
    assert fields["t5encoder.attention.relative_buckets_count"] == 32
    names = {t.name for t in reader.tensors}
    assert ("enc.blk.0.ffn_gate.weight" in names) == (kind != "t5-relu")
    assert not any(name.startswith("dec.") for name in names)  # the decoder of T5ForConditionalGeneration
    assert manifest.task == "feature-extraction" and manifest.extra["architecture"] == "t5encoder"
    if quantize == "q8_0":
        assert gguf.GGMLQuantizationType.Q8_0 in {t.tensor_type for t in reader.tensors}


@pytest.mark.slow
def test_converter_parity_report_runs_for_t5(t5_dir: Callable[[str], Path], tmp_path: Path) -> None:
    """The converter's own parity stage runs T5 (transformers' T5EncoderModel, not the encoder-decoder)."""
    from edge_runner.core.parity import ParityReport

    manifest = convert_to_gguf(t5_dir("t5-seq2seq"), tmp_path, quantize="q8_0", allow_drift=True, threads=2)
    report = ParityReport.from_json(manifest.parity)
    assert (report.kind, report.measured_with, report.primary_output) == ("encoder", "llama.cpp", "embedding")
    assert report.details["pooling"] == "mean"
    assert report.details["min_cosine"] >= MIN_COSINE["q8_0"]


@pytest.mark.slow
def test_sentence_t5_embeddings_served_over_http(
    sentence_t5_dir: Callable[[str], Path], tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    """``edge-runner convert --to gguf --register`` then ``serve``: /v1/embeddings answers with the embeddings
    sentence-transformers gives for a sentence-t5 style folder (its 2_Dense travels and is applied)."""
    src = sentence_t5_dir("identity")
    env = {**free_env(tmp_path), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "t5-q8"
    command = [sys.executable, "-m", "edge_runner", "convert", str(src), "--to", "gguf", "--quantize", "q8_0"]
    converted = subprocess.run(
        [*command, "--out", str(out), "--register", "t5emb"], env=env, capture_output=True, text=True, timeout=600
    )
    assert converted.returncode == 0, converted.stderr[-2000:]
    server = start_server("--models", "t5emb", "--no-load-defaults", env=env)
    body = json.dumps({"model": "t5emb", "input": list(TEXTS[:3])}).encode()
    import urllib.request

    request = urllib.request.Request(server.url + "/v1/embeddings", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        data: dict[str, Any] = json.loads(response.read())
    got = np.array([row["embedding"] for row in sorted(data["data"], key=lambda r: r["index"])], dtype=np.float32)
    reference = sentence_transformers_embeddings(src, TEXTS[:3])
    _, hf_ids = torch_embeddings(src, TEXTS[:3])
    assert data["usage"]["prompt_tokens"] == sum(map(len, hf_ids))
    print(f"\nserved sentence-t5 q8_0: min cos {cosines(got, reference).min():.6f}")
    assert cosines(got, reference).min() >= MIN_COSINE["q8_0"], cosines(got, reference)


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["f16", "q8_0"])
def test_llama_server_t5_embeddings_equal_our_backend(
    quantize: str,
    t5_dir: Callable[[str], Path],
    llama_server: Callable[..., str],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """llama.cpp's C++ llama-server loads the file as an embedding model and agrees with our backend."""
    convert_to_gguf(t5_dir("t5-gated-gelu"), tmp_path, quantize=quantize, name="t5", check_parity=False, threads=2)
    url = llama_server(tmp_path / "model.gguf", "--embedding")
    data = _post(url + "/v1/embeddings", {"input": list(TEXTS)})["data"]
    assert isinstance(data, list)
    theirs = np.array([row["embedding"] for row in sorted(data, key=lambda row: row["index"])], dtype=np.float32)
    ours, _ = backend_embeddings(tmp_path, TEXTS)
    agreement = cosines(ours, theirs)
    print(f"\nllama-server t5 {quantize}: min cos vs our backend {agreement.min():.6f}")
    assert agreement.min() >= 0.999, agreement


def _write_config(folder: Path, **overrides: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["T5EncoderModel"], "model_type": "t5", "d_model": 64, "d_kv": 16, "d_ff": 128}
    config.update({"num_layers": 2, "num_heads": 4, "vocab_size": 512, **overrides})
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"feed_forward_proj": "gated-silu"}, "feed_forward_proj 'gated-silu' is not supported"),
        ({"relative_attention_max_distance": 64}, "relative_attention_max_distance 64 is not supported"),
    ],
)
def test_t5_layouts_llama_cpp_cannot_run_are_refused(overrides: dict[str, Any], message: str, tmp_path: Path) -> None:
    src = _write_config(tmp_path / "src", **overrides)
    with pytest.raises(UnsupportedModel, match=message):
        convert_to_gguf(src, tmp_path / "out", quantize="f16", check_parity=False)


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["f16", "q8_0"])
@pytest.mark.parametrize("dense", list(DENSE_KINDS))
def test_sentence_t5_dense_is_applied_by_our_backend(
    dense: str, quantize: str, sentence_t5_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    """sentence-t5 / GTR's 2_Dense (no place in llama.cpp's graph) travels beside the GGUF; our backend's
    embeddings equal sentence-transformers' own ``encode`` on the folder."""
    src = sentence_t5_dir(dense)
    manifest = convert_to_gguf(src, tmp_path, quantize=quantize, name="st5", check_parity=False, threads=2)
    assert manifest.extra["pooled_dense"]["layers"] == [
        {"name": "2_Dense", "activation": "identity" if dense == "identity" else "tanh", "bias": dense != "identity"}
    ]
    assert {entry.path for entry in manifest.files} == {"model.gguf", "pooled_dense.npz"}
    reference = sentence_transformers_embeddings(src, TEXTS)
    without_dense, _ = torch_embeddings(src, TEXTS)
    # the projection matters: the pooled encoder output alone is far from sentence-transformers' embedding
    assert cosines(without_dense, reference).max() < 0.9
    together, alone = backend_embeddings(tmp_path, TEXTS)
    got = min(cosines(together, reference).min(), cosines(alone, reference).min())
    print(f"\nsentence-t5 {dense} {quantize}: min cos vs sentence-transformers {got:.6f}")
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert got >= MIN_COSINE[quantize]


def _write_modules(src: Path, dense_activation: str) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    (src / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (src / "2_Dense").mkdir()
    dense = {"in_features": 64, "out_features": 64, "bias": True, "activation_function": dense_activation}
    (src / "2_Dense" / "config.json").write_text(json.dumps(dense), encoding="utf-8")


def test_sentence_transformers_layers_llama_cpp_cannot_run_are_refused(tmp_path: Path) -> None:
    """A Dense activation the backend does not apply, or a pooling llama.cpp lacks, stops the conversion."""
    src = _write_config(tmp_path / "dense", feed_forward_proj="gated-gelu")
    _write_modules(src, "torch.nn.modules.activation.ReLU")
    with pytest.raises(UnsupportedModel, match="Dense activation torch.nn.modules.activation.ReLU"):
        convert_to_gguf(src, tmp_path / "out-dense", quantize="f16", check_parity=False)
    src = _write_config(tmp_path / "pool", feed_forward_proj="gated-gelu")
    (src / "1_Pooling").mkdir()
    (src / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "max"}), encoding="utf-8")
    with pytest.raises(UnsupportedModel, match="pooling_mode 'max' not supported"):
        convert_to_gguf(src, tmp_path / "out-pool", quantize="f16", check_parity=False)
    assert {"T5EncoderModel", "T5ForConditionalGeneration"} <= set(supported_names().split(", "))
