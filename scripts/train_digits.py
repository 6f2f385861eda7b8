"""Train the embedded default model ``digits`` and convert it with the converter pipeline.

A small CNN is trained with torch on scikit-learn's bundled 8x8 digits. ``edge-runner convert``'s own
pipeline (``converters.pipeline.convert``) then builds every artifact from it: the ONNX model
(``<out>/digits/1``, static INT8 QDQ, per-channel) and its twins, OpenVINO IR (``digits-openvino/1``,
full INT8 via NNCF) and TFLite (``digits-tflite/1``, full-integer INT8 with float I/O, from a Keras twin
holding the same weights). Calibration uses training samples; the parity check runs on the held-out split
through each artifact's serving backend, so every manifest's parity report (the one documented in
docs/manifest.md) also records the held-out accuracy of its own artifact in ``details``.

Usage: ``python scripts/train_digits.py [--out edge_runner/defaults] [--targets onnx,openvino,tflite]``.
Needs the ``convert`` extra (torch, onnx, onnxruntime, openvino, nncf, scikit-learn; tensorflow and
ai-edge-litert for the TFLite twin). Training is seeded, so reruns give the same weights.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()

SEED = 0
HOLDOUT = {"test_size": 0.25, "random_state": 0, "stratify": True, "scale": "x/16"}
LABELS = [str(d) for d in range(10)]
EPOCHS = 40
BATCH_SIZE = 32
CALIBRATION_SAMPLES = 64  # the pipeline's calibration limit (converters.calibration.MAX_SAMPLES)
SOURCE = {"script": "scripts/train_digits.py", "dataset": "sklearn.datasets.load_digits"}
LAYOUT = "NCHW input, reshaped to NHWC inside the model"


@dataclass(frozen=True)
class Split:
    """The seeded train / held-out split, images as float32 [N, 1, 8, 8] in 0..1."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


class DigitsNet(nn.Module):
    """The CNN: conv3x3(8) - relu - conv3x3(16) - relu - maxpool2 - linear(256 -> 10).

    ``forward`` returns ``{"logits": ...}`` so that the converted models name their output ``logits``.
    Built with no arguments, as the converter's ``module.py:ClassName`` source wants.
    """

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 10),
        )

    def forward(self, input: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.layers(input)}


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


def train(split: Split) -> DigitsNet:
    """Train the CNN deterministically (seeded init and shuffling, one thread)."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    model = DigitsNet()
    x, y = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    for epoch in range(1, EPOCHS + 1):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx])["logits"], y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        if epoch % 10 == 0:
            log(f"epoch {epoch}/{EPOCHS}: train loss {total / len(x):.4f}")
    return model.eval()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy, rounded to 4 places for the manifest."""
    return round(float(np.mean(logits.argmax(axis=1) == labels)), 4)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows where two sets of logits pick the same class."""
    return round(float(np.mean(a.argmax(axis=1) == b.argmax(axis=1))), 4)


class HeldoutEvaluator:
    """The pipeline's ``evaluate`` hook: held-out accuracy of source and artifact, agreement with ONNX INT8.

    The parity inputs are the held-out images in order, so the outputs line up with ``labels``.
    """

    def __init__(self, labels: np.ndarray, onnx_int8: np.ndarray | None = None) -> None:
        self.labels = labels
        self.onnx_int8 = onnx_int8

    def __call__(self, source: list[np.ndarray], artifact: list[np.ndarray]) -> dict[str, Any]:
        scores: dict[str, Any] = {
            "heldout_samples": len(self.labels),
            "heldout_accuracy": accuracy(artifact[0], self.labels),
            "heldout_accuracy_source": accuracy(source[0], self.labels),
        }
        if self.onnx_int8 is None:
            self.onnx_int8 = artifact[0]  # the first artifact built is the ONNX INT8 reference
        else:
            scores["top1_agreement_vs_onnx_int8"] = agreement(artifact[0], self.onnx_int8)
        log(f"held-out: {scores}")
        return scores


def keras_twin(torch_model: DigitsNet) -> Any:
    """The same CNN in Keras (NHWC inside, NCHW input like the ONNX model) with the torch weights copied in."""
    import keras

    inp = keras.Input(shape=(1, 8, 8), name="input")
    x = keras.layers.Reshape((8, 8, 1))(inp)  # one channel, so NCHW -> NHWC is a plain reshape
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inp, {"logits": keras.layers.Dense(10)(x)})
    w = {k.removeprefix("layers."): v.detach().numpy() for k, v in torch_model.state_dict().items()}
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


def convert_one(target: str, src: str, out: Path, work: Path, evaluate: HeldoutEvaluator, **fields: Any) -> None:
    """One ``edge-runner convert`` run (INT8, calibrated on training samples, parity on the held-out set)."""
    from converters.options import ConvertOptions
    from converters.pipeline import STEPS, convert
    from converters.progress import Progress

    name = {"onnx": "digits", "openvino": "digits-openvino", "tflite": "digits-tflite"}[target]
    opts = ConvertOptions(
        src=src,
        to=target,
        quantize="int8",
        calibration=work / "calibration.npy",
        parity_data=work / "heldout.npy",
        out=out / name / "1",
        name=name,
        task="image-classification",
        extra={"holdout": dict(HOLDOUT), "labels": list(LABELS), **fields.pop("extra", {})},
        **fields,
    )
    progress = Progress(STEPS)
    try:
        result = convert(opts, progress, evaluate=evaluate)
    finally:
        progress.finish()
    sizes = ", ".join(f"{f['path']} {f['size']} B" for f in result["manifest"]["files"])
    log(f"wrote {result['out']} ({sizes})")


def onnx_reference(out: Path, x: np.ndarray) -> np.ndarray:
    """Held-out logits of an existing ``digits`` ONNX artifact, through its serving backend."""
    from converters.parity import served
    from edge_runner.core.manifest import read_manifest

    folder = out / "digits" / "1"
    with served(read_manifest(folder), folder, ["logits"]) as (run, _):
        return run({"input": x})[0]


def main(argv: list[str] | None = None) -> int:
    """Train, convert and write the requested artifacts; return the exit code."""
    from converters.options import InputSpec

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "edge_runner" / "defaults")
    parser.add_argument("--targets", default="onnx,openvino,tflite", help="comma list of onnx, openvino, tflite")
    args = parser.parse_args(argv)
    targets = {t.strip() for t in args.targets.split(",") if t.strip()}
    split = load_split()
    log(f"digits: {len(split.y_train)} train / {len(split.y_test)} held-out samples")
    model = train(split)
    evaluate = HeldoutEvaluator(split.y_test)
    if "onnx" not in targets:
        evaluate.onnx_int8 = onnx_reference(args.out, split.x_test)
    with tempfile.TemporaryDirectory(prefix="digits-") as tmp:
        work = Path(tmp)
        np.save(work / "calibration.npy", split.x_train[:CALIBRATION_SAMPLES])
        np.save(work / "heldout.npy", split.x_test)
        torch.save(model.state_dict(), work / "digits.pth")
        torch_source = {
            "src": f"{SCRIPT}:DigitsNet",
            "state_dict": work / "digits.pth",
            "example_inputs": (InputSpec("input", "float32", (1, 1, 8, 8)),),
            "source_info": {**SOURCE, "path": SOURCE["script"], "state_dict": "trained in memory by the script"},
        }
        for target in ("onnx", "openvino"):
            if target in targets:
                convert_one(out=args.out, work=work, evaluate=evaluate, target=target, **torch_source)
        if "tflite" in targets:
            keras_path = work / "digits.keras"
            keras_twin(model).save(str(keras_path))
            convert_one(
                "tflite",
                str(keras_path),
                args.out,
                work,
                evaluate,
                source_info={**SOURCE, "path": f"{SOURCE['script']} (Keras twin holding the torch weights)"},
                extra={"tflite_signature": "serving_default", "layout": LAYOUT},
            )
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
