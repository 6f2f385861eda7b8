"""Train and convert the embedded default model ``digits``.

A small CNN is trained with torch on scikit-learn's bundled 8x8 digits, exported to ONNX and
quantized to INT8 (static QDQ, per-channel), then written as ``<out>/digits/1``. Its twins are built
from the same weights: OpenVINO IR (``digits-openvino/1``, INT8 via NNCF) and TFLite
(``digits-tflite/1``, INT8 weights and activations, float I/O). Every manifest records the held-out
accuracy of its own artifact, measured with the runtime that serves it.

Usage: ``python scripts/train_digits.py [--out edge_runner/defaults] [--targets onnx,openvino,tflite]``.
Needs the ``convert`` extra (torch, onnx, onnxruntime, openvino, nncf, scikit-learn; tensorflow and
ai-edge-litert for the TFLite twin). Training is seeded, so reruns give the same weights.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runner.core.manifest import Manifest, TensorSpec, file_entry, write_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]

SEED = 0
HOLDOUT = {"test_size": 0.25, "random_state": 0, "stratify": True, "scale": "x/16"}
LABELS = [str(d) for d in range(10)]
EPOCHS = 40
BATCH_SIZE = 32
CALIBRATION_SAMPLES = 200
SOURCE = {"framework": "torch", "script": "scripts/train_digits.py", "dataset": "sklearn.datasets.load_digits"}
INPUTS = (TensorSpec("input", "FP32", (-1, 1, 8, 8)),)
OUTPUTS = (TensorSpec("logits", "FP32", (-1, 10)),)


@dataclass(frozen=True)
class Split:
    """The seeded train / held-out split, images as float32 [N, 1, 8, 8] in 0..1."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def log(message: str) -> None:
    """Print one progress line, flushed so it shows up under pipes too."""
    print(f"[train_digits] {message}", flush=True)


def load_split() -> Split:
    """Load the digits and split them exactly as ``extra.holdout`` in the manifest says."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=HOLDOUT["test_size"], random_state=HOLDOUT["random_state"], stratify=y
    )
    return Split(x_tr, y_tr, x_te, y_te)


def build_model() -> Any:
    """The CNN: conv3x3(8) - relu - conv3x3(16) - relu - maxpool2 - linear(256 -> 10)."""
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )


def train(split: Split) -> Any:
    """Train the CNN deterministically (seeded init and shuffling, one thread)."""
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = build_model()
    x, y = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    for epoch in range(1, EPOCHS + 1):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        if epoch % 10 == 0:
            log(f"epoch {epoch}/{EPOCHS}: train loss {total / len(x):.4f}")
    return model.eval()


def torch_predict(model: Any, x: np.ndarray) -> np.ndarray:
    """Logits of the torch model for a float32 NCHW batch."""
    import torch

    with torch.no_grad():
        return np.asarray(model(torch.from_numpy(x)).numpy())


def export_onnx(model: Any, path: Path) -> None:
    """Export FP32 ONNX: input ``input`` [-1,1,8,8], output ``logits`` [-1,10], one file."""
    import torch

    example = (torch.zeros(2, 1, 8, 8),)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        model,
        example,
        dynamo=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        opset_version=18,
        external_data=False,
    )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)


def quantize_onnx(fp32: Path, int8: Path, split: Split) -> None:
    """Static INT8 QDQ quantization, per-channel weights, calibrated on training samples."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Calibration(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, x: np.ndarray) -> None:
            self._rows: Iterator[np.ndarray] = iter(x[:CALIBRATION_SAMPLES])

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self._rows, None)
            return None if row is None else {"input": row[None]}

    prepared = fp32.with_name("prepared.onnx")
    quant_pre_process(str(fp32), str(prepared))
    reader = Calibration(split.x_train)
    quantize_static(
        str(prepared),
        str(int8),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def onnx_predict(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function giving logits from an ONNX file through onnxruntime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(["logits"], {"input": x})[0]


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy, rounded to 4 places for the manifest."""
    return round(float(np.mean(logits.argmax(axis=1) == labels)), 4)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows where two sets of logits pick the same class."""
    return round(float(np.mean(a.argmax(axis=1) == b.argmax(axis=1))), 4)


def write_version(
    folder: Path, name: str, fmt: str, files: list[str], parity: dict[str, Any], *, backend: str = "", **extra: Any
) -> None:
    """Write ``manifest.json`` (INT8, same I/O as the ONNX model) for one committed artifact folder."""
    manifest = Manifest(
        name=name,
        version=1,
        format=fmt,
        files=tuple(file_entry(folder, f) for f in files),
        backend=backend,
        inputs=INPUTS,
        outputs=OUTPUTS,
        quantization="int8",
        source=dict(SOURCE),
        parity=parity,
        task="image-classification",
        extra={"holdout": dict(HOLDOUT), "labels": list(LABELS), **extra},
    )
    write_manifest(folder, manifest)
    sizes = ", ".join(f"{e.path} {e.size} B" for e in manifest.files)
    log(f"wrote {folder} ({sizes})")


def build_onnx(split: Split, model: Any, fp32_path: Path, out: Path) -> np.ndarray:
    """Quantize the FP32 export, evaluate both and write ``digits/1``; return the INT8 held-out logits."""
    fp32 = onnx_predict(fp32_path)(split.x_test)
    torch_gap = float(np.max(np.abs(fp32 - torch_predict(model, split.x_test))))
    log(f"ONNX FP32: held-out accuracy {accuracy(fp32, split.y_test)}, max |onnx - torch| {torch_gap:.2e}")
    folder = out / "digits" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    quantize_onnx(fp32_path, folder / "model.onnx", split)
    int8 = onnx_predict(folder / "model.onnx")(split.x_test)
    parity = {
        "heldout_accuracy": accuracy(int8, split.y_test),
        "heldout_accuracy_fp32": accuracy(fp32, split.y_test),
        "heldout_accuracy_int8": accuracy(int8, split.y_test),
        "heldout_samples": len(split.y_test),
        "top1_agreement_fp32_vs_int8": agreement(fp32, int8),
        "max_abs_error_onnx_fp32_vs_torch": round(torch_gap, 8),
    }
    log(f"ONNX INT8: {parity}")
    write_version(folder, "digits", "onnx", ["model.onnx"], parity)
    return int8


def build_openvino(split: Split, fp32_path: Path, out: Path, reference: np.ndarray) -> None:
    """Convert the FP32 ONNX to OpenVINO IR, quantize it to INT8 with NNCF, write ``digits-openvino/1``."""
    import nncf
    import openvino as ov

    ov_model = ov.convert_model(str(fp32_path))
    calibration = nncf.Dataset(list(split.x_train[:CALIBRATION_SAMPLES]), lambda row: row[None])
    quantized = nncf.quantize(ov_model, calibration, subset_size=CALIBRATION_SAMPLES)
    folder = out / "digits-openvino" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(folder / "model.xml"), compress_to_fp16=False)
    compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    logits = compiled(split.x_test)[compiled.output("logits")]
    parity = {
        "heldout_accuracy": accuracy(logits, split.y_test),
        "heldout_samples": len(split.y_test),
        "top1_agreement_vs_onnx_int8": agreement(logits, reference),
    }
    log(f"OpenVINO INT8: {parity}")
    write_version(folder, "digits-openvino", "openvino", ["model.xml", "model.bin"], parity, backend="openvino")


def keras_twin(torch_model: Any) -> Any:
    """The same CNN in Keras (NHWC inside, NCHW input like the ONNX model) with the torch weights copied in."""
    import keras

    inp = keras.Input(shape=(1, 8, 8), name="input")
    x = keras.layers.Reshape((8, 8, 1))(inp)  # one channel, so NCHW -> NHWC is a plain reshape
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inp, {"logits": keras.layers.Dense(10)(x)})
    w = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    # torch conv kernels are [out, in, kh, kw], Keras wants [kh, kw, in, out]; torch flattens C,H,W and
    # Keras H,W,C, so the dense rows are permuted to match.
    dense = w["6.weight"].reshape(10, 16, 4, 4).transpose(0, 2, 3, 1).reshape(10, -1).T
    weights = [
        w["0.weight"].transpose(2, 3, 1, 0), w["0.bias"],
        w["2.weight"].transpose(2, 3, 1, 0), w["2.bias"],
        dense, w["6.bias"],
    ]  # fmt: skip
    model.set_weights(weights)
    return model


def build_tflite(split: Split, torch_model: Any, out: Path, reference: np.ndarray) -> None:
    """Convert the Keras twin to TFLite (INT8, float I/O), check it with LiteRT, write ``digits-tflite/1``."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    model = keras_twin(torch_model)
    keras_gap = float(np.max(np.abs(model(split.x_test)["logits"].numpy() - torch_predict(torch_model, split.x_test))))
    log(f"Keras twin: max |keras - torch| {keras_gap:.2e}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([row[None]] for row in split.x_train[:CALIBRATION_SAMPLES])
    folder = out / "digits-tflite" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tflite").write_bytes(converter.convert())
    runner = Interpreter(model_path=str(folder / "model.tflite")).get_signature_runner("serving_default")
    logits = runner(input=split.x_test)["logits"]
    parity = {
        "heldout_accuracy": accuracy(logits, split.y_test),
        "heldout_samples": len(split.y_test),
        "top1_agreement_vs_onnx_int8": agreement(logits, reference),
        "max_abs_error_keras_vs_torch": round(keras_gap, 8),
    }
    log(f"TFLite INT8: {parity}")
    layout = "NCHW input, reshaped to NHWC inside the model"
    write_version(
        folder,
        "digits-tflite",
        "tflite",
        ["model.tflite"],
        parity,
        backend="tflite",
        tflite_signature="serving_default",
        layout=layout,
    )


def main(argv: list[str] | None = None) -> int:
    """Train, convert and write the requested artifacts; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "edge_runner" / "defaults")
    parser.add_argument("--targets", default="onnx,openvino,tflite", help="comma list of onnx, openvino, tflite")
    args = parser.parse_args(argv)
    targets = {t.strip() for t in args.targets.split(",") if t.strip()}
    split = load_split()
    log(f"digits: {len(split.y_train)} train / {len(split.y_test)} held-out samples")
    model = train(split)
    with tempfile.TemporaryDirectory(prefix="digits-") as tmp:
        fp32_path = Path(tmp) / "model_fp32.onnx"
        export_onnx(model, fp32_path)
        if "onnx" in targets:
            reference = build_onnx(split, model, fp32_path, args.out)
        else:
            reference = onnx_predict(args.out / "digits" / "1" / "model.onnx")(split.x_test)
        if "openvino" in targets:
            build_openvino(split, fp32_path, args.out, reference)
        if "tflite" in targets:
            build_tflite(split, model, args.out, reference)
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
