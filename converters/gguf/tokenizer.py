"""Tokenizers of a Hugging Face folder -> GGUF ``tokenizer.ggml.*`` metadata.

Byte-level BPE (GPT-2 style, e.g. Qwen2 and our tiny-llm) and SentencePiece-style BPE (Llama /
Mistral ``tokenizer.json`` with byte fallback) are read with the ``gguf`` package's vocab classes;
WordPiece (BERT) is mapped to llama.cpp's phantom-space form; SentencePiece Unigram (T5) to llama.cpp's
``t5`` (UGM) model with its scores, whitespace flags and precompiled normalizer charsmap. Special token
ids, ``add_*_token`` flags, merges and the chat template come from ``gguf.SpecialVocab``.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import gguf

log = logging.getLogger(__name__)

# pre-tokenizer regexes of tokenizer.json -> llama.cpp's pre-tokenizer names
_KNOWN_PRE_REGEXES = {
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "qwen2",  # noqa: E501
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "llama-bpe",  # noqa: E501
}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _pre_tokenizer_name(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name for the pre-tokenizer (``gpt-2`` for a plain ByteLevel one)."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    for step in steps:
        if step.get("type") == "Split":
            regex = (step.get("pattern") or {}).get("Regex", "")
            if regex in _KNOWN_PRE_REGEXES:
                return _KNOWN_PRE_REGEXES[regex]
            log.warning("unknown pre-tokenizer regex; llama.cpp will use its default split")
            return "default"
    if any(step.get("type") == "ByteLevel" and step.get("use_regex", True) for step in steps):
        # SmolLM / StarCoder split every digit before the GPT-2 regex
        digits = any(step.get("type") == "Digits" and step.get("individual_digits") for step in steps)
        return "smollm" if digits else "gpt-2"
    return "default"


def _effective_tokenizer_json(src: Path, from_file: dict[str, Any]) -> dict[str, Any]:
    """The tokenizer pipeline transformers really runs for this folder.

    transformers 5 may rebuild the pre-tokenizer from the model type (Qwen2 gets its own regex
    whatever tokenizer.json says), and parity is measured against what it runs.
    """
    try:
        from transformers import AutoTokenizer

        loaded = AutoTokenizer.from_pretrained(src)
        backend = getattr(loaded, "backend_tokenizer", None)
        if backend is not None:
            data = json.loads(backend.to_str())
            return data if isinstance(data, dict) else from_file
    except (ImportError, OSError, ValueError) as exc:
        log.warning("transformers could not load the tokenizer of %s (%s); using tokenizer.json as is", src, exc)
    return from_file


def _special_ids(tokenizer_json: dict[str, Any]) -> set[int]:
    return {int(t["id"]) for t in tokenizer_json.get("added_tokens", []) if t.get("special")}


def _pad_to(tokens: list[bytes], types: list[int], scores: list[float], n_vocab: int) -> None:
    """Embedding rows beyond the tokenizer's ids get unused placeholder tokens."""
    for index in range(len(tokens), n_vocab):
        tokens.append(f"[PAD{index}]".encode())
        types.append(int(gguf.TokenType.UNUSED))
        scores.append(-1000.0)


def _spm_space_prefix(tokenizer_json: dict[str, Any]) -> bool:
    """Whether the SentencePiece pipeline prepends U+2581 (Llama-2, Phi-3: yes; Gemma: no)."""
    steps: list[dict[str, Any]] = []
    for part in ("normalizer", "pre_tokenizer"):
        node = tokenizer_json.get(part) or {}
        steps.extend(node.get("normalizers") or node.get("pretokenizers") or [node])
    for step in steps:
        if step.get("type") == "Prepend" and step.get("prepend") == "\u2581":
            return True
        if step.get("type") == "Metaspace" and step.get("prepend_scheme", "always") != "never":
            return bool(step.get("add_prefix_space", True))
    return False


def _bpe_like(src: Path, tokenizer_json: dict[str, Any]) -> tuple[str, Any]:
    model = tokenizer_json.get("model", {})
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        return "llama", gguf.LlamaHfVocab(src)
    return "gpt2", gguf.BpeVocab(src)


def add_bpe_vocab(writer: gguf.GGUFWriter, src: Path, n_vocab: int) -> None:
    """Write a BPE vocabulary (``gpt2`` byte-level or ``llama`` byte-fallback) and its specials."""
    tokenizer_json = _read_json(src / "tokenizer.json")
    if not tokenizer_json:
        raise ValueError(f"{src} has no tokenizer.json; GGUF conversion needs a fast tokenizer")
    model_name, vocab = _bpe_like(src, tokenizer_json)
    specials = _special_ids(tokenizer_json)
    tokens: list[bytes] = []
    scores: list[float] = []
    types: list[int] = []
    for index, (text, score, kind) in enumerate(vocab.all_tokens()):
        tokens.append(text)
        # SentencePiece-style BPE ranks pieces by score; the vocab is in merge order
        scores.append(-float(index) if model_name == "llama" and kind == gguf.TokenType.NORMAL else float(score))
        types.append(int(gguf.TokenType.CONTROL if index in specials else kind))
    if len(tokens) > n_vocab:
        # ids past the embedding rows can never be produced; llama.cpp refuses a longer token list
        log.warning("%s: %d tokenizer ids beyond vocab_size %d dropped", src, len(tokens) - n_vocab, n_vocab)
        del tokens[n_vocab:], types[n_vocab:], scores[n_vocab:]
    _pad_to(tokens, types, scores, n_vocab)
    writer.add_tokenizer_model(model_name)
    effective = _effective_tokenizer_json(src, tokenizer_json) if model_name == "gpt2" else {}
    writer.add_tokenizer_pre(_pre_tokenizer_name(effective) if model_name == "gpt2" else "default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if model_name == "llama":
        writer.add_token_scores(scores)
        writer.add_add_space_prefix(_spm_space_prefix(tokenizer_json))
    gguf.SpecialVocab(src, load_merges=model_name == "gpt2", n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)


def _phantom(token: str) -> str:
    """WordPiece -> llama.cpp WPM: word starts get U+2581, continuations lose ``##``."""
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def add_wordpiece_vocab(writer: gguf.GGUFWriter, src: Path, n_vocab: int) -> None:
    """Write a BERT WordPiece vocabulary as llama.cpp's ``bert`` tokenizer model."""
    tokenizer_json = _read_json(src / "tokenizer.json")
    vocab: dict[str, int] = tokenizer_json.get("model", {}).get("vocab") or {}
    if not vocab:
        vocab_txt = src / "vocab.txt"
        if not vocab_txt.is_file():
            raise ValueError(f"{src} has neither tokenizer.json nor vocab.txt")
        vocab = {line.rstrip("\n"): i for i, line in enumerate(vocab_txt.read_text(encoding="utf-8").splitlines())}
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    specials = _special_ids(tokenizer_json)
    tokens = [_phantom(text).encode("utf-8") for text, _ in by_id]
    types = [
        int(gguf.TokenType.CONTROL if i in specials or (text.startswith("[") and text.endswith("]")) else 1)
        for text, i in by_id
    ]
    scores = [0.0] * len(tokens)
    _pad_to(tokens, types, scores, n_vocab)
    normalizer = tokenizer_json.get("normalizer") or {}
    lowercase = bool(normalizer.get("lowercase", _read_json(src / "tokenizer_config.json").get("do_lower_case", True)))
    strip_accents = normalizer.get("strip_accents")
    strip = lowercase if strip_accents is None else bool(strip_accents)
    writer.add_tokenizer_model("bert")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_bool("tokenizer.ggml.normalizer.lowercase", lowercase)
    writer.add_bool("tokenizer.ggml.normalizer.strip_accents", strip)
    gguf.SpecialVocab(src, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)


def _unigram_pipeline(tokenizer_json: dict[str, Any]) -> tuple[bool, bool, bytes]:
    """``(add_space_prefix, remove_extra_whitespaces, precompiled_charsmap)`` of a Unigram tokenizer.json.

    T5's files normalize with SentencePiece's precompiled charsmap, collapse runs of spaces (``Replace``
    of `` {2,}``, or ``WhitespaceSplit`` before the Metaspace) and prepend U+2581 (Metaspace).
    """
    steps: list[dict[str, Any]] = []
    for part in ("normalizer", "pre_tokenizer"):
        node = tokenizer_json.get(part) or {}
        steps.extend(node.get("normalizers") or node.get("pretokenizers") or [node])
    charsmap = b""
    merge_spaces = False
    for step in steps:
        kind = step.get("type")
        if kind == "Precompiled" and step.get("precompiled_charsmap"):
            charsmap = base64.b64decode(step["precompiled_charsmap"])
        elif kind == "WhitespaceSplit" or (
            kind == "Replace" and (step.get("pattern") or {}).get("Regex") == " {2,}" and step.get("content") == " "
        ):
            merge_spaces = True
    return _spm_space_prefix(tokenizer_json), merge_spaces, charsmap


def add_unigram_vocab(writer: gguf.GGUFWriter, src: Path, n_vocab: int) -> None:
    """Write a SentencePiece Unigram vocabulary (T5, sentence-t5, GTR) as llama.cpp's ``t5`` (UGM) model."""
    tokenizer_json = _read_json(src / "tokenizer.json")
    model = tokenizer_json.get("model") or {}
    pieces: list[list[Any]] = model.get("vocab") or []
    unk_id = model.get("unk_id")
    specials = _special_ids(tokenizer_json)
    tokens: list[bytes] = []
    scores: list[float] = []
    types: list[int] = []
    for index, (piece, score) in enumerate(pieces):
        kind = gguf.TokenType.NORMAL
        if index == unk_id:
            kind = gguf.TokenType.UNKNOWN
        elif index in specials:
            kind = gguf.TokenType.CONTROL
        elif model.get("byte_fallback") and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            kind = gguf.TokenType.BYTE
        tokens.append(str(piece).encode("utf-8"))
        scores.append(float(score))
        types.append(int(kind))
    # tokens added on top of the Unigram model (T5's <extra_id_N> sentinels): user-defined, as llama.cpp's
    # converter writes the ones of added_tokens.json
    for added in tokenizer_json.get("added_tokens", []):
        index = int(added["id"])
        if index < len(tokens):
            continue  # one of the Unigram pieces, typed above
        _pad_to(tokens, types, scores, index + 1)
        tokens[index] = str(added["content"]).encode("utf-8")
        types[index] = int(gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED)
    if len(tokens) > n_vocab:
        log.warning("%s: %d tokenizer ids beyond vocab_size %d dropped", src, len(tokens) - n_vocab, n_vocab)
        del tokens[n_vocab:], types[n_vocab:], scores[n_vocab:]
    _pad_to(tokens, types, scores, n_vocab)
    space_prefix, merge_spaces, charsmap = _unigram_pipeline(tokenizer_json)
    writer.add_tokenizer_model("t5")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(space_prefix)
    writer.add_remove_extra_whitespaces(merge_spaces)
    if charsmap:
        writer.add_precompiled_charsmap(charsmap)
    gguf.SpecialVocab(src, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)


def add_vocab(writer: gguf.GGUFWriter, src: Path, n_vocab: int, is_encoder: bool) -> str:
    """Write whichever tokenizer the folder has; return its GGUF model name."""
    model = _read_json(src / "tokenizer.json").get("model", {})
    if model.get("type") == "Unigram":
        add_unigram_vocab(writer, src, n_vocab)
        return "t5"
    if is_encoder or model.get("type") == "WordPiece":
        add_wordpiece_vocab(writer, src, n_vocab)
        return "bert"
    add_bpe_vocab(writer, src, n_vocab)
    return "llama" if model.get("byte_fallback") else "gpt2"


def chat_template(src: Path) -> str | None:
    """The chat template of the folder (tokenizer_config.json or chat_template.jinja), if any."""
    template = gguf.SpecialVocab(src).chat_template
    return template if isinstance(template, str) else None
