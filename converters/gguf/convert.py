"""Hugging Face folder -> GGUF file (F32 / F16 / Q8_0 / K-quants) + manifest with a parity report.

The GGUF header and tensors are written with the ``gguf`` package's writer. Quantized types go
through llama.cpp's own quantizer (``llama_cpp.llama_model_quantize``) from an F32 (or, for large
models, F16) intermediate; when llama-cpp-python is missing, Q8_0 falls back to the ``gguf``
package's numpy quantizer and the manifest says so.
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from converters.gguf import architectures, parity, tokenizer, weights
from converters.manifest_writer import build_manifest
from edge_runner.core.manifest import Manifest, TensorSpec, write_manifest
from edge_runner.core.parity import ParityReport

# what the llama.cpp backend declares for KServe v2 access (text in; text or embeddings out)
TEXT_INPUT = TensorSpec("text_input", "BYTES", (-1,))
OUTPUTS = {False: TensorSpec("text_output", "BYTES", (-1,)), True: TensorSpec("embedding", "FP32", (-1, -1))}

# our quantize names -> llama.cpp LLAMA_FTYPE_* values (llama.h)
LLAMA_FTYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}
DIRECT_TYPES = ("f32", "f16")
# above this many F32 bytes the pre-quantization intermediate is written as F16
F32_INTERMEDIATE_LIMIT = 4 << 30
# sentence-transformers Dense layers after pooling (no place in llama.cpp's graph): weights beside the GGUF,
# described in the manifest's extra under POOLED_DENSE_KEY, applied by the llama.cpp backend
POOLED_DENSE_FILE = "pooled_dense.npz"
POOLED_DENSE_KEY = "pooled_dense"


class ParityError(RuntimeError):
    """The converted model drifted from its source beyond the parity thresholds."""


def write_gguf(arch: architectures.Architecture, src: Path, path: Path, dtype: str, name: str) -> None:
    """Write header, tokenizer and tensors of ``src`` as an F32 or F16 GGUF file."""
    writer = gguf.GGUFWriter(str(path), arch.gguf_name)
    writer.add_name(name)
    architectures.add_hparams(writer, arch, src)
    n_vocab = int(arch.config["vocab_size"])
    tokenizer.add_vocab(writer, src, n_vocab, arch.is_encoder)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    for tensor_name, array in architectures.iter_gguf_tensors(arch, src):
        keep_f32 = dtype == "f32" or architectures.is_norm_or_bias(tensor_name, array)
        writer.add_tensor(tensor_name, array.astype(np.float32 if keep_f32 else np.float16))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantize_file(src: Path, dst: Path, quantize: str, threads: int = 0) -> str:
    """Quantize a GGUF file with llama.cpp; return which quantizer ran."""
    try:
        import llama_cpp
    except ImportError:
        if quantize != "q8_0":
            raise RuntimeError(f"--quantize {quantize} needs llama-cpp-python (pip install llama-cpp-python)") from None
        _requantize_q8_0_numpy(src, dst)
        return "gguf.quants (numpy)"
    from edge_runner.backends.llama_cpp.native import llama

    llama()  # bridges llama.cpp's logging into Python logging
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPES[quantize]
    params.nthread = threads or max(1, os.cpu_count() or 1)
    status = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if status != 0:
        raise RuntimeError(f"llama.cpp quantizer failed with status {status} on {src}")
    return "llama.cpp"


def _requantize_q8_0_numpy(src: Path, dst: Path) -> None:
    """Fallback: copy every KV pair and quantize 2-D tensors to Q8_0 with ``gguf.quants``."""
    reader = gguf.GGUFReader(str(src))
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(str(dst), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), value_type, sub_type=sub_type)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    for tensor in reader.tensors:
        data = np.array(tensor.data, dtype=np.float32).reshape(tuple(reversed(tensor.shape.tolist())))
        if data.ndim == 2 and data.shape[-1] % 32 == 0:
            packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(tensor.name, packed, raw_shape=data.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(tensor.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _intermediate_dtype(src: Path, quantize: str) -> str:
    if quantize in DIRECT_TYPES:
        return quantize
    return "f16" if weights.source_size_bytes(src) * 2 > F32_INTERMEDIATE_LIMIT else "f32"


def _parity(
    arch: architectures.Architecture, src: Path, path: Path, quantize: str, details: dict[str, Any], check: bool
) -> ParityReport:
    sizes = (weights.source_size_bytes(src), path.stat().st_size)
    kind = "encoder" if arch.is_encoder else "decoder"
    if not check:
        return ParityReport.not_measured(kind, quantize, sizes, details)
    if arch.is_encoder:
        pooling = "cls" if architectures._pooling_type(src) == gguf.PoolingType.CLS else "mean"
        return parity.encoder_parity(src, path, quantize, sizes, details, pooling=pooling)
    return parity.decoder_parity(src, path, quantize, sizes, details)


def convert_to_gguf(
    src: Path,
    out: Path,
    quantize: str = "q8_0",
    *,
    name: str | None = None,
    version: int = 1,
    allow_drift: bool = False,
    check_parity: bool = True,
    threads: int = 0,
    source: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Convert a Hugging Face folder to ``out/model.gguf`` and write ``out/manifest.json``.

    ``quantize`` is one of ``LLAMA_FTYPES`` (``none`` means f16). Raises ``ParityError`` when the
    parity thresholds are missed, unless ``allow_drift``; the files are kept either way so the
    report can be inspected.
    """
    src, out = Path(src), Path(out)
    quantize = "f16" if quantize in ("none", "fp16") else quantize.lower()
    if quantize not in LLAMA_FTYPES:
        raise ValueError(f"unsupported GGUF quantization {quantize!r}; choose one of {', '.join(LLAMA_FTYPES)}")
    arch = architectures.detect(src)
    dense = architectures.pooled_dense_layers(src) if arch.is_encoder else []
    out.mkdir(parents=True, exist_ok=True)
    final = out / "model.gguf"
    model_name = name or src.name
    started = time.perf_counter()
    quantizer = "gguf writer"
    if quantize in DIRECT_TYPES:
        write_gguf(arch, src, final, quantize, model_name)
    else:
        staging = out / f".model.{_intermediate_dtype(src, quantize)}.gguf.tmp"
        try:
            write_gguf(arch, src, staging, _intermediate_dtype(src, quantize), model_name)
            quantizer = quantize_file(staging, final, quantize, threads)
        finally:
            staging.unlink(missing_ok=True)
    extra = {**(extra or {}), **_write_pooled_dense(dense, out)}
    details = {"convert_seconds": round(time.perf_counter() - started, 2), "quantizer": quantizer}
    report = _parity(arch, src, final, quantize, details, check_parity)
    manifest = _manifest(arch, src, out, model_name, version, quantize, report, source, extra)
    write_manifest(out, manifest)
    if check_parity and not report.passed and not allow_drift:
        failures = "; ".join(report.failures)
        raise ParityError(f"GGUF parity below threshold for {src}: {failures} (use --allow-drift)")
    return manifest


def _write_pooled_dense(dense: list[architectures.PooledDense], out: Path) -> dict[str, Any]:
    """Save the Dense layers (float32, ``<name>.weight`` / ``<name>.bias``); return the manifest's description."""
    (out / POOLED_DENSE_FILE).unlink(missing_ok=True)
    if not dense:
        return {}
    arrays = {f"{layer.name}.weight": layer.weight.astype(np.float32) for layer in dense}
    arrays.update({f"{layer.name}.bias": layer.bias.astype(np.float32) for layer in dense if layer.bias is not None})
    np.savez(out / POOLED_DENSE_FILE, **arrays)  # type: ignore[arg-type]
    layers = [{"name": d.name, "activation": d.activation, "bias": d.bias is not None} for d in dense]
    return {POOLED_DENSE_KEY: {"file": POOLED_DENSE_FILE, "layers": layers}}


def _manifest(
    arch: architectures.Architecture,
    src: Path,
    out: Path,
    name: str,
    version: int,
    quantize: str,
    report: ParityReport,
    source: dict[str, Any] | None,
    extra: dict[str, Any] | None,
) -> Manifest:
    info: dict[str, Any] = {"architecture": arch.gguf_name, "hf_architecture": arch.hf_name}
    chat = tokenizer.chat_template(src)
    info["has_chat_template"] = chat is not None
    default_context = 512 if arch.family is not None and arch.family.t5 else 2048  # what the GGUF header says
    context = arch.config.get("max_position_embeddings") or arch.config.get("n_positions") or default_context
    info["context_length"] = int(context)
    return build_manifest(
        out,
        name=name,
        version=version,
        fmt="gguf",
        files=["model.gguf", *([POOLED_DENSE_FILE] if POOLED_DENSE_KEY in (extra or {}) else [])],
        backend="llama_cpp",
        quantization=quantize,
        inputs=(TEXT_INPUT,),
        outputs=(OUTPUTS[arch.is_encoder],),
        source=source or {"framework": "huggingface", "path": str(src), "architecture": arch.hf_name},
        parity=report,
        task="feature-extraction" if arch.is_encoder else "text-generation",
        extra={**info, **(extra or {})},
    )
