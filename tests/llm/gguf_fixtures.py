"""Builders of tiny Hugging Face folders for the GGUF architecture tests (no pytest, no conftest).

Tokenizers: a SentencePiece-style BPE with byte fallback (``llama2`` style prepends U+2581 like
Llama-2 and Phi-3; ``gemma`` style does not), and byte-level BPEs with the Llama-3 regex or
SmolLM's digit split. Models: tiny random configs (hidden 64, 2 layers, vocab 512) of each family.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

SPIECE = "\u2581"
LLAMA3_REGEX = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
# (specials in id order, bos, eos) per SentencePiece style
SPM_SPECIALS = {
    "llama2": (["<unk>", "<s>", "</s>"], "<s>", "</s>"),
    "phi3": (["<unk>", "<s>", "</s>"], "<s>", "</s>"),
    "gemma": (["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"], "<bos>", "<eos>"),
}
# Phi-3 appends its chat tokens after the SentencePiece vocabulary (llama.cpp looks up <|endoftext|>
# by text when the model name says phi3)
ADDED_AFTER = {"phi3": ["<|endoftext|>", "<|end|>"], "gemma": ["<start_of_turn>", "<end_of_turn>"]}
# the class the real checkpoints name in tokenizer_config.json (transformers 5 rebuilds its pipeline)
SPM_CLASSES = {"llama2": "LlamaTokenizer", "phi3": "LlamaTokenizer", "gemma": "GemmaTokenizer"}


def _training_texts() -> list[str]:
    from pydoc_data.topics import topics

    return list(topics.values())[:30]


def build_spm_tokenizer(folder: Path, style: str) -> Path:
    """A 512-token BPE with byte fallback (``<0x00>``..``<0xFF>``), as Llama-2 / Gemma ship it."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials, bos, eos = SPM_SPECIALS[style]
    unk = "<unk>"
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token=unk, byte_fallback=True, fuse_unk=True))
    added = ADDED_AFTER.get(style, [])
    steps = [normalizers.Replace(" ", SPIECE)]
    if style != "gemma":
        steps.insert(0, normalizers.Prepend(SPIECE))
    tok.normalizer = normalizers.Sequence(steps)
    # split at word starts while training only, so merges never span words (SentencePiece's default)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme="never")
    trainer = trainers.BpeTrainer(
        vocab_size=512 - len(added), special_tokens=specials + byte_tokens, show_progress=False
    )
    tok.train_from_iterator(_training_texts(), trainer=trainer)
    data = json.loads(tok.to_str())
    data["pre_tokenizer"] = None
    # byte pieces are ordinary vocabulary in SentencePiece, not added special tokens
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in specials]
    tok = Tokenizer.from_str(json.dumps(data))
    tok.decoder = decoders.Sequence(
        [decoders.Replace(SPIECE, " "), decoders.ByteFallback(), decoders.Fuse()]
        + ([decoders.Strip(" ", 1, 0)] if style != "gemma" else [])
    )
    tok.add_special_tokens(added)
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, specials.index(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=unk)
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = SPM_CLASSES[style]
    config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def build_byte_level_tokenizer(folder: Path, style: str) -> Path:
    """A 512-token byte-level BPE with Llama-3's split regex (``llama3``) or SmolLM's digits (``smollm``)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if style == "llama3":
        split = pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False)
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    else:
        digits = pre_tokenizers.Digits(individual_digits=True)
        tok.pre_tokenizer = pre_tokenizers.Sequence([digits, pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_texts(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    return folder


_COMMON: dict[str, Any] = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "initializer_range": 0.3,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
# about 1/sqrt(hidden): random layers neither blow activations up nor flatten the logits
INIT_RANGE = 0.1
_GEMMA = {"head_dim": 16, "query_pre_attn_scalar": 16, "hidden_activation": "gelu_pytorch_tanh"}
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
LONGROPE = {
    "rope_type": "longrope",
    "rope_theta": 10000.0,
    "short_factor": [1.0, 1.05, 1.1, 1.2, 1.4, 1.8, 2.5, 3.0],
    "long_factor": [1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 12.0, 16.0],
}
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 128}
GEMMA3_TEXT = {**_GEMMA, "sliding_window": 256, "layer_types": ["sliding_attention", "full_attention"]}
TINY_SIGLIP = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
# kind -> (config class, model class, config overrides)
DECODER_KINDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16, "tie_word_embeddings": True}),
    "qwen3-moe": (
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        {
            "head_dim": 16,
            "moe_intermediate_size": 32,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "norm_topk_prob": True,
            "tie_word_embeddings": True,
        },
    ),
    # Qwen2.5/3 long-context YaRN (original context shrunk so the prompts are past it)
    "qwen3-yarn": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        {"head_dim": 16, "tie_word_embeddings": True, "rope_parameters": YARN},
    ),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", _GEMMA),
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {**_GEMMA, "sliding_window": 256, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0},
    ),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", GEMMA3_TEXT),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"tie_word_embeddings": False}),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512, "n_inner": 128},
    ),
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", {"tie_word_embeddings": True}),
    # Gemma 3 4B+ checkpoints are vision-language ones: only the text model goes to GGUF
    "gemma3-vl": (
        "Gemma3Config",
        "Gemma3ForConditionalGeneration",
        {
            "text_config": {**_COMMON, **GEMMA3_TEXT},
            "vision_config": {"model_type": "siglip_vision_model", **TINY_SIGLIP},
            "mm_tokens_per_image": 4,
            "boi_token_index": 509,
            "eoi_token_index": 510,
            "image_token_index": 511,
        },
    ),
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 256}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    # Llama 3.1/3.2 frequency scaling (original context shrunk so every branch of it is hit)
    "llama31": ("LlamaConfig", "LlamaForCausalLM", {"rope_parameters": LLAMA3_ROPE}),
    # Phi-3-128k / Phi-3.5 LongRoPE (prompts stay under the original context: short factors)
    "phi3-longrope": (
        "Phi3Config",
        "Phi3ForCausalLM",
        {"tie_word_embeddings": False, "original_max_position_embeddings": 256, "rope_parameters": LONGROPE},
    ),
}


def build_hf_decoder(kind: str, folder: Path, tokenizer_dir: Path, initializer_range: float = INIT_RANGE) -> Path:
    """Save a tiny random ``kind`` decoder (seeded) plus the tokenizer files of ``tokenizer_dir``."""
    import torch
    import transformers

    config_name, model_name, overrides = DECODER_KINDS[kind]
    config_cls, model_cls = getattr(transformers, config_name), getattr(transformers, model_name)
    settings = dict(_COMMON)
    if kind == "gpt2":
        settings = {k: settings[k] for k in ("vocab_size", "initializer_range", "bos_token_id", "eos_token_id")}
    if "text_config" in overrides:  # composite config: the text settings live in text_config
        settings = {}
        overrides = {**overrides, "text_config": {**overrides["text_config"], "initializer_range": initializer_range}}
    config = config_cls(**{**settings, **overrides, "initializer_range": initializer_range})
    torch.manual_seed(0)
    model = model_cls(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for item in tokenizer_dir.iterdir():
        shutil.copy(item, folder / item.name)
    return folder


# test case -> (model kind, tokenizer kind, GGUF arch, GGUF tokenizer model, tokenizer pre)
CASES = {
    "qwen3": ("qwen3", "bpe", "qwen3", "gpt2", "gpt-2"),
    "qwen3-yarn": ("qwen3-yarn", "bpe", "qwen3", "gpt2", "gpt-2"),
    "qwen3-moe": ("qwen3-moe", "bpe", "qwen3moe", "gpt2", "gpt-2"),
    "gemma": ("gemma", "spm-gemma", "gemma", "llama", None),
    "gemma2": ("gemma2", "spm-gemma", "gemma2", "llama", None),
    "gemma3": ("gemma3", "spm-gemma", "gemma3", "llama", None),
    "gemma3-vl": ("gemma3-vl", "spm-gemma", "gemma3", "llama", None),
    "phi3": ("phi3", "spm-phi3", "phi3", "llama", None),
    "gpt2": ("gpt2", "bpe", "gpt2", "gpt2", "gpt-2"),
    "starcoder2": ("starcoder2", "smollm", "starcoder2", "gpt2", "smollm"),
    "mistral": ("mistral", "spm-llama2", "llama", "llama", None),
    "qwen2": ("qwen2", "bpe", "qwen2", "gpt2", "qwen2"),
    "llama2-spm": ("llama", "spm-llama2", "llama", "llama", None),
    "llama3-bpe": ("llama", "llama3", "llama", "gpt2", "llama-bpe"),
    "llama31-rope": ("llama31", "llama3", "llama", "gpt2", "llama-bpe"),
    "phi3-longrope": ("phi3-longrope", "spm-phi3", "phi3", "llama", None),
}


# T5 / sentence-t5 / GTR: a SentencePiece Unigram tokenizer (ids 0-2 = <pad>, </s>, <unk> as in T5)
T5_SPECIALS = ["<pad>", "</s>", "<unk>"]
T5_TOKENIZER_SIZE = 500  # fewer pieces than embedding rows, as T5 (32100 pieces, 32128 rows)
# kind -> (model class, config overrides): T5 v1.0 (ReLU) and v1.1 / sentence-t5 / GTR (gated GELU)
T5_KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "t5-relu": ("T5EncoderModel", {"feed_forward_proj": "relu"}),
    "t5-gated-gelu": ("T5EncoderModel", {"feed_forward_proj": "gated-gelu"}),
    # a full encoder-decoder checkpoint: its encoder is what goes to GGUF
    "t5-seq2seq": ("T5ForConditionalGeneration", {"feed_forward_proj": "gated-gelu"}),
}


def whitespace_charsmap(mapping: dict[str, str]) -> bytes:
    """A SentencePiece precompiled charsmap replacing single ASCII characters (e.g. tab -> space).

    The layout SentencePiece writes and both llama.cpp and ``tokenizers`` read: a little-endian uint32
    with the trie's size in bytes, the trie (a darts-clone double array of uint32 units: a node's child
    for byte ``c`` sits at ``offset ^ c`` and carries ``c`` as its label; bit 8 says a key ends there and
    its ``offset`` then leads to a unit whose bit 31 is set and whose low bits index the replacement),
    then the NUL-terminated replacement strings. Real charsmaps (T5's ``nmt_nfkc``) hold all of NFKC;
    this one only the whitespace folding T5 relies on.
    """
    units = [0] * 512
    children = 256  # the root's offset: its child for byte c is unit 256 ^ c
    units[0] = children << 10
    replacements = b""
    leaf = 300  # value units, away from every child slot
    for key, replacement in mapping.items():
        byte = key.encode("ascii")
        if len(byte) != 1:
            raise ValueError(f"single ASCII characters only, got {key!r}")
        child = children ^ byte[0]
        units[child] = ((child ^ leaf) << 10) | (1 << 8) | byte[0]
        units[leaf] = (1 << 31) | len(replacements)
        replacements += replacement.encode("utf-8") + b"\0"
        leaf += 1
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + replacements


# what T5's nmt_nfkc charsmap does to ASCII whitespace
T5_WHITESPACE = {"\t": " ", "\n": " ", "\r": " "}


def build_unigram_tokenizer(folder: Path) -> Path:
    """A 500-piece Unigram tokenizer.json laid out as T5's: precompiled charsmap, spaces merged, Metaspace.

    The pipeline of the real T5 / sentence-t5 files (``Precompiled`` + ``Replace(" {2,}")``,
    ``WhitespaceSplit`` + ``Metaspace``, ``</s>`` appended); the charsmap only folds tabs and newlines
    into spaces (``whitespace_charsmap``), as T5's NFKC one does for ASCII.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(whitespace_charsmap(T5_WHITESPACE)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme="always")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=T5_TOKENIZER_SIZE, special_tokens=T5_SPECIALS, unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(_training_texts(), trainer=trainer)
    # the trainer sums scores in parallel (last digits vary run to run): rounded and ordered, the
    # fixture is the same every time
    data = json.loads(tok.to_str())
    pieces = data["model"]["vocab"][len(T5_SPECIALS) :]
    rounded = sorted(([piece, round(score, 2)] for piece, score in pieces), key=lambda item: (-item[1], item[0]))
    data["model"]["vocab"] = data["model"]["vocab"][: len(T5_SPECIALS)] + rounded
    tok = Tokenizer.from_str(json.dumps(data))
    tok.decoder = decoders.Metaspace(replacement=SPIECE, prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", T5_SPECIALS.index("</s>"))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    return folder


def build_hf_t5(kind: str, folder: Path, tokenizer_dir: Path, initializer_range: float = 1.0) -> Path:
    """Save a tiny random T5 encoder (or encoder-decoder) of ``kind`` (seeded) with the Unigram tokenizer."""
    import torch
    import transformers

    model_name, overrides = T5_KINDS[kind]
    config = transformers.T5Config(
        vocab_size=512,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        initializer_factor=initializer_range,
        **overrides,
    )
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for item in tokenizer_dir.iterdir():
        shutil.copy(item, folder / item.name)
    return folder


# sentence-transformers Dense after pooling: sentence-t5 / GTR (no bias, identity) and LaBSE-style (bias, tanh)
DENSE_KINDS = {"identity": (False, "torch.nn.Identity"), "tanh-bias": (True, "torch.nn.Tanh")}


def build_sentence_t5(folder: Path, t5_dir: Path, dense: str = "identity") -> Path:
    """A sentence-transformers folder laid out as sentence-t5 / GTR: T5 encoder, mean pooling, a seeded
    ``2_Dense`` projection (``DENSE_KINDS``) and ``3_Normalize``, saved by sentence-transformers itself."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    bias, activation = DENSE_KINDS[dense]
    transformer = models.Transformer(str(t5_dir))
    width = transformer.get_embedding_dimension()
    pooling = models.Pooling(width, pooling_mode="mean")
    torch.manual_seed(1)
    activation_fn = torch.nn.Tanh() if activation == "torch.nn.Tanh" else torch.nn.Identity()
    projection = models.Dense(width, width, bias=bias, activation_function=activation_fn)
    with torch.no_grad():  # a bias big enough to matter
        if bias:
            projection.linear.bias.normal_(0.0, 0.5)
    model = SentenceTransformer(modules=[transformer, pooling, projection, models.Normalize()], device="cpu")
    model.save(str(folder))
    return folder
