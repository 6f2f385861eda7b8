"""The convert CLI: help, bad input (exit 2, one line, nothing left behind), JSON output, --register."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converters.cli import build_parser, main

pytest.importorskip("torch")

DIGITS_ONNX = Path(__file__).resolve().parents[2] / "edge_runner" / "defaults" / "digits" / "1" / "model.onnx"


def _leftovers(out: Path) -> list[Path]:
    return [p for p in out.parent.iterdir() if p.name.startswith((out.name, f".{out.name}"))]


def test_cli_module_imports_only_stdlib():
    code = (
        "import sys, converters.cli; heavy = {'torch', 'tensorflow', 'onnxruntime', 'openvino', 'onnx', 'numpy'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_explains_every_flag(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag in text
    assert "exit codes" in text


def test_unknown_flag_and_bad_target_exit_2():
    assert main(["x.pt", "--to", "onnx", "--bogus"]) == 2
    assert main(["x.pt", "--to", "caffe"]) == 2


@pytest.mark.parametrize(
    ("make", "args", "needle"),
    [
        (lambda d: d / "missing.pt", (), "does not exist"),
        (
            lambda d: _write(d / "corrupt.pt", b"\x00not a zip archive"),
            ("--example-input", "x:float32:1x4"),
            "TorchScript",
        ),
        (lambda d: _write(d / "corrupt.pt2", b"garbage"), (), "torch.export"),
        (lambda d: _write(d / "weights.bin", b"1234"), (), "unsupported file type"),
        (lambda d: _folder(d / "notes", "readme.txt"), (), "not a model"),
        (lambda d: _folder(d / "hf", "config.json", "{}"), (), "config"),
        (lambda d: _write(d / "broken.keras", b"PK\x03\x04broken"), (), "Keras"),
    ],
)
def test_bad_sources_exit_2_with_one_line_and_no_output(convert, tmp_path, make, args, needle):
    src = make(tmp_path)
    result = convert(src, "--to", "onnx", *args, out=tmp_path / "result")
    assert result.rc == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("edge-runner convert: error:")]
    assert len(errors) == 1 and needle in errors[0] and "fix:" in errors[0]
    assert _leftovers(tmp_path / "result") == []


def test_missing_example_input_exit_2(convert, torch_zoo, tmp_path):
    result = convert(torch_zoo["mlp_ts"], "--to", "onnx", out=tmp_path / "result")
    assert result.rc == 2 and "--example-input" in result.stderr
    assert _leftovers(tmp_path / "result") == []


def test_bad_example_input_syntax_exit_2(convert, torch_zoo):
    result = convert(torch_zoo["mlp_ts"], "--to", "onnx", "--example-input", "x:float99:1x16")
    assert result.rc == 2 and "unknown dtype" in result.stderr


def test_tflite_from_torch_is_refused(convert, torch_zoo):
    result = convert(torch_zoo["mlp_ts"], "--to", "tflite", "--example-input", "x:float32:1x16")
    assert result.rc == 2 and "TensorFlow" in result.stderr


def test_out_folder_that_is_not_ours_is_refused(convert, torch_zoo, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    result = convert(torch_zoo["mlp_ts"], "--to", "onnx", "--example-input", "x:float32:1x16", out=foreign)
    assert result.rc == 2 and (foreign / "keep.txt").read_text() == "mine"


def test_json_output_and_register(convert, torch_zoo, tmp_path):
    from edge_runner.core.manifest import read_manifest, verify_files

    repo = tmp_path / "repo"
    result = convert(
        torch_zoo["mlp_ts"],
        "--to",
        "onnx",
        "--example-input",
        "x:float32:1x16",
        "--json",
        "--register",
        "tiny-mlp",
        "--model-repository",
        str(repo),
    )
    assert result.rc == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "ok" and data["manifest"]["parity"]["passed"] is True
    assert data["registered"]["name"] == "tiny-mlp"
    folder = repo / "tiny-mlp" / str(data["registered"]["version"])
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    assert manifest.format == "onnx" and manifest.parity["mean_cosine"] >= 0.9999
    # independently of the converter's own report: the registered folder, served, against torch
    import torch

    from tests.converters.checks import assert_close, served_outputs

    x = np.random.default_rng(2).standard_normal((5, 16)).astype(np.float32)
    with torch.inference_mode():
        expected = torch.jit.load(str(torch_zoo["mlp_ts"]))(torch.from_numpy(x)).numpy()
    assert_close(expected, served_outputs(folder, {"x": x})["output"])


def test_parity_failure_exits_3_and_is_not_registered(convert, torch_zoo, tmp_path, monkeypatch):
    from edge_runner.core import parity

    monkeypatch.setitem(parity.THRESHOLDS, ("tensor", "none"), parity.Thresholds(1.01, 0.99))
    repo = tmp_path / "repo"
    result = convert(
        torch_zoo["mlp_ts"],
        "--to",
        "onnx",
        "--example-input",
        "x:float32:1x16",
        "--register",
        "drifty",
        "--model-repository",
        str(repo),
    )
    assert result.rc == 3 and "parity thresholds missed" in result.stderr
    assert result.manifest["parity"]["passed"] is False
    assert result.manifest["parity"]["failures"] == [f"mean_cosine {result.parity['mean_cosine']:.6f} < 1.01"]
    assert not (repo / "drifty").exists()
    kept = convert(torch_zoo["mlp_ts"], "--to", "onnx", "--example-input", "x:float32:1x16", "--allow-drift")
    assert kept.rc == 0 and kept.parity["passed"] is False


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _folder(path: Path, name: str, text: str = "hello") -> Path:
    path.mkdir()
    (path / name).write_text(text)
    return path


def test_gguf_handoff_rejects_non_hf_sources(convert, torch_zoo, tmp_path):
    result = convert(torch_zoo["mlp_ts"], "--to", "gguf", out=tmp_path / "g")
    assert result.rc == 2 and "Hugging Face" in result.stderr
    assert _leftovers(tmp_path / "g") == []


def test_gguf_quantization_for_other_targets_is_refused(tmp_path: Path) -> None:
    from converters.cli import main

    assert main([str(DIGITS_ONNX), "--to", "onnx", "--quantize", "q4_k_m", "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_runtime_failure_is_one_line_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from converters.cli import main

    code = main([str(DIGITS_ONNX), "--to", "onnx", "--quantize", "int8", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "already quantized" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.tmp-*"))
