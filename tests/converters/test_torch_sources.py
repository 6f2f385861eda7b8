"""PyTorch sources (TorchScript, torch.export, module.py + state dict) to ONNX and OpenVINO IR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.converters.checks import assert_parity

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

MLP_INPUT = ("--example-input", "x:float32:1x16")
RNG = np.random.default_rng(11)
MLP_X = RNG.standard_normal((8, 16)).astype(np.float32)
CNN_X = RNG.standard_normal((4, 3, 16, 16)).astype(np.float32)
ENCODER_IDS = RNG.integers(0, 50, size=(6, 12)).astype(np.int64)


def _torch(model, *args: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(*(torch.from_numpy(a) for a in args)).numpy()


def mlp_expected(torch_zoo, x: np.ndarray = MLP_X) -> np.ndarray:
    """The source MLP in torch (the TorchScript trace shares TinyMLP's state dict)."""
    import torch

    return _torch(torch.jit.load(str(torch_zoo["mlp_ts"])), x)


def cnn_expected(torch_zoo) -> np.ndarray:
    import torch

    return _torch(torch.export.load(str(torch_zoo["cnn_pt2"])).module(), CNN_X)


def encoder_expected(torch_zoo) -> np.ndarray:
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("tiny_models_check", torch_zoo["module"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TinyEncoder().eval()
    model.load_state_dict(torch.load(str(torch_zoo["encoder_state"]), weights_only=True))
    return _torch(model, ENCODER_IDS)


def test_torchscript_mlp_to_onnx_has_dynamic_batch(convert, torch_zoo):
    import onnxruntime as ort

    result = convert(torch_zoo["mlp_ts"], "--to", "onnx", *MLP_INPUT)
    assert_parity(result, mlp_expected(torch_zoo), {"x": MLP_X})
    assert result.parity["measured_with"].startswith("onnxruntime")
    manifest = result.manifest
    assert manifest["format"] == "onnx" and manifest["files"][0]["path"] == "model.onnx"
    assert manifest["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}]
    assert manifest["outputs"][0]["datatype"] == "FP32"
    session = ort.InferenceSession(str(result.out / "model.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": np.zeros((7, 16), np.float32)})[0]
    assert out.shape == (7, 5)
    assert "parity: PASS" in result.stdout


def test_module_class_with_state_dict(convert, torch_zoo):
    src = f"{torch_zoo['module']}:TinyMLP"
    result = convert(src, "--to", "onnx", "--state-dict", str(torch_zoo["mlp_state"]), *MLP_INPUT)
    assert_parity(result, mlp_expected(torch_zoo), {"x": MLP_X})
    assert result.manifest["source"]["class"] == "TinyMLP"


def test_exported_program_cnn_to_onnx_and_openvino(convert, torch_zoo):
    expected = cnn_expected(torch_zoo)
    assert_parity(convert(torch_zoo["cnn_pt2"], "--to", "onnx"), expected, CNN_X)
    ov_result = convert(torch_zoo["cnn_pt2"], "--to", "openvino")
    assert_parity(ov_result, expected, CNN_X)
    assert ov_result.parity["measured_with"].startswith("openvino")
    assert {f["path"] for f in ov_result.manifest["files"]} == {"model.xml", "model.bin"}


def test_transformer_encoder_to_onnx_and_openvino(convert, torch_zoo):
    src = f"{torch_zoo['module']}:TinyEncoder"
    args = (
        "--state-dict",
        str(torch_zoo["encoder_state"]),
        "--example-input",
        "ids:int64:1x12",
        "--task",
        "text-classification",
    )
    expected = encoder_expected(torch_zoo)
    assert_parity(convert(src, "--to", "onnx", *args), expected, {"ids": ENCODER_IDS}, classifier=True)
    assert_parity(convert(src, "--to", "openvino", *args), expected, {"ids": ENCODER_IDS}, classifier=True)


def test_unexportable_scripted_encoder_is_a_one_line_error(convert, torch_zoo):
    result = convert(torch_zoo["encoder_scripted"], "--to", "onnx", "--example-input", "ids:int64:1x12")
    assert result.rc == 2
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "could not export" in lines[0] and "fix:" in lines[0]
    assert not result.out.exists()
    assert not list(result.out.parent.glob(f".{result.out.name}*"))


def test_fp16_and_dynamic_int8(convert, torch_zoo):
    src = f"{torch_zoo['module']}:TinyMLP"
    common = ("--state-dict", str(torch_zoo["mlp_state"]), *MLP_INPUT)
    expected = mlp_expected(torch_zoo)
    fp16 = convert(src, "--to", "onnx", "--quantize", "fp16", *common)
    assert_parity(fp16, expected, {"x": MLP_X}, "fp16")
    assert fp16.manifest["quantization"] == "fp16"
    int8 = convert(src, "--to", "onnx", "--quantize", "int8", *common)
    assert_parity(int8, expected, {"x": MLP_X}, "int8")
    assert int8.manifest["extra"]["quantization_detail"]["flavour"] == "dynamic"


def _calibration(tmp_path: Path) -> Path:
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.random.default_rng(3).standard_normal((16, 16)).astype(np.float32))
    return path


def test_static_int8_with_calibration_onnx_and_openvino(convert, torch_zoo, tmp_path):
    src = f"{torch_zoo['module']}:TinyMLP"
    calib = str(_calibration(tmp_path))
    common = ("--state-dict", str(torch_zoo["mlp_state"]), *MLP_INPUT, "--quantize", "int8", "--calibration", calib)
    expected = mlp_expected(torch_zoo)
    onnx_result = convert(src, "--to", "onnx", *common)
    assert_parity(onnx_result, expected, {"x": MLP_X}, "int8")
    assert onnx_result.manifest["extra"]["quantization_detail"]["flavour"] == "static"
    assert onnx_result.parity["samples"] == 4
    ov_result = convert(src, "--to", "openvino", *common)
    assert_parity(ov_result, expected, {"x": MLP_X}, "int8")
    assert ov_result.manifest["extra"]["quantization_detail"]["flavour"] == "full"


def test_static_int8_without_calibration_is_refused(convert, torch_zoo):
    result = convert(torch_zoo["mlp_ts"], "--to", "onnx", "--quantize", "int8-static", *MLP_INPUT)
    assert result.rc == 2
    assert "calibration" in result.stderr and "fix:" in result.stderr
    assert not result.out.exists()


def test_profile_preset_falls_back_without_calibration(convert, torch_zoo):
    result = convert(torch_zoo["mlp_ts"], "--to", "onnx", "--quantize", "int8", "--profile", "avx512-vnni", *MLP_INPUT)
    assert_parity(result, mlp_expected(torch_zoo), {"x": MLP_X}, "int8")
    assert result.manifest["extra"]["quantization_detail"] == {
        "flavour": "dynamic",
        "preset": "avx512-vnni",
        "opset": result.manifest["extra"]["quantization_detail"]["opset"],
        "settings": {"per_channel": True},
    }
    assert "prefers static" in result.stderr


def test_onnx_file_source_to_openvino_and_int8(convert, torch_zoo):
    first = convert(torch_zoo["cnn_pt2"], "--to", "onnx")
    assert first.rc == 0
    onnx_file = first.out / "model.onnx"
    expected = cnn_expected(torch_zoo)  # the ONNX file was exported from this program
    assert_parity(convert(onnx_file, "--to", "openvino"), expected, CNN_X)
    assert_parity(convert(onnx_file, "--to", "onnx", "--quantize", "int8-dynamic"), expected, CNN_X, "int8")
