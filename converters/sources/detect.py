"""Decide what kind of model a ``SRC`` argument names, and load it."""

from __future__ import annotations

from pathlib import Path

from converters.errors import ConversionError
from converters.options import ConvertOptions
from converters.sources.base import Source

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".jit", ".ts")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
SUPPORTED = (
    "a TorchScript .pt, a torch.export .pt2, module.py:ClassName (+ --state-dict), a TF SavedModel folder, "
    "a Keras .keras/.h5 file, or a Hugging Face model folder"
)


def source_kind(src: str) -> str:
    """One of torch-module, torchscript, torch-export, keras, saved-model, huggingface, onnx."""
    head, sep, tail = src.rpartition(":")
    if sep and head.endswith(".py") and tail.isidentifier():
        return "torch-module"
    path = Path(src)
    if not path.exists():
        raise ConversionError(f"{src} does not exist", f"give {SUPPORTED}")
    if path.is_dir():
        if (path / "config.json").is_file():
            return "huggingface"
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "saved-model"
        raise ConversionError(
            f"{src} is a folder but not a model (no config.json, no saved_model.pb)", f"give {SUPPORTED}"
        )
    suffix = path.suffix.lower()
    if suffix in TORCHSCRIPT_SUFFIXES:
        return "torchscript"
    if suffix == ".pt2":
        return "torch-export"
    if suffix in KERAS_SUFFIXES:
        return "keras"
    if suffix == ".onnx":
        return "onnx"
    raise ConversionError(f"{src}: unsupported file type {suffix or '(none)'}", f"give {SUPPORTED}")


def load_source(opts: ConvertOptions) -> Source:
    """Load ``opts.src`` into a :class:`Source`; ConversionError on anything unusable."""
    kind = source_kind(opts.src)
    path = Path(opts.src)
    if kind == "torch-module":
        from converters.sources.torch_source import load_module_class

        return load_module_class(opts.src, opts)
    if opts.state_dict is not None:
        raise ConversionError("--state-dict only applies to module.py:ClassName sources", "drop --state-dict")
    if kind == "torchscript":
        from converters.sources.torch_source import load_torchscript

        return load_torchscript(path, opts)
    if kind == "torch-export":
        from converters.sources.torch_source import load_exported

        return load_exported(path, opts)
    if kind == "huggingface":
        from converters.sources.hf_source import load_hf_folder

        return load_hf_folder(path, opts)
    if kind == "onnx":
        from converters.sources.onnx_source import load_onnx

        return load_onnx(path, opts)
    from converters.sources.tf_source import load_tensorflow

    return load_tensorflow(path, kind, opts)
