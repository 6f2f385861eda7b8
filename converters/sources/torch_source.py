"""PyTorch sources: TorchScript ``.pt``, ``torch.export`` ``.pt2``, ``module.py:ClassName`` + state dict."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConversionError
from converters.options import ConvertOptions, InputSpec
from converters.sources.base import Feeds, Source, flatten_outputs, generated_feeds, path_size

LOG = logging.getLogger(__name__)

EXAMPLE_FIX = "pass --example-input NAME:DTYPE:DIMS for every input, e.g. --example-input x:float32:1x3x32x32"


def torch_reference(model: Any, inputs: list[InputSpec]) -> Any:
    """A numpy-in, numpy-out runner for a torch callable."""
    import torch

    def run(feeds: Feeds) -> list[np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in inputs]
        with torch.inference_mode():
            out = model(*args)
        return [t.detach().cpu().numpy() for t in flatten_outputs(out) if hasattr(t, "detach")]

    return run


def _output_names(model: Any, inputs: list[InputSpec]) -> list[str]:
    """A dict of tensors keeps its keys as output names; anything else is ``output`` / ``output_<i>``."""
    import torch

    feeds = generated_feeds(inputs, example_batch(inputs), 2)
    with torch.inference_mode():
        out = model(*[torch.from_numpy(feeds[s.name]) for s in inputs])
    tensors = [t for t in flatten_outputs(out) if hasattr(t, "detach")]
    if not tensors:
        raise ConversionError("the model returned no tensors", "make forward() return a tensor or a tuple of tensors")
    if isinstance(out, dict) and len(out) == len(tensors) and all(isinstance(k, str) for k in out):
        return list(out)
    return ["output"] if len(tensors) == 1 else [f"output_{i}" for i in range(len(tensors))]


def example_batch(inputs: list[InputSpec]) -> int:
    """2 for a dynamic batch; the fixed size where axis 0 is not dynamic."""
    fixed = [s.dims[0] for s in inputs if s.dims and 0 not in s.dynamic_axes]
    return fixed[0] if fixed else 2


def _require_inputs(opts: ConvertOptions, what: str) -> list[InputSpec]:
    if not opts.example_inputs:
        raise ConversionError(f"{what} needs example inputs to export", EXAMPLE_FIX)
    return list(opts.example_inputs)


def _make(kind: str, path: Path, model: Any, inputs: list[InputSpec], opts: ConvertOptions) -> Source:
    reference = torch_reference(model, inputs)
    try:
        names = _output_names(model, inputs)
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(
            f"running the model on the example inputs failed: {exc}".splitlines()[0], EXAMPLE_FIX
        ) from exc
    return Source(
        kind=kind,
        framework="torch",
        path=path,
        model=model,
        inputs=inputs,
        output_names=names,
        reference=reference,
        task=opts.task or "",
        size_bytes=path_size(path),
        info={"framework": "torch", "kind": kind, "path": str(path)},
    )


def load_torchscript(path: Path, opts: ConvertOptions) -> Source:
    """A TorchScript archive saved with ``torch.jit.save``."""
    import torch

    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ConversionError(
            f"{path} is not a readable TorchScript archive ({type(exc).__name__})",
            "give a file saved with torch.jit.save, or module.py:ClassName with --state-dict for a plain state dict",
        ) from exc
    model.eval()
    return _make("torchscript", path, model, _require_inputs(opts, "a TorchScript model"), opts)


def load_exported(path: Path, opts: ConvertOptions) -> Source:
    """A ``torch.export`` program saved with ``torch.export.save`` (.pt2).

    A program exported without ``dynamic_shapes`` guards its example batch size. It is re-exported with
    a dynamic batch when the graph allows it and the result matches the original on chunks of that
    batch; otherwise it is converted as it is, with the batch fixed (the manifest's input shapes say so).
    """
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ConversionError(
            f"{path} is not a readable torch.export archive ({type(exc).__name__})",
            "save the program with torch.export.save(program, 'model.pt2')",
        ) from exc
    fixed = _fixed_batch(program)
    if fixed is None:
        inputs = list(opts.example_inputs) or _inputs_from_program(program)
        src = _make("torch-export", path, program.module(), inputs, opts)
        src.model = program
        src.info["batch"] = "dynamic"
        return src
    return _static_program(path, program, fixed, opts)


def _fixed_batch(program: Any) -> int | None:
    """The batch size a program was specialized to, or None when its batch axis is symbolic."""
    names = {s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"}
    nodes = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in names]
    shapes = [tuple(n.meta["val"].shape) for n in nodes if hasattr(n.meta.get("val"), "shape")]
    if not shapes or any(not shape for shape in shapes):
        return None
    if any(not isinstance(shape[0], int) for shape in shapes):
        return None
    return int(shapes[0][0])


def _static_program(path: Path, program: Any, batch: int, opts: ConvertOptions) -> Source:
    inputs = _inputs_from_program(program)
    original = program.module()
    dynamic = _reexport(program, inputs, batch, original)
    if dynamic is not None:
        specs = [InputSpec(s.name, s.dtype, s.dims, (0,)) for s in inputs]
        src = _make("torch-export", path, dynamic.module(), specs, opts)
        src.model = dynamic
        # the user's program stays the reference: run on chunks of the batch it was exported with
        src.reference = _chunked(torch_reference(original, specs), batch)
        src.info["batch"] = f"dynamic (re-exported; the saved program was fixed at batch {batch})"
        LOG.warning("the .pt2 program was exported with a fixed batch of %d; re-exported with a dynamic batch", batch)
        return src
    specs = [InputSpec(s.name, s.dtype, s.dims, ()) for s in inputs]
    src = _make("torch-export", path, original, specs, opts)
    src.model = program
    src.sample_feeds = lambda count: generated_feeds(specs, batch, src.int_high, seed=1)
    src.info["batch"] = f"fixed at {batch}"
    src.extra["fixed_batch"] = batch
    LOG.warning(
        "the .pt2 program is specialized to batch %d and cannot take another: the artifact keeps a fixed batch "
        "of %d (export with dynamic_shapes={0: torch.export.Dim('batch')} for a dynamic one)",
        batch,
        batch,
    )
    return src


def _reexport(program: Any, inputs: list[InputSpec], batch: int, original: Any) -> Any:
    """The program re-exported with a dynamic batch axis, or None when it does not allow one."""
    import torch

    class Unguarded(torch.nn.Module):
        """Calls the graph's forward directly: the guard pre-hooks would pin the batch again."""

        def __init__(self, graph: Any) -> None:
            super().__init__()
            self.graph_module = graph

        def forward(self, *args: Any) -> Any:
            return self.graph_module.forward(*args)

    if any(len(s.dims) == 0 or s.dims[0] != batch for s in inputs):
        return None
    feeds = generated_feeds(inputs, max(batch, 2), 2)
    args = tuple(torch.from_numpy(feeds[s.name]) for s in inputs)
    dim = torch.export.Dim("batch", min=1, max=1 << 16)
    try:
        exported = torch.export.export(
            Unguarded(program.module(check_guards=False)), args, dynamic_shapes=(tuple({0: dim} for _ in args),)
        )
        check = generated_feeds(inputs, batch + 1, 2, seed=3)
        got = torch_reference(exported.module(), inputs)(check)
        want = _chunked(torch_reference(original, inputs), batch)(check)
    except Exception:
        return None
    same = len(got) == len(want) and all(
        g.shape == w.shape and np.allclose(g, w, rtol=1e-4, atol=1e-5) for g, w in zip(got, want, strict=False)
    )
    return exported if same else None


def _chunked(run: Any, batch: int) -> Any:
    """Run a fixed-batch model on any number of samples: chunks of ``batch``, the last one padded."""

    def chunked(feeds: Feeds) -> list[np.ndarray]:
        count = len(next(iter(feeds.values())))
        pieces = []
        for start in range(0, count, batch):
            chunk = {k: v[start : start + batch] for k, v in feeds.items()}
            short = batch - len(next(iter(chunk.values())))
            if short:
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], short, axis=0)]) for k, v in chunk.items()}
            pieces.append(run(chunk))
        return [np.concatenate([p[i] for p in pieces])[:count] for i in range(len(pieces[0]))]

    return chunked


def _inputs_from_program(program: Any) -> list[InputSpec]:
    example = getattr(program, "example_inputs", None)
    args = example[0] if example else None
    if not args:
        raise ConversionError("the .pt2 program carries no example inputs", EXAMPLE_FIX)
    names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    specs = []
    for i, tensor in enumerate(args):
        name = names[i] if i < len(names) else f"input_{i}"
        specs.append(InputSpec(name, str(tensor.dtype).removeprefix("torch."), tuple(int(d) for d in tensor.shape)))
    return specs


def load_module_class(spec: str, opts: ConvertOptions) -> Source:
    """``path/to/module.py:ClassName``, built with no arguments, weights from ``--state-dict``."""
    file_text, _, class_name = spec.rpartition(":")
    path = Path(file_text)
    if not path.is_file():
        raise ConversionError(f"{path} does not exist", "give module.py:ClassName with an existing Python file")
    module_name = f"_edge_runner_src_{path.stem}"
    mod_spec = importlib.util.spec_from_file_location(module_name, path)
    if mod_spec is None or mod_spec.loader is None:
        raise ConversionError(f"{path} is not an importable Python file", "give a .py file defining the model class")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[module_name] = module
    try:
        mod_spec.loader.exec_module(module)
        model = getattr(module, class_name)()
    except AttributeError:
        raise ConversionError(f"{path} defines no class {class_name!r}", "check the name after the colon") from None
    except Exception as exc:
        raise ConversionError(
            f"building {class_name}() from {path} failed: {exc}", "the class must build with no arguments"
        ) from exc
    if opts.state_dict is not None:
        _load_state_dict(model, opts.state_dict)
    model.eval()
    inputs = _require_inputs(opts, f"{class_name}")
    src = _make("torch-module", path, model, inputs, opts)
    weights = opts.state_dict
    src.size_bytes = path_size(weights) if weights else sum(p.numel() * p.element_size() for p in model.parameters())
    src.info.update({"class": class_name, "state_dict": str(weights) if weights else None})
    return src


def _load_state_dict(model: Any, path: Path) -> None:
    import torch

    if not path.is_file():
        raise ConversionError(
            f"--state-dict {path} does not exist", "give the file saved with torch.save(model.state_dict())"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConversionError(
            f"--state-dict {path} could not be read safely ({type(exc).__name__}): "
            "it is corrupt or holds pickled objects",
            "save only tensors: torch.save(model.state_dict(), path), or use .safetensors",
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except Exception as exc:
        raise ConversionError(
            f"--state-dict does not fit the model: {exc}".splitlines()[0], "check that the class matches the checkpoint"
        ) from exc
