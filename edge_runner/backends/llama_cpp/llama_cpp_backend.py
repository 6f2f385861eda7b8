"""llama.cpp backend (llama-cpp-python): GGUF decoders generate, GGUF encoders embed.

Generation runs on ``edge_runner.core.generation.LlmEngine`` (continuous batching over llama.cpp's batch API,
one sequence id per stream). Embedding models go through llama-cpp-python's ``Llama`` in embedding
mode behind a lock (llama.cpp contexts are not reentrant). Weights are memory-mapped unless
``use_mmap`` is off; ``mlock``, ``n_gpu_layers``, ``n_batch``, ``parallel`` (slots),
``max_queue`` and ``max_seq_len`` come from ``LoadOptions.options``. A sentence-transformers ``Dense``
projection after pooling (sentence-t5 / GTR ``2_Dense``), which llama.cpp's encoder graphs cannot hold,
comes beside the GGUF (manifest ``extra.pooled_dense``) and is applied here to the pooled vectors.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
from collections.abc import Iterator, Sequence
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from edge_runner.backends.base import (
    Backend,
    Capabilities,
    LoadOptions,
    ModelMetadata,
    ProbeResult,
    SelectionStep,
    Tensors,
)
from edge_runner.backends.llama_cpp.gguf_header import kv_bytes_per_token, read_header
from edge_runner.backends.llama_cpp.sampling import grammar_text
from edge_runner.core.errors import InvalidInput, ModelLoadError, ModelNotReady, UnsupportedOperation
from edge_runner.core.generation import GenerationChunk, GenerationRequest, SamplingParams
from edge_runner.core.manifest import Manifest, TensorSpec
from edge_runner.core.schema import STRINGS, boolean, integer

ENCODER_ARCHITECTURES = ("bert", "nomic-bert", "jina-bert-v2", "modern-bert", "t5encoder")
TEXT_INPUT = TensorSpec("text_input", "BYTES", (-1,))
TEXT_OUTPUT = TensorSpec("text_output", "BYTES", (-1,))
EMBEDDING_OUTPUT = TensorSpec("embedding", "FP32", (-1, -1))
DENSE_ACTIVATIONS = ("identity", "tanh")  # of the pooled_dense layers (sentence-transformers Dense)


@cache
def load_dynamic_backends(package_dir: Path) -> list[str]:
    """Register ggml's CPU/GPU variant libraries of a portable (GGML_BACKEND_DL) build, once per process.

    A native build links its one CPU backend directly and has no variants: nothing to do. A portable build
    ships ``libggml-cpu-<arch>.so`` variants that nothing loads unless ``ggml_backend_load_all_from_path``
    is called, after which llama.cpp picks the best variant for this CPU.
    """
    for folder in (package_dir / "lib", package_dir.parent / "bin"):
        variants = sorted(p.name for p in folder.glob("libggml-*-*.so")) if folder.is_dir() else []
        core = folder / "libggml.so"
        if variants and core.is_file():
            ggml = ctypes.CDLL(str(core))
            ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
            ggml.ggml_backend_load_all_from_path(str(folder).encode())
            return variants
    return []


#: generation streams decoded together when the profile does not say (``parallel``)
DEFAULT_SLOTS = 4
#: bytes per cached K/V value of each ``kv_cache_type`` (q8_0: 32 values in 34 bytes)
KV_CACHE_BYTES = {"f16": 2.0, "q8_0": 34 / 32}


class LlamaCppBackend(Backend):
    """GGUF models on llama.cpp."""

    name = "llama_cpp"
    formats = ("gguf",)
    suffixes = (".gguf",)
    artifact_formats = {".gguf": "gguf"}
    option_schema = {
        "devices": STRINGS,
        "n_gpu_layers": integer,
        "n_batch": integer,
        "parallel": integer,
        "max_queue": integer,
        "use_mmap": boolean,
    }
    runtime_package = "llama_cpp"

    @classmethod
    def working_memory_bytes(cls, manifest: Manifest, folder: Path, options: LoadOptions) -> int:
        """The KV cache: slots x context x per-token K/V bytes, read from the GGUF header (0 when unreadable)."""
        try:
            header = read_header(folder / manifest.primary_file)
        except (OSError, ValueError):
            return 0
        trained = header.get(f"{header.get('general.architecture', '')}.context_length", 0)
        context = int(options.options.get("max_seq_len", options.options.get("n_ctx", 2048)))
        if isinstance(trained, int) and trained > 0:
            context = min(context, trained)
        slots = int(options.options.get("parallel", options.options.get("n_slots", DEFAULT_SLOTS)))
        # the budget reserves every slot, though the cache grows with the streams in use
        per_value = KV_CACHE_BYTES.get(str(options.options.get("kv_cache_type", "f16")), 2.0)
        return int(slots * context * kv_bytes_per_token(header, 1) * per_value)

    @classmethod
    def wanted_devices(cls, options: LoadOptions) -> list[str]:
        """Offloading layers (``n_gpu_layers`` != 0) asks for the GPU."""
        if options.devices:
            return list(options.devices)
        return ["GPU"] if int(options.options.get("n_gpu_layers", 0)) != 0 else []

    @classmethod
    def device_unavailable(cls, device: str, available: Sequence[str], options: LoadOptions) -> str:
        """Layers go to a GPU only when llama.cpp reports one; the CPU always works."""
        if device == "GPU":
            gpus = [d for d in available if d.upper() != "CPU"]
            return (
                ""
                if gpus
                else f"llama.cpp reports no GPU device ({', '.join(available) or 'none'}); layers stay on CPU"
            )
        return super().device_unavailable(device, available, options)

    @classmethod
    def probe(cls) -> ProbeResult:
        """Installed llama-cpp-python and whether its build can offload to a GPU."""
        if importlib.util.find_spec("llama_cpp") is None:
            return ProbeResult(False, reason="llama-cpp-python is not installed (pip install 'edge-runner[llama]')")
        try:
            from edge_runner.backends.llama_cpp.bindings import import_llama_cpp

            llama_cpp = import_llama_cpp()
            load_dynamic_backends(Path(str(llama_cpp.__file__)).resolve().parent)
            gpu = bool(llama_cpp.llama_supports_gpu_offload())
            found = version("llama-cpp-python")
        except (ImportError, OSError, RuntimeError, PackageNotFoundError) as exc:
            return ProbeResult(False, reason=f"llama-cpp-python does not load: {exc}")
        return ProbeResult(True, version=found, devices=("GPU", "CPU") if gpu else ("CPU",))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._native: Any = None
        self._engine: Any = None
        self._embedder: Any = None
        self._embed_lock = threading.Lock()
        self._dense: list[tuple[np.ndarray, np.ndarray | None, str]] = []
        self._template: str | None = None
        self._bos = ""
        self._eos = ""
        self._device = "CPU"
        self._selection: tuple[SelectionStep, ...] = ()

    # -- lifecycle ---------------------------------------------------------------------------

    def _option(self, *names: str, default: Any = None) -> Any:
        for name in names:
            if name in self.options.options:
                return self.options.options[name]
        return default

    @property
    def is_encoder(self) -> bool:
        """Whether this GGUF is an embedding model (by manifest task or architecture)."""
        task = self.manifest.task
        arch = str(self.manifest.extra.get("architecture", ""))
        return task in ("feature-extraction", "embedding", "sentence-similarity") or arch in ENCODER_ARCHITECTURES

    def load(self) -> None:
        """Map the GGUF file and start the engine (decoders) or the embedding context (encoders)."""
        path = self.folder / self.manifest.primary_file
        if not path.is_file():
            raise ModelLoadError(f"{self.manifest.name}: GGUF file {path} is missing")
        n_gpu_layers = int(self._option("n_gpu_layers", default=0))
        self._choose_device(n_gpu_layers)
        try:
            if self.is_encoder:
                self._load_embedder(str(path), n_gpu_layers)
            else:
                self._load_generator(path, n_gpu_layers)
        except ImportError as exc:
            raise ModelLoadError(f"llama-cpp-python is not importable: {exc}") from exc

    def _choose_device(self, n_gpu_layers: int) -> None:
        probe = self.probe()
        if n_gpu_layers != 0 and "GPU" in probe.devices:
            self._device = "GPU"
            self._selection = (SelectionStep("GPU", True, f"n_gpu_layers={n_gpu_layers} and a GPU build"),)
        elif n_gpu_layers != 0:
            self._selection = (
                SelectionStep("GPU", False, "llama.cpp sees no GPU (none present, or built without offload)"),
                SelectionStep("CPU", True, "fallback"),
            )
        else:
            self._selection = (SelectionStep("CPU", True, "n_gpu_layers=0"),)

    def _max_seq_len(self, n_ctx_train: int) -> int:
        wanted = int(self._option("max_seq_len", "n_ctx", default=2048))
        return max(64, min(wanted, n_ctx_train)) if n_ctx_train > 0 else wanted

    def _load_generator(self, path: Any, n_gpu_layers: int) -> None:
        from edge_runner.backends.llama_cpp.engine import LlmEngine
        from edge_runner.backends.llama_cpp.native import ContextSettings, NativeModel

        mlock = bool(self._option("mlock", default=False))
        native = NativeModel(path, use_mmap=self.options.use_mmap, use_mlock=mlock, n_gpu_layers=n_gpu_layers)
        try:
            settings = ContextSettings(
                n_slots=int(self._option("parallel", "n_slots", default=DEFAULT_SLOTS)),
                max_seq_len=self._max_seq_len(native.n_ctx_train),
                n_batch=int(self._option("n_batch", default=512)),
                threads=self.options.threads,
                kv_cache_type=str(self._option("kv_cache_type", default="f16")),
                preallocate=bool(self._option("kv_preallocate", default=False)),
            )
            native.configure(settings)
            self._template = native.chat_template()
            self._bos, self._eos = native.special_text("bos"), native.special_text("eos")
            self._engine = LlmEngine(
                native,
                max_queue=int(self._option("max_queue", default=16)),
                on_first_token=self.on_first_token,
                on_token_time=self.on_token_time,
            )
        except BaseException:
            native.close()
            raise
        self._native = native

    def _load_embedder(self, path: str, n_gpu_layers: int) -> None:
        from llama_cpp import Llama

        from edge_runner.backends.llama_cpp.native import llama

        llama()  # bridges llama.cpp logging before the first model load

        try:
            self._embedder = Llama(
                model_path=path,
                embedding=True,
                n_ctx=self._max_seq_len(512),
                n_batch=int(self._option("n_batch", default=512)),
                n_threads=self.options.threads or None,
                n_gpu_layers=n_gpu_layers,
                use_mmap=self.options.use_mmap,
                use_mlock=bool(self._option("mlock", default=False)),
                verbose=False,
            )
        except ValueError as exc:
            raise ModelLoadError(f"llama.cpp could not load {path}: {exc}") from exc
        self._dense = self._pooled_dense()

    def _pooled_dense(self) -> list[tuple[np.ndarray, np.ndarray | None, str]]:
        """The manifest's ``pooled_dense`` layers as ``(weight, bias, activation)``, in order."""
        spec = self.manifest.extra.get("pooled_dense") or {}
        if not spec:
            return []
        layers = []
        try:
            with np.load(self.folder / str(spec["file"]), allow_pickle=False) as arrays:
                for layer in spec["layers"]:
                    name, activation = str(layer["name"]), str(layer.get("activation", "identity"))
                    if activation not in DENSE_ACTIVATIONS:
                        raise ValueError(f"activation {activation!r} of {name} is not one of {list(DENSE_ACTIVATIONS)}")
                    bias = arrays[f"{name}.bias"] if layer.get("bias") else None
                    layers.append((arrays[f"{name}.weight"], bias, activation))
        except (OSError, KeyError, ValueError) as exc:
            raise ModelLoadError(f"{self.manifest.name}: pooled_dense layers do not load: {exc}") from exc
        return layers

    def unload(self) -> None:
        """Stop the engine and free llama.cpp memory. Idempotent."""
        engine, native = self._engine, self._native
        self._engine = self._native = None
        if engine is not None:
            # the engine frees the context only once its thread has stopped using it
            engine.close(release=native.close if native is not None else None)
        elif native is not None:
            native.close()
        if self._embedder is not None:
            with self._embed_lock:
                self._embedder.close()
                self._embedder = None

    # -- contract ----------------------------------------------------------------------------

    def metadata(self) -> ModelMetadata:
        """Text in, text (decoders) or embeddings (encoders) out; one stream per slot at a time."""
        slots = self._engine.n_slots if self._engine is not None else 1
        caps = Capabilities(
            batching=False,
            max_concurrency=slots,
            generate=not self.is_encoder,
            embed=self.is_encoder,
            dynamic_shapes=True,
            devices=(self._device,),
        )
        output = EMBEDDING_OUTPUT if self.is_encoder else TEXT_OUTPUT
        return ModelMetadata((TEXT_INPUT,), (output,), caps, device=self._device, selection=self._selection)

    @property
    def engine(self) -> Any:
        """The running ``LlmEngine`` (decoders only)."""
        if self._engine is None:
            raise ModelNotReady(f"model {self.manifest.name!r} is not loaded")
        return self._engine

    def in_flight(self) -> int:
        """Streams generating or queued on the engine."""
        engine = self._engine  # one read: unload() may clear it concurrently
        if engine is None:
            return 0
        load = engine.load()
        return int(load["active"] + load["waiting"])

    def runtime_stats(self) -> dict[str, float]:
        """Slots in use, queued requests and token counters (for /v1/models, metrics and ``ps``)."""
        engine = self._engine  # one read: unload() may clear it concurrently
        if engine is None:
            return {}
        stats = engine.stats
        return {
            **engine.load(),
            "requests": stats.requests,
            "rejected": stats.rejected,
            "prompt_tokens": stats.prompt_tokens,
            "cached_prompt_tokens": stats.cached_tokens,
            "generated_tokens": stats.generated_tokens,
            "decode_calls": stats.decode_calls,
            "ttft_mean_ms": round(1000 * stats.ttft_total_s / stats.first_tokens, 2) if stats.first_tokens else 0.0,
        }

    def context_length(self) -> int:
        """Context length of one stream."""
        return int(self.engine.max_seq_len)

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """Render the chat template (chat) or take the prompt text (completion) and tokenize it."""
        from edge_runner.backends.llama_cpp.chat import render_chat

        native = self.engine.native
        if request.messages is not None:
            text = render_chat(self._template, request.messages, self._bos, self._eos)
        elif request.prompt is not None:
            text = request.prompt
        else:
            raise InvalidInput("a generation request needs 'prompt' or 'messages'")
        add_bos = native.add_bos and not (self._bos and text.startswith(self._bos))
        return list(native.tokenize(text, add_special=add_bos, parse_special=True))

    def generate(self, request: Any) -> Iterator[GenerationChunk]:
        """Start streaming; the returned iterator's ``close()`` cancels and frees the slot."""
        if self.is_encoder:
            raise UnsupportedOperation(f"model {self.manifest.name!r} is an embedding model; use /v1/embeddings")
        if not isinstance(request, GenerationRequest):
            raise InvalidInput("generate() expects an edge_runner.core.generation.GenerationRequest")
        grammar_text(request.params)  # a schema the grammar converter cannot express is a 400 before any work
        stream: Iterator[GenerationChunk] = self.engine.submit(self.prompt_tokens(request), request.params)
        return stream

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised pooled embeddings, one row per text."""
        if self._embedder is None:
            if self._engine is not None:
                return super().embed(texts)
            raise ModelNotReady(f"model {self.manifest.name!r} is not loaded")
        with self._embed_lock:
            try:
                rows = self._embedder.embed(list(texts), normalize=not self._dense)
            except (ValueError, RuntimeError) as exc:
                raise InvalidInput(f"embedding failed: {exc}") from exc
        pooled = np.asarray(rows, dtype=np.float32).reshape(len(texts), -1)
        if not self._dense:
            return pooled
        for weight, bias, activation in self._dense:  # sentence-transformers Dense: act(x W^T + b)
            pooled = pooled @ weight.T if bias is None else pooled @ weight.T + bias
            pooled = np.tanh(pooled) if activation == "tanh" else pooled
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model's own tokenizer makes of ``texts`` (the ``usage`` of /v1/embeddings)."""
        if self._embedder is not None:
            return sum(len(self._embedder.tokenize(t.encode("utf-8"), add_bos=True)) for t in texts)
        native = self.engine.native
        return sum(len(native.tokenize(t, add_special=native.add_bos)) for t in texts)

    def infer(self, inputs: Tensors, outputs: Sequence[str] | None = None) -> Tensors:
        """KServe v2 access: ``text_input`` (BYTES) -> ``text_output`` or ``embedding``."""
        if TEXT_INPUT.name not in inputs:
            raise InvalidInput(f"model {self.manifest.name!r} takes one BYTES input named {TEXT_INPUT.name!r}")
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in inputs[TEXT_INPUT.name].reshape(-1)]
        if self.is_encoder:
            return {EMBEDDING_OUTPUT.name: self.embed(texts)}
        answers = []
        for text in texts:
            stream = self.generate(GenerationRequest(prompt=text, params=SamplingParams(temperature=0.0)))
            answers.append("".join(chunk.text for chunk in stream).encode("utf-8"))
        return {TEXT_OUTPUT.name: np.array(answers, dtype=object)}
