"""Per-family facts of the decoder architectures: GGUF arch, hyper-parameter keys and tensor transforms.

Each family follows what llama.cpp's loader for that arch reads (``src/models/<arch>.cpp``) and what
its reference converter does to the tensors:

- ``llama`` q/k rows are permuted to llama.cpp's interleaved rotary layout; the NeoX-rotary families
  (qwen2/3, gemma, phi3, starcoder2) keep HF's half-split layout as it is.
- Gemma's RMSNorm scales by ``1 + weight``: llama.cpp's plain RMSNorm gets ``weight + 1``.
- GPT-2 stores its linear layers as ``Conv1D`` (``in x out``): they are transposed.
- Gemma 1/2 read the output projection from ``token_embd``: a stored ``lm_head`` is dropped.
- T5 encoders (``t5encoder``, embeddings): relative position buckets instead of RoPE, RMSNorm without
  bias, ReLU (T5 v1.0) or gated-GELU (v1.1, sentence-t5, GTR) MLP; the decoder half of a
  ``T5ForConditionalGeneration`` is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gguf
import numpy as np

Config = dict[str, Any]
HparamWriter = Callable[[gguf.GGUFWriter, Config], None]


class UnsupportedModel(ValueError):
    """The Hugging Face folder holds an architecture or layout this converter does not handle."""


def hparam(cfg: Config, *keys: str, default: Any = None) -> Any:
    """The first of ``keys`` present (not None) in ``cfg``; ``default`` otherwise."""
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    if default is None:
        raise KeyError(f"config.json has none of {', '.join(keys)}")
    return default


def rope_parameters(cfg: Config, layer_type: str = "full_attention") -> Config:
    """RoPE settings: transformers 5 nests them in ``rope_parameters`` (per layer type for Gemma 3)."""
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if layer_type in params:
        params = params[layer_type]
    merged = {"rope_theta": cfg.get("rope_theta", 10000.0)}
    merged.update(params)
    return merged


def _common(writer: gguf.GGUFWriter, cfg: Config) -> None:
    n_head = int(hparam(cfg, "num_attention_heads", "n_head"))
    n_embd = int(hparam(cfg, "hidden_size", "n_embd"))
    writer.add_context_length(int(hparam(cfg, "max_position_embeddings", "n_positions", default=2048)))
    writer.add_embedding_length(n_embd)
    writer.add_block_count(int(hparam(cfg, "num_hidden_layers", "n_layer")))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(hparam(cfg, "num_key_value_heads", default=n_head)))
    writer.add_vocab_size(int(cfg["vocab_size"]))


# rope types handled by frequency-factor tensors (rope_tensors) rather than header keys
_ROPE_IN_TENSORS = ("default", "llama3", "longrope", "su")
_ROPE_KINDS = ("default", "linear", "yarn", "llama3", "longrope")


def _rotary(writer: gguf.GGUFWriter, cfg: Config, head_dim: int) -> None:
    rope = rope_parameters(cfg)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_rope_dimension_count(int(head_dim * float(rope.get("partial_rotary_factor", 1.0))))
    factor = rope.get("factor")
    kind = str(rope.get("rope_type", "default")).lower()
    if kind == "linear" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(factor))
    elif kind == "yarn" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(factor))
        original = rope.get("original_max_position_embeddings") or hparam(cfg, "max_position_embeddings")
        writer.add_rope_scaling_orig_ctx_len(int(original))
        for key, add in (
            ("attention_factor", writer.add_rope_scaling_yarn_attn_factor),
            ("beta_fast", writer.add_rope_scaling_yarn_beta_fast),
            ("beta_slow", writer.add_rope_scaling_yarn_beta_slow),
        ):
            if rope.get(key) is not None:
                add(float(rope[key]))
    elif kind not in _ROPE_IN_TENSORS:
        raise UnsupportedModel(f"rope_type {kind!r} is not supported for GGUF (supported: {', '.join(_ROPE_KINDS)})")


def _head_dim(cfg: Config) -> int:
    n_embd = int(hparam(cfg, "hidden_size", "n_embd"))
    return int(cfg.get("head_dim") or n_embd // int(hparam(cfg, "num_attention_heads", "n_head")))


def rms_decoder(writer: gguf.GGUFWriter, cfg: Config) -> None:
    """Llama-style blocks: RMSNorm, gated MLP, RoPE (llama, mistral, qwen2, qwen3, gemma, phi3)."""
    _common(writer, cfg)
    head_dim = _head_dim(cfg)
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    _rotary(writer, cfg, head_dim)


def _swa_layers(writer: gguf.GGUFWriter, cfg: Config) -> None:
    """Sliding-window size and which layers slide (``layer_types`` in transformers 5 configs)."""
    if cfg.get("sliding_window"):
        writer.add_sliding_window(int(cfg["sliding_window"]))
    layer_types = cfg.get("layer_types")
    if layer_types:
        writer.add_sliding_window_pattern([kind == "sliding_attention" for kind in layer_types])


def gemma_swa(writer: gguf.GGUFWriter, cfg: Config) -> None:
    """Gemma 2/3: logit soft-capping, sliding-window layers, Gemma 3's local RoPE base."""
    rms_decoder(writer, cfg)
    for key, add in (
        ("attn_logit_softcapping", writer.add_attn_logit_softcapping),
        ("final_logit_softcapping", writer.add_final_logit_softcapping),
        ("rope_local_base_freq", writer.add_rope_freq_base_swa),  # transformers 4.x Gemma 3
    ):
        if cfg.get(key):
            add(float(cfg[key]))
    if "sliding_attention" in (cfg.get("rope_parameters") or {}):
        writer.add_rope_freq_base_swa(float(rope_parameters(cfg, "sliding_attention")["rope_theta"]))
    _swa_layers(writer, cfg)


def phi3(writer: gguf.GGUFWriter, cfg: Config) -> None:
    """Phi-3: fused qkv and gate_up tensors, partial rotary, original context for LongRoPE."""
    rms_decoder(writer, cfg)
    rope = rope_parameters(cfg)
    context = int(hparam(cfg, "max_position_embeddings"))
    original = int(
        rope.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings") or context
    )
    writer.add_rope_scaling_orig_ctx_len(original)
    if rope.get("long_factor"):
        # LongRoPE (Phi-3-128k, Phi-3.5): HF scales cos/sin by this; llama.cpp reads it from the header
        scale = context / original
        attn = math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0
        writer.add_rope_scaling_attn_factors(float(rope.get("attention_factor") or attn))
    # llama.cpp disables Phi SWA; 0 marks "no sliding window" as its converter does
    writer.add_sliding_window(int(cfg.get("sliding_window") or 0))


def qwen3_moe(writer: gguf.GGUFWriter, cfg: Config) -> None:
    """Qwen3 MoE: every layer sparse, top-k routing with renormalised weights (what llama.cpp runs)."""
    if cfg.get("mlp_only_layers") or int(cfg.get("decoder_sparse_step", 1)) != 1:
        raise UnsupportedModel("Qwen3 MoE with dense layers (mlp_only_layers / decoder_sparse_step) is not supported")
    if cfg.get("norm_topk_prob") is False:
        raise UnsupportedModel("Qwen3 MoE with norm_topk_prob=false is not supported (llama.cpp renormalises)")
    rms_decoder(writer, cfg)
    writer.add_expert_count(int(hparam(cfg, "num_experts", "num_local_experts")))
    writer.add_expert_used_count(int(cfg["num_experts_per_tok"]))
    writer.add_expert_feed_forward_length(int(cfg["moe_intermediate_size"]))


def layer_norm_decoder(writer: gguf.GGUFWriter, cfg: Config) -> None:
    """LayerNorm blocks with biases and a plain GELU MLP (gpt2 learned positions, starcoder2 RoPE)."""
    _common(writer, cfg)
    n_embd = int(hparam(cfg, "hidden_size", "n_embd"))
    writer.add_feed_forward_length(int(hparam(cfg, "intermediate_size", "n_inner", default=4 * n_embd)))
    writer.add_layer_norm_eps(float(hparam(cfg, "layer_norm_epsilon", "norm_epsilon", "layer_norm_eps")))
    if cfg.get("model_type") != "gpt2":
        _rotary(writer, cfg, _head_dim(cfg))


# llama.cpp's T5 graph: a gate tensor means gated GELU (tanh form, HF's gelu_new), none means ReLU
_T5_FFN = {"relu": False, "gated-gelu": True}
# llama_relative_position_bucket() hard-codes this distance
T5_MAX_DISTANCE = 128


def t5_encoder(writer: gguf.GGUFWriter, cfg: Config) -> None:
    """T5 encoder: relative attention buckets, RMSNorm eps, per-head width ``d_kv``; no RoPE."""
    ffn = str(cfg.get("feed_forward_proj", "relu"))
    if ffn not in _T5_FFN:
        raise UnsupportedModel(
            f"T5 feed_forward_proj {ffn!r} is not supported for GGUF (llama.cpp runs: {', '.join(_T5_FFN)})"
        )
    distance = int(cfg.get("relative_attention_max_distance", T5_MAX_DISTANCE))
    if distance != T5_MAX_DISTANCE:
        raise UnsupportedModel(
            f"T5 relative_attention_max_distance {distance} is not supported (llama.cpp uses {T5_MAX_DISTANCE})"
        )
    eps = float(cfg.get("layer_norm_epsilon", 1e-6))
    writer.add_context_length(int(cfg.get("n_positions") or 512))
    writer.add_embedding_length(int(cfg["d_model"]))
    writer.add_feed_forward_length(int(cfg["d_ff"]))
    writer.add_block_count(int(hparam(cfg, "num_layers", "num_hidden_layers")))
    writer.add_head_count(int(cfg["num_heads"]))
    writer.add_key_length(int(cfg["d_kv"]))
    writer.add_value_length(int(cfg["d_kv"]))
    writer.add_layer_norm_eps(eps)
    writer.add_layer_norm_rms_eps(eps)
    writer.add_relative_attn_buckets_count(int(cfg.get("relative_attention_num_buckets", 32)))
    writer.add_causal_attention(False)


def rope_tensors(cfg: Config) -> Iterator[tuple[str, np.ndarray]]:
    """Frequency-factor tensors llama.cpp takes from the file: Llama 3.x ``rope_freqs``, LongRoPE factors."""
    rope = rope_parameters(cfg)
    head_dim = _head_dim(cfg)
    if str(rope.get("rope_type", "")).lower() == "llama3":
        yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", _llama3_factors(rope, head_dim)
    elif rope.get("long_factor") and rope.get("short_factor"):
        n_rot = int(head_dim * float(rope.get("partial_rotary_factor", 1.0)))
        for key, tensor in (
            ("long_factor", gguf.MODEL_TENSOR.ROPE_FACTORS_LONG),
            ("short_factor", gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT),
        ):
            factors = np.asarray(rope[key], dtype=np.float32)
            if factors.shape != (n_rot // 2,):
                raise ValueError(f"rope {key} has {factors.size} entries; {n_rot // 2} expected")
            yield gguf.TENSOR_NAMES[tensor] + ".weight", factors


def _llama3_factors(rope: Config, head_dim: int) -> np.ndarray:
    """Llama 3.1's wavelength-dependent scaling of the rotary frequencies, one factor per pair."""
    freqs = 1.0 / float(rope["rope_theta"]) ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    original = float(rope.get("original_max_position_embeddings", 8192))
    wavelen = 2 * math.pi / freqs
    smooth = (original / wavelen - low) / (high - low)
    blended = 1 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < original / high, 1.0, np.where(wavelen > original / low, factor, blended))
    return out.astype(np.float32)


@dataclass(frozen=True)
class Family:
    """How one HF decoder class becomes a GGUF arch: header writer and tensor transforms."""

    arch: gguf.MODEL_ARCH
    hparams: HparamWriter = rms_decoder
    rotary_permute: bool = False
    norm_shift: float = 0.0
    conv1d_transpose: bool = False
    drop_lm_head: bool = False
    #: a vision-language checkpoint: the text model is converted (settings from ``text_config``)
    multimodal: bool = False
    #: mixture of experts: per-expert weights are stacked into ``ffn_*_exps``
    moe: bool = False
    #: T5 layout: token embeddings under ``shared``/``encoder.embed_tokens``, decoder half dropped
    t5: bool = False


DECODERS: dict[str, Family] = {
    "LlamaForCausalLM": Family(gguf.MODEL_ARCH.LLAMA, rotary_permute=True),
    "MistralForCausalLM": Family(gguf.MODEL_ARCH.LLAMA, rotary_permute=True),
    "Qwen2ForCausalLM": Family(gguf.MODEL_ARCH.QWEN2),
    "Qwen3ForCausalLM": Family(gguf.MODEL_ARCH.QWEN3),
    "Qwen3MoeForCausalLM": Family(gguf.MODEL_ARCH.QWEN3MOE, qwen3_moe, moe=True),
    "GemmaForCausalLM": Family(gguf.MODEL_ARCH.GEMMA, norm_shift=1.0, drop_lm_head=True),
    "Gemma2ForCausalLM": Family(gguf.MODEL_ARCH.GEMMA2, gemma_swa, norm_shift=1.0, drop_lm_head=True),
    "Gemma3ForCausalLM": Family(gguf.MODEL_ARCH.GEMMA3, gemma_swa, norm_shift=1.0),
    "Gemma3ForConditionalGeneration": Family(gguf.MODEL_ARCH.GEMMA3, gemma_swa, norm_shift=1.0, multimodal=True),
    "Phi3ForCausalLM": Family(gguf.MODEL_ARCH.PHI3, phi3),
    "GPT2LMHeadModel": Family(gguf.MODEL_ARCH.GPT2, layer_norm_decoder, conv1d_transpose=True),
    "Starcoder2ForCausalLM": Family(gguf.MODEL_ARCH.STARCODER2, layer_norm_decoder),
}
# T5 checkpoints whose encoder becomes a ``t5encoder`` embedding model
T5_ENCODERS: dict[str, Family] = {
    name: Family(gguf.MODEL_ARCH.T5ENCODER, t5_encoder, t5=True)
    for name in ("T5EncoderModel", "T5ForConditionalGeneration", "T5Model")
}
# config.json's model_type -> HF class, for folders whose config lacks "architectures"
MODEL_TYPES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "gemma3": "Gemma3ForConditionalGeneration",
    "phi3": "Phi3ForCausalLM",
    "gpt2": "GPT2LMHeadModel",
    "starcoder2": "Starcoder2ForCausalLM",
}
# GPT-2's Conv1D weights (in x out) that llama.cpp wants as (out x in)
CONV1D_SUFFIXES = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")
