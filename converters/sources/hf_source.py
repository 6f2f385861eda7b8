"""Hugging Face sources: a local model folder (config.json + weights + tokenizer files)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConversionError
from converters.options import ConvertOptions, InputSpec
from converters.sources.base import Feeds, Source, path_size
from converters.sources.torch_source import torch_reference

TASKS = ("feature-extraction", "text-classification", "image-classification", "text-generation")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "config.json",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin")
DEFAULT_SEQ_LEN = 16
MAX_TEXT_TOKENS = 64  # sample and calibration texts are truncated here
SAMPLE_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Edge devices run small models close to where the data is.",
    "A conversion stage turns training checkpoints into fast runtime artifacts.",
    "How many tokens does this sentence have?",
    "Quantization trades a little accuracy for a smaller and faster model.",
    "It rained all night, so the river was high in the morning.",
    "Please summarise the meeting notes before Friday.",
    "Cosine similarity compares the direction of two vectors.",
)
_CAUSAL_TYPES = ("gpt2", "gpt_neo", "gptj", "llama", "mistral", "qwen2", "phi", "opt", "bloom", "falcon", "gemma")
_VISION_TYPES = ("vit", "deit", "beit", "convnext", "resnet", "mobilenet_v2", "swin", "efficientnet", "dinov2")


def is_hf_folder(path: Path) -> bool:
    """A folder with a config.json."""
    return path.is_dir() and (path / "config.json").is_file()


def detect_task(config: Any) -> str:
    """The task a config was built for, from its architectures and model type."""
    archs = list(getattr(config, "architectures", None) or [])
    for arch in archs:
        if arch.endswith("ForSequenceClassification"):
            return "text-classification"
        if arch.endswith("ForImageClassification"):
            return "image-classification"
        if arch.endswith(("ForCausalLM", "LMHeadModel")):
            return "text-generation"
    model_type = getattr(config, "model_type", "")
    if model_type in _CAUSAL_TYPES:
        return "text-generation"
    if model_type in _VISION_TYPES:
        return "image-classification"
    return "feature-extraction"


def _load_model(path: Path, task: str) -> Any:
    import transformers as tf

    auto = {
        "feature-extraction": tf.AutoModel,
        "text-classification": tf.AutoModelForSequenceClassification,
        "image-classification": tf.AutoModelForImageClassification,
        "text-generation": tf.AutoModelForCausalLM,
    }[task]
    try:
        model = auto.from_pretrained(str(path), local_files_only=True, attn_implementation="eager")
    except Exception as exc:
        raise ConversionError(
            f"could not load {path} as a {task} model: {exc}".splitlines()[0][:300],
            "check that the folder holds intact weights (model.safetensors or pytorch_model.bin) for its config.json",
        ) from exc
    model.eval()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return model


def _wrap(model: Any, task: str) -> tuple[Any, list[str]]:
    import torch

    class TextWrapper(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask)
            if task != "feature-extraction":
                return out.logits
            hidden = out.last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return hidden, pooled

    class ImageWrapper(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values: torch.Tensor) -> Any:
            return self.inner(pixel_values=pixel_values).logits

    if task == "image-classification":
        return ImageWrapper(model).eval(), ["logits"]
    names = ["last_hidden_state", "sentence_embedding"] if task == "feature-extraction" else ["logits"]
    return TextWrapper(model).eval(), names


def _inputs(config: Any, task: str, opts: ConvertOptions) -> list[InputSpec]:
    if opts.example_inputs:
        return [
            InputSpec(s.name, s.dtype, s.dims, (0,) if s.dtype.startswith("float") else (0, 1))
            for s in opts.example_inputs
        ]
    if task == "image-classification":
        size = int(getattr(config, "image_size", 224) or 224)
        channels = int(getattr(config, "num_channels", 3) or 3)
        return [InputSpec("pixel_values", "float32", (1, channels, size, size), (0,))]
    return [
        InputSpec("input_ids", "int64", (1, DEFAULT_SEQ_LEN), (0, 1)),
        InputSpec("attention_mask", "int64", (1, DEFAULT_SEQ_LEN), (0, 1)),
    ]


def _tokenizer(path: Path, inputs: list[InputSpec], vocab: int) -> Any:
    """texts -> padded feeds with the folder's tokenizer, or None when it has no usable one."""
    if not (path / "tokenizer.json").is_file() and not (path / "vocab.txt").is_file():
        return None
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        usable = tok.pad_token is not None and len(tok(SAMPLE_TEXTS[0])["input_ids"]) > 0
    except Exception:
        return None
    if not usable:
        return None

    def tokenize(texts: list[str]) -> Feeds:
        enc = tok(texts, padding=True, truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="np")
        feeds = {s.name: np.asarray(enc[s.name]).astype(s.dtype) for s in inputs if s.name in enc}
        if "input_ids" in feeds:
            feeds["input_ids"] = np.minimum(feeds["input_ids"], vocab - 1)
        return feeds

    # a tokenizer that does not produce every model input cannot feed it
    return tokenize if len(tokenize(list(SAMPLE_TEXTS[:1]))) == len(inputs) else None


def load_hf_folder(path: Path, opts: ConvertOptions) -> Source:
    """Load a local Hugging Face model folder; the task comes from --task or the config."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise ConversionError(
            f"{path}/config.json is not a Hugging Face config: {exc}".splitlines()[0][:300],
            "point at a folder saved with save_pretrained()",
        ) from exc
    if not any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir()):
        raise ConversionError(
            f"{path} has a config.json but no weights", "add model.safetensors (save_pretrained writes it)"
        )
    task = opts.task or detect_task(config)
    if task not in TASKS:
        raise ConversionError(
            f"--task {task!r} is not supported for Hugging Face folders", f"use one of {', '.join(TASKS)}"
        )
    wrapper, names = _wrap(_load_model(path, task), task)
    inputs = _inputs(config, task, opts)
    vocab = int(getattr(config, "vocab_size", 2) or 2)
    src = Source(
        kind="huggingface",
        framework="torch",
        path=path,
        model=wrapper,
        inputs=inputs,
        output_names=names,
        reference=torch_reference(wrapper, inputs),
        task=task,
        int_high=vocab,
        size_bytes=sum(path_size(p) for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES),
        extra_files=[path / n for n in TOKENIZER_FILES if (path / n).is_file()],
        info={
            "framework": "torch",
            "kind": "huggingface",
            "path": str(path),
            "model_type": getattr(config, "model_type", ""),
            "architectures": list(config.architectures or []),
        },
        primary_output="sentence_embedding" if task == "feature-extraction" else "",
    )
    _describe(src, path, config, inputs, vocab)
    return src


def _describe(src: Source, path: Path, config: Any, inputs: list[InputSpec], vocab: int) -> None:
    """Sample texts and the manifest ``extra`` the runtime needs (tokenizer, pooling, labels)."""
    task = src.task
    if task != "image-classification":
        tokenize = _tokenizer(path, inputs, vocab)
        if tokenize is not None:
            src.tokenize = tokenize
            src.sample_feeds = lambda batch: tokenize([SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)] for i in range(batch)])
        src.extra = {"max_seq_len": int(getattr(config, "max_position_embeddings", 0) or 0)}
        if (path / "tokenizer.json").is_file():
            src.extra["tokenizer"] = "tokenizer.json"
    if task == "feature-extraction":
        src.extra.update({"pooling": "mean", "embedding_output": "sentence_embedding"})
    if task in ("text-classification", "image-classification"):
        src.extra["labels"] = {str(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
