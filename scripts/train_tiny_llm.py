"""Train and convert the embedded default model ``tiny-llm``.

A byte-level BPE tokenizer is trained with ``tokenizers`` on the text of CPython's
``pydoc_data/topics.py`` (it ships with every CPython), then a tiny Llama-architecture model is
trained with torch on the same text, laid out as ChatML conversations ("What is X?" -> the start of
the help text of X). The model is saved as a Hugging Face folder (config.json, safetensors, tokenizer
files, chat template) and converted by our own converter (``converters.gguf``) to GGUF Q8_0, written
as ``<out>/tiny-llm/1`` with a manifest carrying the converter's parity report.

Usage: ``python scripts/train_tiny_llm.py [--out edge_runner/defaults] [--seconds 1200] [--keep-hf DIR]``
(``--from-hf DIR`` converts a folder kept earlier without training again).
Needs the ``convert`` extra (torch, transformers, tokenizers, gguf) and llama-cpp-python. Seeded; the
step count is fixed, so reruns give the same weights on the same torch build (unless the time budget
cuts training short on a slow machine; the manifest records the steps actually done).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

SEED = 0
VOCAB_SIZE = 2048
SEQ_LEN = 128
BATCH_SIZE = 32
STEPS = 500
BOS, EOS, IM_START, IM_END = "<|endoftext|>", "<|im_end|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MODEL_CONFIG = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
}


def log(message: str) -> None:
    """Print one progress line, flushed so it shows up under pipes too."""
    print(f"[train_tiny_llm] {message}", flush=True)


def corpus() -> dict[str, str]:
    """Topic name -> help text, from the CPython standard library."""
    from pydoc_data.topics import topics

    return {name: text.strip() for name, text in sorted(topics.items())}


def training_texts(topics: dict[str, str]) -> list[str]:
    """Plain help texts plus ChatML conversations about each topic."""
    texts = [BOS + text for text in topics.values()]
    for name, text in topics.items():
        answer = text[:400].rsplit(" ", 1)[0]
        for question in (f"What is {name}?", f"Tell me about {name}.", f"Explain {name} in Python."):
            texts.append(f"{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n{answer}{IM_END}\n")
    return texts


def train_tokenizer(texts: list[str], folder: Path) -> Any:
    """Train a byte-level BPE on the corpus and save it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=BOS)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast


def token_stream(texts: list[str], tokenizer: Any) -> Any:
    """All texts tokenized and concatenated into one long int64 tensor."""
    import torch

    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer.encode(text, add_special_tokens=False))
    return torch.tensor(ids, dtype=torch.long)


def build_model(tokenizer: Any) -> Any:
    """A fresh tiny LlamaForCausalLM sized for the tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **MODEL_CONFIG,
    )
    return LlamaForCausalLM(config)


def train(model: Any, data: Any, steps: int, seconds: float) -> tuple[float, int]:
    """AdamW with cosine decay on random windows; stops at ``steps`` or after ``seconds``.

    Returns the last loss and the number of steps done (fewer than ``steps`` only on a slow machine).
    """
    import torch

    generator = torch.Generator().manual_seed(SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=3e-4)
    model.train()
    started, loss_value, done = time.monotonic(), float("nan"), 0
    for step in range(steps):
        starts = torch.randint(0, len(data) - SEQ_LEN - 1, (BATCH_SIZE,), generator=generator)
        batch = torch.stack([data[s : s + SEQ_LEN] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        loss_value, done = float(loss.detach()), step + 1
        if step % 50 == 0 or step == steps - 1:
            log(f"step {step}/{steps} loss {loss_value:.3f} ({time.monotonic() - started:.0f} s)")
        if time.monotonic() - started > seconds:
            log(f"time budget reached at step {step}")
            break
    model.eval()
    return loss_value, done


def build_hf_folder(folder: Path, seconds: float) -> dict[str, Any]:
    """Tokenizer + trained model saved as a Hugging Face folder; returns training facts for the manifest."""
    import torch

    random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    texts = training_texts(corpus())
    log(f"{len(texts)} training texts, {sum(map(len, texts))} characters")
    tokenizer = train_tokenizer(texts, folder)
    data = token_stream(texts, tokenizer)
    log(f"tokenizer: {len(tokenizer)} tokens; corpus: {len(data)} tokens")
    model = build_model(tokenizer)
    log(f"model: {sum(p.numel() for p in model.parameters())} parameters")
    loss, steps = train(model, data, STEPS, seconds)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    facts = {"train_loss": round(loss, 4), "train_steps": steps, "train_tokens": steps * BATCH_SIZE * SEQ_LEN}
    (folder / "training.json").write_text(json.dumps(facts))
    return facts


def main(argv: list[str] | None = None) -> int:
    """Train, convert and write ``<out>/tiny-llm/1``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "edge_runner" / "defaults")
    parser.add_argument("--seconds", type=float, default=1200.0, help="training time budget (a safety net)")
    parser.add_argument("--keep-hf", type=Path, default=None, help="also keep the Hugging Face folder here")
    parser.add_argument("--from-hf", type=Path, default=None, help="skip training: convert this kept folder")
    args = parser.parse_args(argv)

    from converters.gguf import convert_to_gguf

    with tempfile.TemporaryDirectory() as tmp:
        if args.from_hf:
            hf_dir = args.from_hf
            facts = json.loads((hf_dir / "training.json").read_text())
        else:
            hf_dir = args.keep_hf or Path(tmp) / "hf"
            hf_dir.mkdir(parents=True, exist_ok=True)
            facts = build_hf_folder(hf_dir, args.seconds)
        out = args.out / "tiny-llm" / "1"
        source = {"framework": "torch", "script": "scripts/train_tiny_llm.py", "dataset": "pydoc_data/topics.py"}
        manifest = convert_to_gguf(
            hf_dir,
            out,
            quantize="q8_0",
            name="tiny-llm",
            version=1,
            source=source,
            extra={**facts, "model_config": MODEL_CONFIG, "vocab_size": VOCAB_SIZE},
        )
    log(f"wrote {out} ({manifest.files[0].size} bytes); parity {manifest.parity}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
