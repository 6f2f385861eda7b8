"""GGUF conversion of every supported decoder family and tokenizer kind, checked against HF torch here.

Each case is a tiny random HF folder (tests/llm/gguf_fixtures.py) converted to F16, Q8_0 and Q4_K_M.
The test runs the written file in llama.cpp itself (never the converter's own parity flag) and compares
with transformers on the same token ids: llama.cpp's tokenizer == HF's, cosine >= 0.999 of the
last-position logits of every prompt (F16, Q8_0), top-1 agreement over all positions, and the same
greedy next token at the end of every prompt that is not a near-tie (see LIMITS). Q4_K_M only gets a
loose floor: 64-wide rows make llama.cpp fall back to Q5_0/Q8_0 for most tensors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

for _runtime in ("llama_cpp", "transformers"):
    pytest.importorskip(_runtime)
gguf = pytest.importorskip("gguf")

from converters.gguf import convert_to_gguf  # noqa: E402
from converters.gguf.architectures import UnsupportedModel  # noqa: E402
from tests.llm.gguf_fixtures import CASES  # noqa: E402

CHECK_TEXTS = (
    "Small language models answer questions on edge boxes.",
    "for i in range(10):\n    print(i * i)  # 2024 squares",
    "The river was high in the morning after the rain.",
    "Return the value of the named attribute of an object.",
    "Indented:\n    text, tabs\tand Unicode: caf\u00e9 \u2192 na\u00efve!",
    "The with statement wraps the execution of a block.",
)
# per quantization: min cosine of the last-position logits, min top-1 agreement over all positions,
# and the tie margin: where HF's top-2 logits differ by less than this share of the logits' std, the
# greedy pick is a coin toss for that format (random tiny models have flat logits; Q8_0 moves single
# logits by ~0.05 std on them), so that prompt's last-position top-1 is not compared
LIMITS = {"f16": (0.999, 0.9, 0.02), "q8_0": (0.999, 0.9, 0.1), "q4_k_m": (0.9, 0.6, 0.0)}


def compare_with_torch(src: Path, gguf_file: Path, tie_margin: float = 0.0) -> dict[str, float]:
    """llama.cpp on ``gguf_file`` against HF torch on ``src``: the metrics the tests assert on."""
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    llm = Llama(str(gguf_file), n_ctx=256, logits_all=True, n_threads=2, verbose=False)
    top1, last_cos, last_same, tokens_same, ties = [], [], [], [], 0
    for text in CHECK_TEXTS:
        ids = list(tokenizer(text)["input_ids"])
        plain = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        tokens_same.append(llm.tokenize(text.encode(), add_bos=False, special=True) == plain)
        with torch.no_grad():
            hf = model(torch.tensor([ids])).logits[0].numpy()
        llm.reset()
        llm.eval(ids)
        gg = np.array(llm.scores[: len(ids)], dtype=np.float32)[:, : hf.shape[-1]]
        top1.extend(hf.argmax(-1) == gg.argmax(-1))
        top2 = np.sort(hf[-1])[-2:]
        if top2[1] - top2[0] < tie_margin * hf[-1].std():
            ties += 1
        else:
            last_same.append(hf[-1].argmax() == gg[-1].argmax())
        last_cos.append(float(hf[-1] @ gg[-1] / (np.linalg.norm(hf[-1]) * np.linalg.norm(gg[-1]))))
    del llm
    return {
        "top1_all_positions": float(np.mean(top1)),
        "last_top1_equal": float(np.mean(last_same)) if last_same else 0.0,
        "min_last_cosine": min(last_cos),
        "tokenizer_agreement": float(np.mean(tokens_same)),
        "last_top1_ties_skipped": ties,
    }


@pytest.mark.slow
@pytest.mark.parametrize("quantize", list(LIMITS))
@pytest.mark.parametrize("case", list(CASES))
def test_architecture_matches_torch(case: str, quantize: str, case_dir: Callable[[str], Path], tmp_path: Path) -> None:
    src = case_dir(case)
    _, _, arch, tokenizer_model, pre = CASES[case]
    manifest = convert_to_gguf(src, tmp_path, quantize=quantize, name=f"tiny-{case}", check_parity=False, threads=2)
    gguf_file = tmp_path / "model.gguf"
    min_cosine, min_top1, tie_margin = LIMITS[quantize]
    metrics = compare_with_torch(src, gguf_file, tie_margin)
    print(f"\n{case} {quantize}: {json.dumps(metrics)}")  # the figures docs/gguf-architectures.md quotes
    assert metrics["tokenizer_agreement"] == 1.0
    assert metrics["min_last_cosine"] >= min_cosine
    assert metrics["top1_all_positions"] >= min_top1
    if quantize != "q4_k_m":  # greedy next token at the end of each prompt (ties aside)
        assert metrics["last_top1_equal"] == 1.0 and metrics["last_top1_ties_skipped"] < len(CHECK_TEXTS)
    reader = gguf.GGUFReader(str(gguf_file))
    assert reader.fields["general.architecture"].contents() == arch
    assert reader.fields["tokenizer.ggml.model"].contents() == tokenizer_model
    if pre is not None:
        assert reader.fields["tokenizer.ggml.pre"].contents() == pre
    assert manifest.extra["architecture"] == arch
    if quantize == "q8_0":
        assert gguf.GGMLQuantizationType.Q8_0 in {t.tensor_type for t in reader.tensors}


def test_gemma_space_prefix_follows_the_tokenizer(case_dir: Callable[[str], Path], tmp_path: Path) -> None:
    """Gemma's SentencePiece adds no dummy prefix, Llama-2's does: the GGUF flag must say so."""
    for case, expected in (("gemma", False), ("llama2-spm", True)):
        convert_to_gguf(case_dir(case), tmp_path / case, quantize="f16", check_parity=False)
        reader = gguf.GGUFReader(str(tmp_path / case / "model.gguf"))
        assert reader.fields["tokenizer.ggml.add_space_prefix"].contents() is expected


def test_unsupported_architecture_names_what_is_supported(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["FalconForCausalLM"]}))
    with pytest.raises(UnsupportedModel, match="FalconForCausalLM.*not supported.*GemmaForCausalLM") as caught:
        convert_to_gguf(tmp_path, tmp_path / "out")
    for name in ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM", "Phi3ForCausalLM", "GPT2LMHeadModel", "BertModel"):
        assert name in str(caught.value)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["gemma3-vl", "gpt2", "phi3-longrope", "starcoder2", "qwen3-yarn"])
def test_converter_parity_report_runs_for_new_families(
    case: str, case_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    """The converter's own parity stage handles these sources (its figures, not its verdict, are checked)."""
    from edge_runner.core.parity import ParityReport

    manifest = convert_to_gguf(case_dir(case), tmp_path, quantize="q8_0", allow_drift=True, threads=2)
    report = ParityReport.from_json(manifest.parity)
    assert (report.kind, report.measured_with, report.primary_output) == ("decoder", "llama.cpp", "logits")
    assert report.details["tokenizer_agreement"] == 1.0
    assert report.samples > 0
