"""Calibration data: a .npy/.npz file or a folder of them, or texts for text models, split into single-sample feeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converters.errors import ConversionError
from converters.options import InputSpec
from converters.sources.base import Feeds, Source, generated_feeds

MAX_SAMPLES = 64
MAX_PARITY_SAMPLES = 1024  # --parity-data: held-out sets are bigger than calibration sets
MAX_TEXTS = 512  # --calibration-texts: lines beyond this are not read
#: calibration texts of text models when --calibration-texts is not given: questions, reviews, news, code,
#: numbers, other languages, one-word and long sentences, so activation ranges see more than one register
DEFAULT_CALIBRATION_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email?",
    "Stock markets fell sharply on Monday after the central bank raised interest rates.",
    "The patient was prescribed antibiotics for a bacterial infection.",
    "I love this phone, the battery lasts two days and the camera is great.",
    "Terrible service, we waited an hour and the food was cold.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "The train to Berlin leaves at 7:45 from platform 3.",
    "What is the capital of Australia?",
    "Paris is the capital and most populous city of France.",
    "She signed the contract on 12 March 2021 for a total of $1.2 million.",
    "Please restart the server and check the logs for errors.",
    "Yes.",
    "The mitochondria is the powerhouse of the cell.",
    "Our quarterly revenue grew 14% year over year, driven by cloud subscriptions.",
    "Heavy rain is expected across the northern region tonight, with winds up to 80 km/h.",
    "He scored twice in the second half to win the championship final.",
    "Machine learning models can be compressed with quantization and pruning.",
    "Can you recommend a good vegetarian restaurant near the station?",
    "The court ruled that the company had violated consumer protection laws.",
    "Add two cups of flour, one egg and a pinch of salt, then stir until smooth.",
    "Der Zug hat zehn Minuten Verspätung.",
    "El gato duerme en el sofá.",
    "Install the package with pip and run the tests before opening a pull request.",
    "The museum's new exhibition covers three centuries of European painting.",
    "Why is the sky blue during the day and red at sunset?",
    "Customers who bought this item also bought a charger and a case.",
    "The algorithm runs in O(n log n) time and uses linear memory.",
    "Thanks, see you tomorrow!",
    "A long, winding road led through the mountains to a small village where the old bridge, "
    "built in the fifteenth century, still crossed the river.",
    "Error 404: the requested page could not be found on this server.",
)


def _from_file(path: Path, inputs: list[InputSpec]) -> Feeds:
    try:
        data = np.load(str(path), allow_pickle=False)
    except Exception as exc:
        raise ConversionError(
            f"calibration file {path} is not a readable .npy/.npz ({exc})", "save arrays with numpy.save / numpy.savez"
        ) from exc
    if isinstance(data, np.ndarray):
        if len(inputs) != 1:
            raise ConversionError(
                f"{path} holds one array but the model has {len(inputs)} inputs",
                "use an .npz with one array per input name: " + ", ".join(s.name for s in inputs),
            )
        return {inputs[0].name: data}
    with data:
        missing = [s.name for s in inputs if s.name not in data.files]
        if missing:
            raise ConversionError(
                f"{path} lacks arrays for inputs {missing} (has {data.files})",
                "name the .npz arrays after the model inputs",
            )
        return {s.name: data[s.name] for s in inputs}


def _check(feeds: Feeds, inputs: list[InputSpec], where: Path) -> Feeds:
    out: Feeds = {}
    for spec in inputs:
        value = feeds[spec.name]
        if value.ndim == len(spec.dims) - 1:
            value = value[None, ...]
        if value.ndim != len(spec.dims):
            raise ConversionError(
                f"calibration input {spec.name} in {where} has shape {value.shape}, "
                f"expected rank {len(spec.dims)} like {spec.dims}",
                "match the model's input rank",
            )
        out[spec.name] = value.astype(spec.dtype, copy=False)
    return out


def load_calibration(
    path: Path, inputs: list[InputSpec], limit: int = MAX_SAMPLES, flag: str = "--calibration"
) -> list[Feeds]:
    """Single-sample feeds (batch of 1) from ``path``, at most ``limit`` of them."""
    if not path.exists():
        raise ConversionError(f"{flag} {path} does not exist", "give a .npy, .npz or a folder of them")
    files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz")) if path.is_dir() else [path]
    if not files:
        raise ConversionError(f"{flag} folder {path} holds no .npy/.npz files", "add samples saved with numpy")
    samples: list[Feeds] = []
    for file in files:
        batch = _check(_from_file(file, inputs), inputs, file)
        count = next(iter(batch.values())).shape[0]
        samples.extend({k: v[i : i + 1] for k, v in batch.items()} for i in range(count))
        if len(samples) >= limit:
            break
    return samples[:limit]


def stack(samples: list[Feeds]) -> Feeds:
    """One batch from single-sample feeds (they must share shapes)."""
    return {k: np.concatenate([s[k] for s in samples], axis=0) for k in samples[0]}


def parity_feeds(source: Source, calibration: list[Feeds], count: int) -> Feeds:
    """Sample inputs for parity: calibration samples, tokenized sample texts, or generated ones."""
    if calibration:
        chosen = calibration[:count]
        shapes = {tuple(v.shape for v in s.values()) for s in chosen}
        return stack(chosen) if len(shapes) == 1 else chosen[0]
    if source.sample_feeds is not None:
        return source.sample_feeds(count)
    return generated_feeds(source.inputs, count, source.int_high, seed=1)


def read_texts(path: Path) -> list[str]:
    """The non-empty lines of ``path`` (one calibration text a line), at most MAX_TEXTS."""
    flag = "--calibration-texts"
    if not path.is_file():
        raise ConversionError(f"{flag} {path} is not a file", "give a UTF-8 text file with one text per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{flag} {path} is not readable UTF-8 text ({exc})", "save it as UTF-8") from exc
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise ConversionError(f"{flag} {path} holds no text", "write one calibration text per line")
    return texts[:MAX_TEXTS]


def text_calibration(source: Source, texts: list[str] | tuple[str, ...]) -> list[Feeds]:
    """One feed per text, tokenized alone (batch of 1, no padding), as it would be served on its own."""
    if source.tokenize is None:
        raise ConversionError(
            f"--calibration-texts needs a text model with a tokenizer, got a {source.kind} model"
            + (f" ({source.task})" if source.task else ""),
            "give --calibration DATA (.npy/.npz samples) for this model",
        )
    return [source.tokenize([text]) for text in texts]
