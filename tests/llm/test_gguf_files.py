"""GGUF files as people have them: a folder of quantization variants and split files, served straight from
``--model-path`` and added with ``models add``; answers checked against the unsplit file in the same run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_runner.core.errors import ManifestError
from edge_runner.repository.external import manifest_for_path
from tests.conftest import ServerProcess, free_env

pytest.importorskip("llama_cpp")
gguf = pytest.importorskip("gguf")
pytestmark = pytest.mark.slow
CHAT = {"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 12, "temperature": 0}


@pytest.fixture(scope="module")
def variants(make_hf_decoder: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """m-F16.gguf and m-Q8_0.gguf of one tiny random Llama, side by side."""
    from converters.gguf import convert_to_gguf

    source = make_hf_decoder("llama")
    work = tmp_path_factory.mktemp("gguf-variants")
    folder = work / "variants"
    folder.mkdir()
    for quant, label in (("f16", "F16"), ("q8_0", "Q8_0")):
        convert_to_gguf(source, work / quant, quantize=quant, name="m", check_parity=False)
        (gguf_file,) = (work / quant).glob("*.gguf")
        shutil.copy(gguf_file, folder / f"m-{label}.gguf")
    return folder


def split_copy(src: Path, out_dir: Path, tensors_per_part: int) -> list[Path]:
    """Rewrite ``src`` as split parts (the gguf package's writer names them NAME-0000i-of-0000n.gguf)."""
    reader = gguf.GGUFReader(str(src))
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(str(out_dir / "m.gguf"), arch, split_max_tensors=tensors_per_part)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        kind = field.types[0]
        writer.add_key_value(
            key, field.contents(), kind, sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        )
    for tensor in reader.tensors:  # raw data as stored: the writer derives the shape from the byte layout
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sorted(out_dir.glob("m-*-of-*.gguf"))


def test_variant_picked_by_quantization_or_budget(variants: Path) -> None:
    sizes = {p.name: p.stat().st_size for p in variants.glob("*.gguf")}
    assert manifest_for_path(variants, "m", prefer="q8_0")[1].files[0].path == "m-Q8_0.gguf"
    assert manifest_for_path(variants, "m", prefer="F16")[1].quantization == "f16"
    assert manifest_for_path(variants, "m", budget=sizes["m-F16.gguf"] + 1)[1].files[0].path == "m-F16.gguf"
    assert manifest_for_path(variants, "m", budget=sizes["m-Q8_0.gguf"] + 1)[1].files[0].path == "m-Q8_0.gguf"
    assert manifest_for_path(variants, "m", budget=10)[1].files[0].path == "m-Q8_0.gguf"  # nothing fits: smallest
    manifest = manifest_for_path(variants / "m-F16.gguf", "m", prefer="q8_0")[1]  # a named file wins
    assert manifest.quantization == "f16" and manifest.task == "text-generation"


def _answer(server: ServerProcess, model: str) -> str:
    body = json.dumps({"model": model, **CHAT}).encode()
    request = urllib.request.Request(server.url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as resp:
        return str(json.loads(resp.read())["choices"][0]["message"]["content"])


def test_split_gguf_served_and_added_answers_like_the_whole_file(
    variants: Path, start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    parts = split_copy(variants / "m-Q8_0.gguf", tmp_path, tensors_per_part=8)
    assert len(parts) >= 2 and parts[0].name.endswith(f"-00001-of-{len(parts):05d}.gguf")
    whole = start_server("--model-name", "m", "--model-path", str(variants / "m-Q8_0.gguf"))
    expected = _answer(whole, "m")
    whole.stop()
    split = start_server("--model-name", "m", "--model-path", str(parts[0]))
    assert _answer(split, "m") == expected
    split.stop()

    env = free_env(tmp_path)
    added = subprocess.run(
        [sys.executable, "-m", "edge_runner", "models", "add", str(parts[0]), "--name", "m-split"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    manifest = json.loads((tmp_path / "repo" / "m-split" / "1" / "manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == [p.name for p in parts] and manifest["quantization"] == "q8_0"
    served = start_server("--models", "m-split", env=env)
    assert _answer(served, "m-split") == expected

    parts[-1].unlink()
    with pytest.raises(ManifestError, match=f"lacks {parts[-1].name}"):
        manifest_for_path(parts[0], "m")
