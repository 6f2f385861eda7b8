"""Tiny PyTorch and Hugging Face models built locally for the converter tests (never downloaded)."""

from __future__ import annotations

from pathlib import Path

MODULE_SOURCE = """
import torch


class TinyMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(16, 32)
        self.fc2 = torch.nn.Linear(32, 5)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class TinyCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, image):
        x = torch.relu(self.conv2(torch.relu(self.conv1(image))))
        return self.head(x.mean(dim=(2, 3)))


class TinyEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 32)
        layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(32, 3)

    def forward(self, ids):
        return self.head(self.encoder(self.embed(ids)).mean(dim=1))
"""

_TEXT = (
    "the quick brown fox jumps over lazy dog edge devices run small models close to where data is a conversion "
    "stage turns training checkpoints into fast runtime artifacts how many tokens does this sentence have "
    "quantization trades little accuracy for smaller and faster model it rained all night so river was high in "
    "morning please summarise meeting notes before friday cosine similarity compares direction of two vectors"
)
WORDS = tuple(_TEXT.split())


def write_module(folder: Path) -> Path:
    """``tiny_models.py`` defining TinyMLP, TinyCNN and TinyEncoder."""
    path = folder / "tiny_models.py"
    path.write_text(MODULE_SOURCE, encoding="utf-8")
    return path


def build_torch_zoo(folder: Path) -> dict[str, Path]:
    """TorchScript MLP, state-dict MLP and encoder, torch.export CNN, scripted encoder (not exportable)."""
    import importlib.util

    import torch

    module_path = write_module(folder)
    spec = importlib.util.spec_from_file_location("tiny_models_zoo", module_path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    mlp, cnn, enc = mod.TinyMLP().eval(), mod.TinyCNN().eval(), mod.TinyEncoder().eval()
    paths = {
        "module": module_path,
        "mlp_state": folder / "mlp.pth",
        "mlp_ts": folder / "mlp.pt",
        "cnn_pt2": folder / "cnn.pt2",
        "encoder_scripted": folder / "encoder_scripted.pt",
        "encoder_state": folder / "encoder.pth",
    }
    torch.save(mlp.state_dict(), paths["mlp_state"])
    torch.jit.save(torch.jit.trace(mlp, torch.randn(2, 16)), str(paths["mlp_ts"]))
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(cnn, (torch.randn(2, 3, 16, 16),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(paths["cnn_pt2"]))
    torch.save(enc.state_dict(), paths["encoder_state"])
    torch.jit.save(torch.jit.script(enc), str(paths["encoder_scripted"]))
    return paths


def write_wordpiece(folder: Path) -> None:
    """A hand-written WordPiece vocab, saved as a fast BERT tokenizer."""
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list(".,?!'-0123456789")
    vocab = specials + sorted(set(WORDS)) + letters + ["##" + ch for ch in letters]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(str(folder))


def write_bpe(folder: Path) -> None:
    """A tiny byte-level BPE trained on the word list, saved as a GPT-2 style fast tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [" ".join(WORDS)] * 4, vocab_size=300, min_frequency=1, show_progress=False, special_tokens=["<|endoftext|>"]
    )
    eos = "<|endoftext|>"
    PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token=eos, bos_token=eos, unk_token=eos, pad_token=eos
    ).save_pretrained(str(folder))


def build_hf_zoo(folder: Path) -> dict[str, Path]:
    """Tiny random BERT (classifier), DistilBERT (encoder), ViT (classifier) and GPT-2 folders."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    specs = {
        "bert": (
            tf.BertForSequenceClassification,
            tf.BertConfig(vocab_size=200, num_labels=3, **small),
            write_wordpiece,
        ),
        "distilbert": (
            tf.DistilBertModel,
            tf.DistilBertConfig(vocab_size=200, dim=32, n_layers=2, n_heads=4, hidden_dim=64),
            write_wordpiece,
        ),
        "vit": (tf.ViTForImageClassification, tf.ViTConfig(image_size=32, patch_size=8, num_labels=3, **small), None),
        "gpt2": (
            tf.GPT2LMHeadModel,
            tf.GPT2Config(
                vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0
            ),
            write_bpe,
        ),
    }
    paths = {}
    for name, (cls, config, tokenizer) in specs.items():
        path = folder / name
        path.mkdir()
        cls(config).eval().save_pretrained(str(path))
        if tokenizer is not None:
            tokenizer(path)
        paths[name] = path
    return paths


def build_static_programs(folder: Path) -> dict[str, Path]:
    """``torch.export`` programs saved without dynamic_shapes: a CNN (batch-free graph) and a fixed-batch view."""
    import torch

    class Flatten2(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x.view(2, -1) * 0.5).tanh()  # the batch of 2 is baked into the graph

    torch.manual_seed(0)
    spec = importlib_module(write_module(folder))
    paths = {"cnn_static": folder / "cnn_static.pt2", "view_static": folder / "view_static.pt2"}
    torch.export.save(torch.export.export(spec.TinyCNN().eval(), (torch.randn(2, 3, 16, 16),)), paths["cnn_static"])
    torch.export.save(torch.export.export(Flatten2().eval(), (torch.randn(2, 3, 4),)), paths["view_static"])
    return paths


def importlib_module(path: Path) -> object:
    """Import ``tiny_models.py`` under a private name."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_models_static", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
