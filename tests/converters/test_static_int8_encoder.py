"""Static INT8 of text encoders, calibrated from texts: accuracy against torch and batch independence.

Dynamic INT8 picks activation ranges per call, so a text's embedding changes with what it is batched with;
static INT8 fixes them from calibration texts. Each test converts with ``edge-runner convert``, then runs the
written ``model.onnx`` with ONNX Runtime itself and compares with the torch model run in the test (mean
pooling over the attention mask, as sentence-transformers does): cosine against the FP32 source, and each
text embedded alone against the same text inside a padded batch with longer texts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

#: the batch: short and long texts, so every short one is padded; none of them is a calibration text
TEXTS = [
    "A man is eating food.",
    "Edge servers answer requests close to the user, so the round trip stays short even on slow links.",
    "Hi.",
    "Quantization makes transformer encoders smaller and faster on CPUs, but can it keep their accuracy?",
    "The committee postponed the vote until the budget figures were audited by an independent firm.",
    "cosine similarity",
]
CALIBRATION = [
    "the quick brown fox jumps over the lazy dog",
    "edge devices run small models close to where the data is",
    "how many tokens does this sentence have?",
    "it rained all night, so the river was high in the morning.",
    "please summarise the meeting notes before friday",
    "yes",
    "a conversion stage turns training checkpoints into fast runtime artifacts, checked against the source",
    "stock markets fell sharply after the central bank raised interest rates",
]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT encoder (hidden 64) with a WordPiece tokenizer, saved as a Hugging Face folder."""
    import torch
    import transformers as tf

    from tests.converters.zoo_torch import write_wordpiece

    path = tmp_path_factory.mktemp("tiny_bert_encoder")
    write_wordpiece(path)
    vocab = len((path / "vocab.txt").read_text(encoding="utf-8").splitlines())
    torch.manual_seed(0)
    config = tf.BertConfig(
        vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    )
    tf.BertModel(config).eval().save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calibration") / "texts.txt"
    path.write_text("\n".join(CALIBRATION) + "\n\n", encoding="utf-8")
    return path


def _encode(model_dir: Path, texts: list[str]) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


def _torch_embeddings(model_dir: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    ids, mask = torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).float()
    return ((hidden * weights).sum(1) / weights.sum(1)).numpy()


def _ort_embeddings(onnx_file: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["sentence_embedding"], feeds)[0])


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def _measure(model_dir: Path, onnx_file: Path) -> dict[str, Any]:
    """Cosine vs torch (batch) and alone-vs-batch cosine per text, both computed here."""
    batch = _encode(model_dir, TEXTS)
    assert (batch["attention_mask"] == 0).any(), "the batch must pad its short texts"
    got = _ort_embeddings(onnx_file, batch)
    alone = np.concatenate([_ort_embeddings(onnx_file, _encode(model_dir, [t])) for t in TEXTS])
    return {
        "vs_torch": _cos(_torch_embeddings(model_dir, batch), got),
        "alone_vs_batch": _cos(alone, got),
        "size": onnx_file.stat().st_size,
    }


def _check_report(parity: dict[str, Any], artifact: str, other: str | None) -> None:
    """The parity report holds both figures for the FP32 source, the artifact and the compared flavour."""
    consistency = parity["details"]["batch_consistency"]
    assert consistency["output"] == "sentence_embedding"
    assert consistency["texts"] >= 2 and consistency["padded_texts"] >= 1
    names = {"fp32-source", artifact} | ({other} if other else set())
    assert set(consistency["min_cosine"]) == names
    assert consistency["min_cosine"]["fp32-source"] > 0.99999
    per_text = parity["details"]["cosine_vs_source"]
    assert set(per_text) == names - {"fp32-source"}
    assert len(per_text[artifact]["per_text"]) == consistency["texts"]
    assert per_text[artifact]["min"] == min(per_text[artifact]["per_text"])


def test_tiny_bert_static_int8_from_texts(convert: Any, tiny_bert: Path, texts_file: Path) -> None:
    static = convert(tiny_bert, "--to", "onnx", "--quantize", "int8-static", "--calibration-texts", str(texts_file))
    assert static.rc == 0, static.stderr
    dynamic = convert(tiny_bert, "--to", "onnx", "--quantize", "int8-dynamic")
    assert dynamic.rc == 0, dynamic.stderr
    fp32 = convert(tiny_bert, "--to", "onnx")
    assert fp32.rc == 0, fp32.stderr

    s, d, f = (_measure(tiny_bert, r.out / "model.onnx") for r in (static, dynamic, fp32))
    # FP32 reference points: the export itself is batch independent and matches torch
    assert f["vs_torch"].min() > 0.99999 and f["alone_vs_batch"].min() > 0.99999
    # static INT8 against torch: min 0.99993 measured on these texts (dynamic 0.99997); 0.9995 leaves room
    # for other CPUs' kernels while staying 20x tighter than the 0.99 INT8 parity threshold
    assert s["vs_torch"].min() >= 0.9995, s["vs_torch"]
    # fixed activation ranges: a text alone and in a padded batch agree to float rounding (1 - cos ~ 4e-15) ...
    assert s["alone_vs_batch"].min() > 0.99999, s["alone_vs_batch"]
    # ... which dynamic INT8 does not: its ranges follow the batch (1 - cos ~ 8e-8 on this small random model,
    # 0.01-0.02 on the trained MiniLM below); static is closer by orders of magnitude, not by rounding
    s_gap, d_gap = 1 - s["alone_vs_batch"].min(), 1 - d["alone_vs_batch"].min()
    assert s_gap * 100 < d_gap, (s["alone_vs_batch"], d["alone_vs_batch"])
    assert s["size"] < f["size"]

    assert static.manifest["quantization"] == "int8"
    _check_report(static.parity, "int8-static", "int8-dynamic")
    _check_report(dynamic.parity, "int8-dynamic", "int8-static")
    _check_report(fp32.parity, "none", None)
    # the report's figures agree with what this test measured on the same kind of batch
    report = static.parity["details"]["batch_consistency"]["min_cosine"]
    assert report["int8-static"] > 0.99999 and report["int8-static"] > report["int8-dynamic"]
    assert "one text alone vs in a padded batch" in static.stdout


def test_calibration_texts_refusals(convert: Any, tiny_bert: Path, tmp_path: Path, texts_file: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    result = convert(tiny_bert, "--to", "onnx", "--quantize", "int8-static", "--calibration-texts", str(empty))
    assert result.rc == 2 and "holds no text" in result.stderr
    result = convert(tiny_bert, "--to", "onnx", "--quantize", "int8", "--calibration-texts", str(tmp_path / "no.txt"))
    assert result.rc == 2 and "is not a file" in result.stderr
    samples = tmp_path / "s.npz"
    np.savez(samples, input_ids=np.ones((2, 4), np.int64), attention_mask=np.ones((2, 4), np.int64))
    both = ("--calibration", str(samples), "--calibration-texts", str(texts_file))
    result = convert(tiny_bert, "--to", "onnx", "--quantize", "int8", *both)
    assert result.rc == 2 and "both given" in result.stderr


def test_calibration_texts_need_a_text_model(convert: Any, torch_zoo: dict[str, Path], texts_file: Path) -> None:
    result = convert(
        torch_zoo["cnn_pt2"], "--to", "onnx", "--quantize", "int8-static", "--calibration-texts", str(texts_file)
    )
    assert result.rc == 2 and "needs a text model with a tokenizer" in result.stderr


@pytest.mark.slow
def test_tiny_bert_openvino_full_int8_from_texts(convert: Any, tiny_bert: Path, texts_file: Path) -> None:
    import openvino as ov

    result = convert(tiny_bert, "--to", "openvino", "--quantize", "int8-static", "--calibration-texts", str(texts_file))
    assert result.rc == 0, result.stderr
    compiled = ov.Core().compile_model(str(result.out / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(compiled(feeds)[compiled.output("sentence_embedding")])

    batch = _encode(tiny_bert, TEXTS)
    got = run(batch)
    alone = np.concatenate([run(_encode(tiny_bert, [t])) for t in TEXTS])
    assert _cos(_torch_embeddings(tiny_bert, batch), got).min() >= 0.999
    assert _cos(alone, got).min() > 0.9999
    _check_report(result.parity, "int8-full", None)


@pytest.mark.slow
def test_minilm_static_int8_keeps_a_text_independent_of_its_batch(convert: Any, minilm_path: Path) -> None:
    static = convert(minilm_path, "--to", "onnx", "--quantize", "int8-static")  # the built-in texts
    assert static.rc == 0, static.stderr
    assert "calibrated on 32 built-in texts" in static.stderr
    dynamic = convert(minilm_path, "--to", "onnx", "--quantize", "int8-dynamic")
    assert dynamic.rc == 0, dynamic.stderr
    s, d = (_measure(minilm_path, r.out / "model.onnx") for r in (static, dynamic))
    # measured on these 6 texts against torch: static min 0.9802 / mean 0.9891, dynamic min 0.9839 / mean
    # 0.9914 (docs/converters.md); the bounds sit 0.005 below static's figures, so a regression in the choice
    # of float ops (quantizing the FFN down-projections gives min 0.89) fails while kernel noise does not
    assert s["vs_torch"].min() >= 0.975, s["vs_torch"]
    assert s["vs_torch"].mean() >= 0.984, s["vs_torch"]
    assert s["alone_vs_batch"].min() > 0.99999, s["alone_vs_batch"]
    # the difference the issue reported: dynamic measured 0.9783 alone vs in the batch
    assert d["alone_vs_batch"].min() < 0.995, d["alone_vs_batch"]
    assert s["size"] < 0.4 * (90 * 10**6)
    _check_report(static.parity, "int8-static", "int8-dynamic")
    _check_report(dynamic.parity, "int8-dynamic", "int8-static")
