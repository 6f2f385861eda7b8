"""Read the weights of a Hugging Face folder one tensor at a time, as float32 numpy arrays.

Safetensors files are opened lazily (one tensor in memory at a time on the reading side); a legacy
``pytorch_model.bin`` is loaded with ``weights_only=True`` so no pickle code ever runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np


def weight_files(src: Path) -> list[Path]:
    """The weight files of a model folder, safetensors preferred."""
    files = sorted(src.glob("*.safetensors"))
    if files:
        return files
    files = sorted(src.glob("pytorch_model*.bin"))
    if files:
        return files
    raise FileNotFoundError(f"{src} holds no *.safetensors or pytorch_model*.bin weights")


def iter_hf_tensors(src: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(hf_name, float32 array)`` for every stored tensor, in file order."""
    import torch

    for path in weight_files(src):
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                    yield name, handle.get_tensor(name).to(torch.float32).numpy()
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for name, tensor in state.items():
                yield name, tensor.to(torch.float32).numpy()


def source_size_bytes(src: Path) -> int:
    """Total size of the weight files (the "size before" of the parity report)."""
    return sum(p.stat().st_size for p in weight_files(src))
