"""Hugging Face architectures -> GGUF hyper-parameters and tensors.

Supported: Llama-family decoders (``LlamaForCausalLM``, ``MistralForCausalLM`` -> GGUF arch
``llama``; ``Qwen2ForCausalLM`` -> ``qwen2``) and BERT-style encoders (``BertModel`` and the
sentence-transformers layout -> ``bert``). Tensor names come from the ``gguf`` package's maps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from converters.gguf.weights import iter_hf_tensors

_DECODERS = {
    "LlamaForCausalLM": gguf.MODEL_ARCH.LLAMA,
    "MistralForCausalLM": gguf.MODEL_ARCH.LLAMA,
    "Qwen2ForCausalLM": gguf.MODEL_ARCH.QWEN2,
}
_ENCODERS = {"BertModel": gguf.MODEL_ARCH.BERT, "BertForMaskedLM": gguf.MODEL_ARCH.BERT}
_SKIPPED_SUFFIXES = ("rotary_emb.inv_freq", "position_ids", "pooler.dense.weight", "pooler.dense.bias")
_POOLING = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}


class UnsupportedModel(ValueError):
    """The Hugging Face folder holds an architecture or layout this converter does not handle."""


@dataclass(frozen=True)
class Architecture:
    """What we learned from ``config.json``: the GGUF arch, the kind and the raw config."""

    hf_name: str
    arch: gguf.MODEL_ARCH
    is_encoder: bool
    config: dict[str, Any]

    @property
    def gguf_name(self) -> str:
        """The ``general.architecture`` string, e.g. ``llama``."""
        return gguf.MODEL_ARCH_NAMES[self.arch]

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks."""
        return int(self.config["num_hidden_layers"])


def detect(src: Path) -> Architecture:
    """Read ``config.json`` and pick the GGUF architecture; raise UnsupportedModel otherwise."""
    config_path = src / "config.json"
    if not config_path.is_file():
        raise UnsupportedModel(f"{src} has no config.json: pass a Hugging Face model folder")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for name in config.get("architectures") or [_guess_architecture(config)]:
        if name in _DECODERS:
            return Architecture(name, _DECODERS[name], False, config)
        if name in _ENCODERS:
            return Architecture(name, _ENCODERS[name], True, config)
    supported = ", ".join(sorted({*_DECODERS, *_ENCODERS}))
    raise UnsupportedModel(f"{src}: architectures {config.get('architectures')} not supported; supported: {supported}")


def _guess_architecture(config: dict[str, Any]) -> str:
    return {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}.get(
        str(config.get("model_type")), "BertModel" if config.get("model_type") == "bert" else ""
    )


def _rope_theta(config: dict[str, Any]) -> float:
    # transformers 5 nests it in rope_parameters; 4.x keeps it at the top level
    params = config.get("rope_parameters") or {}
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


def add_hparams(writer: gguf.GGUFWriter, arch: Architecture, src: Path) -> None:
    """Write the architecture's hyper-parameters into the GGUF header."""
    cfg = arch.config
    n_head = int(cfg["num_attention_heads"])
    writer.add_context_length(int(cfg.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_block_count(arch.n_layers)
    writer.add_head_count(n_head)
    if arch.is_encoder:
        writer.add_layer_norm_eps(float(cfg.get("layer_norm_eps", 1e-12)))
        writer.add_causal_attention(False)
        writer.add_pooling_type(_pooling_type(src))
        writer.add_token_type_count(int(cfg.get("type_vocab_size", 2)))
        return
    head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // n_head)
    writer.add_head_count_kv(int(cfg.get("num_key_value_heads") or n_head))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    writer.add_rope_freq_base(_rope_theta(cfg))
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(int(cfg["vocab_size"]))


def _pooling_type(src: Path) -> gguf.PoolingType:
    """Pooling from a sentence-transformers ``1_Pooling/config.json``; mean when absent."""
    pooling = src / "1_Pooling" / "config.json"
    if pooling.is_file():
        data = json.loads(pooling.read_text(encoding="utf-8"))
        for mode, kind in (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls")):
            if data.get(mode):
                return _POOLING[kind]
        if data.get("pooling_mode_lasttoken"):
            return _POOLING["lasttoken"]
    return gguf.PoolingType.MEAN


def _rotary_permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows from HF's half-split rotary layout to llama.cpp's interleaved one."""
    rows = weight.shape[0]
    tail = weight.shape[1:]
    return weight.reshape(n_head, 2, rows // n_head // 2, *tail).swapaxes(1, 2).reshape(weight.shape)


def iter_gguf_tensors(arch: Architecture, src: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(gguf_name, float32 array)`` for every tensor llama.cpp needs."""
    name_map = gguf.get_tensor_name_map(arch.arch, arch.n_layers)
    cfg = arch.config
    n_head = int(cfg["num_attention_heads"])
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    permute = arch.arch == gguf.MODEL_ARCH.LLAMA
    for hf_name, array in iter_hf_tensors(src):
        if hf_name.endswith(_SKIPPED_SUFFIXES):
            continue
        name = _map_name(name_map, hf_name)
        if name is None:
            raise UnsupportedModel(f"tensor {hf_name!r} has no GGUF name for arch {arch.gguf_name}")
        if permute and ".attn_q." in name:
            array = _rotary_permute(array, n_head)
        elif permute and ".attn_k." in name:
            array = _rotary_permute(array, n_kv)
        yield name, array


def _map_name(name_map: gguf.TensorNameMap, hf_name: str) -> str | None:
    suffixes = (".weight", ".bias")
    candidates = [hf_name]
    for prefix in ("bert.", "model.", "0.auto_model."):
        if hf_name.startswith(prefix):
            candidates.append(hf_name[len(prefix) :])
    for candidate in candidates:
        mapped = name_map.get_name(candidate, try_suffixes=suffixes)
        if mapped is not None:
            return str(mapped)
    return None


# llama.cpp adds a row of these directly (no get_rows conversion), so they must stay F32
_ALWAYS_F32 = ("token_types.weight", "position_embd.weight")


def is_norm_or_bias(gguf_name: str, array: np.ndarray) -> bool:
    """Tensors that stay F32 in every GGUF file type: 1-D ones (norms, biases) and BERT's added embeddings."""
    return array.ndim == 1 or gguf_name.endswith(".bias") or gguf_name in _ALWAYS_F32
