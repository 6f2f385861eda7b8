"""Hugging Face architectures -> GGUF hyper-parameters and tensors.

Supported: the decoders of :data:`converters.gguf.families.DECODERS` (llama, mistral, qwen2, qwen3,
qwen3 MoE, gemma 1/2/3, phi3, gpt2, starcoder2), BERT-style encoders (``BertModel`` and the
sentence-transformers layout -> ``bert``) and T5 encoders (``T5EncoderModel``, sentence-t5 / GTR, the
encoder of ``T5ForConditionalGeneration`` -> ``t5encoder``). Tensor names come from the ``gguf`` package's maps; the
per-family transforms (rotary permutation, Gemma's norm shift, GPT-2's Conv1D) from ``families``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from converters.gguf.families import (
    CONV1D_SUFFIXES,
    DECODERS,
    MODEL_TYPES,
    T5_ENCODERS,
    Family,
    UnsupportedModel,
    hparam,
    rope_tensors,
)
from converters.gguf.weights import iter_hf_tensors

__all__ = [
    "Architecture",
    "PooledDense",
    "UnsupportedModel",
    "add_hparams",
    "detect",
    "iter_gguf_tensors",
    "pooled_dense_layers",
    "supported_names",
]

log = logging.getLogger(__name__)

_ENCODERS = {"BertModel": gguf.MODEL_ARCH.BERT, "BertForMaskedLM": gguf.MODEL_ARCH.BERT}
_SKIPPED_SUFFIXES = (
    "rotary_emb.inv_freq",
    "position_ids",
    "pooler.dense.weight",
    "pooler.dense.bias",
    ".attn.bias",  # GPT-2's causal-mask buffers in old checkpoints
    ".attn.masked_bias",
)
_POOLING = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}


# vision-language checkpoints (transformers 4.x/5.x layouts): the text model's tensors, the rest skipped
_TEXT_PREFIXES = (
    ("language_model.model.", "model."),
    ("model.language_model.", "model."),
    ("language_model.lm_head.", "lm_head."),
)
_VISION_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")


@dataclass(frozen=True)
class Architecture:
    """What we learned from ``config.json``: the GGUF arch, the kind and the raw config."""

    hf_name: str
    arch: gguf.MODEL_ARCH
    is_encoder: bool
    config: dict[str, Any]
    family: Family | None = None

    @property
    def gguf_name(self) -> str:
        """The ``general.architecture`` string, e.g. ``llama``."""
        return gguf.MODEL_ARCH_NAMES[self.arch]

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks (of the encoder, for T5)."""
        return int(hparam(self.config, "num_hidden_layers", "n_layer", "num_layers"))


def detect(src: Path) -> Architecture:
    """Read ``config.json`` and pick the GGUF architecture; raise UnsupportedModel otherwise."""
    config_path = src / "config.json"
    if not config_path.is_file():
        raise UnsupportedModel(f"{src} has no config.json: pass a Hugging Face model folder")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for name in config.get("architectures") or [_guess_architecture(config)]:
        if name in DECODERS:
            family = DECODERS[name]
            if family.multimodal:
                config = _text_config(src, config)
            return Architecture(name, family.arch, False, config, family)
        if name in _ENCODERS:
            return Architecture(name, _ENCODERS[name], True, config)
        if name in T5_ENCODERS:
            return Architecture(name, T5_ENCODERS[name].arch, True, config, T5_ENCODERS[name])
    raise UnsupportedModel(
        f"{src}: architectures {config.get('architectures')} not supported for GGUF; supported: {supported_names()}"
    )


# sentence-transformers Dense activations (their class path) -> the name the llama.cpp backend applies
_DENSE_ACTIVATIONS = {"torch.nn.modules.linear.Identity": "identity", "torch.nn.modules.activation.Tanh": "tanh"}
# modules.json entries that pooling_type and the dense layers account for
_KNOWN_MODULES = (".Transformer", ".Pooling", ".Dense", ".Normalize")


@dataclass(frozen=True)
class PooledDense:
    """A sentence-transformers ``Dense`` module applied to the pooled embedding (sentence-t5 / GTR ``2_Dense``)."""

    name: str
    weight: np.ndarray
    bias: np.ndarray | None
    activation: str


def pooled_dense_layers(src: Path) -> list[PooledDense]:
    """The ``Dense`` modules of a sentence-transformers folder, in order (none without ``modules.json``).

    llama.cpp's encoder graphs (``bert``, ``t5encoder``) have no tensor for a projection after pooling,
    so these travel beside the GGUF file and the llama.cpp backend applies them to the pooled vector.
    """
    modules = src / "modules.json"
    if not modules.is_file():
        return []
    layers = []
    for module in json.loads(modules.read_text(encoding="utf-8")):
        kind = str(module.get("type", ""))
        if not kind.endswith(".Dense"):
            if not kind.endswith(_KNOWN_MODULES):
                log.warning("%s: sentence-transformers module %s (%s) is not converted", src, module.get("path"), kind)
            continue
        folder = src / str(module["path"])
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        activation_class = str(config.get("activation_function", "torch.nn.modules.linear.Identity"))
        if activation_class not in _DENSE_ACTIVATIONS:
            raise UnsupportedModel(
                f"{folder}: Dense activation {activation_class} is not supported for GGUF "
                f"(supported: {', '.join(_DENSE_ACTIVATIONS)})"
            )
        tensors = dict(iter_hf_tensors(folder))
        activation = _DENSE_ACTIVATIONS[activation_class]
        layers.append(PooledDense(folder.name, tensors["linear.weight"], tensors.get("linear.bias"), activation))
    return layers


def _text_config(src: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The language model's settings of a vision-language checkpoint, defaults filled by transformers."""
    try:
        from transformers import AutoConfig

        text = AutoConfig.from_pretrained(src).get_text_config().to_dict()
    except (ImportError, OSError, ValueError):
        text = dict(config.get("text_config") or {})
    if not text.get("num_hidden_layers"):
        raise UnsupportedModel(f"{src}: no text_config with the language model's settings")
    return {**text, "architectures": config.get("architectures")}


def text_tensor_name(hf_name: str) -> str | None:
    """The language model's name of a vision-language checkpoint tensor; None for vision/projector ones."""
    for prefix, replacement in _TEXT_PREFIXES:
        if hf_name.startswith(prefix):
            return replacement + hf_name[len(prefix) :]
    return None if hf_name.startswith(_VISION_PREFIXES) else hf_name


def supported_names() -> str:
    """The Hugging Face classes this converter handles, for error messages and docs."""
    return ", ".join(sorted({*DECODERS, *_ENCODERS, *T5_ENCODERS}))


def _guess_architecture(config: dict[str, Any]) -> str:
    model_type = str(config.get("model_type"))
    encoders = {"bert": "BertModel", "t5": "T5EncoderModel"}
    return MODEL_TYPES.get(model_type, encoders.get(model_type, ""))


def add_hparams(writer: gguf.GGUFWriter, arch: Architecture, src: Path) -> None:
    """Write the architecture's hyper-parameters into the GGUF header."""
    if arch.family is not None:
        arch.family.hparams(writer, arch.config)
        if arch.is_encoder:
            writer.add_pooling_type(_pooling_type(src))
        return
    cfg = arch.config
    writer.add_context_length(int(cfg.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_block_count(arch.n_layers)
    writer.add_head_count(int(cfg["num_attention_heads"]))
    writer.add_layer_norm_eps(float(cfg.get("layer_norm_eps", 1e-12)))
    writer.add_causal_attention(False)
    writer.add_pooling_type(_pooling_type(src))
    writer.add_token_type_count(int(cfg.get("type_vocab_size", 2)))


def _pooling_type(src: Path) -> gguf.PoolingType:
    """Pooling from a sentence-transformers ``1_Pooling/config.json``; mean when absent."""
    pooling = src / "1_Pooling" / "config.json"
    if pooling.is_file():
        data = json.loads(pooling.read_text(encoding="utf-8"))
        mode_name = data.get("pooling_mode")  # sentence-transformers 6 writes the mode's name
        if isinstance(mode_name, list) and len(mode_name) == 1:
            mode_name = mode_name[0]
        if mode_name is not None:
            if not isinstance(mode_name, str) or mode_name not in _POOLING:
                supported = ", ".join(_POOLING)
                raise UnsupportedModel(f"{pooling}: pooling_mode {mode_name!r} not supported (supported: {supported})")
            return _POOLING[mode_name]
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
    family = arch.family or Family(arch.arch)
    cfg = arch.config
    n_head = int(hparam(cfg, "num_attention_heads", "n_head", "num_heads"))
    n_kv = int(hparam(cfg, "num_key_value_heads", default=n_head))
    tensors = iter_hf_tensors(src)
    if family.moe:
        tensors = stack_experts(tensors, int(hparam(cfg, "num_experts", "num_local_experts")))
    if family.t5:
        tensors = t5_encoder_tensors(tensors)
    for stored_name, array in tensors:
        hf_name = text_tensor_name(stored_name) if family.multimodal else stored_name
        if (
            hf_name is None
            or hf_name.endswith(_SKIPPED_SUFFIXES)
            or (family.drop_lm_head and hf_name == "lm_head.weight")
        ):
            continue
        name = _map_name(name_map, hf_name)
        if name is None:
            raise UnsupportedModel(f"tensor {hf_name!r} has no GGUF name for arch {arch.gguf_name}")
        if family.rotary_permute and ".attn_q." in name:
            array = _rotary_permute(array, n_head)
        elif family.rotary_permute and ".attn_k." in name:
            array = _rotary_permute(array, n_kv)
        elif family.conv1d_transpose and hf_name.endswith(CONV1D_SUFFIXES):
            array = np.ascontiguousarray(array.T)
        if family.norm_shift and name.endswith("norm.weight"):
            array = array + np.float32(family.norm_shift)
        yield name, array
    if arch.family is not None and not arch.is_encoder:
        yield from rope_tensors(cfg)


def _map_name(name_map: gguf.TensorNameMap, hf_name: str) -> str | None:
    suffixes = (".weight", ".bias")
    candidates = [hf_name]
    for prefix in ("bert.", "model.", "0.auto_model.", "transformer."):
        if hf_name.startswith(prefix):
            candidates.append(hf_name[len(prefix) :])
    for candidate in candidates:
        mapped = name_map.get_name(candidate, try_suffixes=suffixes)
        if mapped is not None:
            return str(mapped)
    return None


# llama.cpp adds a row of these directly (no get_rows conversion), so they must stay F32
# (and the MoE router, which llama.cpp's quantizer never touches either)
_ALWAYS_F32 = ("token_types.weight", "position_embd.weight", "ffn_gate_inp.weight")


def is_norm_or_bias(gguf_name: str, array: np.ndarray) -> bool:
    """Tensors that stay F32 in every GGUF file type: 1-D ones (norms, biases), BERT's added embeddings, routers."""
    return array.ndim == 1 or gguf_name.endswith((".bias", *_ALWAYS_F32))


_T5_EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def t5_encoder_tensors(tensors: Iterator[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray]]:
    """The encoder's tensors of a T5 checkpoint: one token embedding (tied copies dropped), no decoder/lm_head."""
    embedding_seen = False
    for name, array in tensors:
        if name in _T5_EMBEDDINGS:
            if not embedding_seen:
                embedding_seen = True
                yield "shared.weight", array
        elif not name.startswith(("decoder.", "lm_head.")):
            yield name, array
    if not embedding_seen:
        raise UnsupportedModel(f"no token embedding ({' / '.join(_T5_EMBEDDINGS)}) in the T5 checkpoint")


_EXPERT = re.compile(r"^(?P<prefix>.+\.mlp\.experts)\.(?P<index>\d+)\.(?P<proj>\w+)\.weight$")


def stack_experts(tensors: Iterator[tuple[str, np.ndarray]], n_experts: int) -> Iterator[tuple[str, np.ndarray]]:
    """Per-expert ``...mlp.experts.<i>.<proj>.weight`` -> one ``(n_experts, out, in)`` tensor per projection."""
    pending: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    for name, array in tensors:
        match = _EXPERT.match(name)
        if match is None:
            yield name, array
            continue
        key = (match["prefix"], match["proj"])
        experts = pending.setdefault(key, {})
        experts[int(match["index"])] = array
        if len(experts) == n_experts:
            del pending[key]
            yield f"{key[0]}.{key[1]}.weight", np.stack([experts[i] for i in range(n_experts)])
    if pending:
        raise UnsupportedModel(f"incomplete experts (expected {n_experts} each): {sorted(pending)}")
