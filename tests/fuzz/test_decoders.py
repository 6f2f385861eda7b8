"""Property tests of the request decoders and the manifest reader: decode right or raise a typed error.

Every input to ``decode_request`` (JSON tensors, the binary tensor extension, garbage) either decodes to
arrays whose size matches the declared shape and datatype, or raises an ``EdgeRunnerError``; the same for
``read_manifest`` on random and mutated ``manifest.json`` files. Never another exception, never a hang.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runner.core.datatypes import DATATYPES, element_size, to_numpy
from edge_runner.core.errors import EdgeRunnerError, InvalidInput, ManifestError
from edge_runner.core.manifest import MANIFEST_NAME, Manifest, read_manifest
from edge_runner.protocol import json_body
from edge_runner.protocol.kserve_codec import InferRequest, decode_request, serialize_bytes
from edge_runner.protocol.openai import chat_request, completion_request, embedding_texts

FAST = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow], database=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
dims = st.lists(st.integers(0, 4), max_size=3)
weird_dims = st.lists(st.one_of(st.integers(-3, 2**40), st.floats(), st.booleans(), st.text(max_size=2)), max_size=4)


def _check_decoded(request: InferRequest, header: dict[str, Any]) -> None:
    """Every decoded array has its declared shape, a dtype matching its datatype, and nothing extra."""
    declared = {raw["name"]: raw for raw in header["inputs"]}
    assert set(request.inputs) == set(declared)
    for name, array in request.inputs.items():
        raw = declared[name]
        assert tuple(array.shape) == tuple(int(d) for d in raw["shape"])
        assert array.size == math.prod(array.shape)
        assert array.dtype == to_numpy(raw["datatype"]), (name, array.dtype, raw["datatype"])
        assert request.input_datatypes[name] == raw["datatype"]


def _decode(body: bytes, header_length: int | None) -> InferRequest | None:
    try:
        return decode_request(body, header_length)
    except EdgeRunnerError:
        return None


@st.composite
def json_tensors(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON input that is often right: the data count matches the shape about half the time."""
    datatype = draw(st.sampled_from(DATATYPES))
    shape = draw(dims)
    count = math.prod(shape)
    if draw(st.booleans()):
        count = draw(st.integers(0, 6))
    element = {
        "BYTES": st.text(max_size=5),
        "BOOL": st.booleans(),
    }.get(
        datatype,
        st.floats(width=32, allow_nan=False, allow_infinity=False)
        if datatype.startswith(("FP", "BF"))
        else st.integers(-(2**65), 2**65) | st.floats(),
    )
    data = draw(st.lists(element | json_values, min_size=count, max_size=count))
    return {"name": draw(st.sampled_from(["x", "y", "", "x"])), "datatype": datatype, "shape": shape, "data": data}


@FAST
@given(inputs=st.lists(json_tensors(), min_size=1, max_size=3), extra=st.dictionaries(st.text(max_size=5), json_values))
def test_json_infer_body_decodes_or_raises_typed(inputs: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    header = {**extra, "inputs": inputs}
    request = _decode(json.dumps(header).encode(), None)
    if request is not None:
        _check_decoded(request, header)


def _outcome(body: bytes) -> tuple[str, Any]:
    """What decode_request makes of ``body``: the arrays (dtype, shape, bytes) or the error's type and text."""
    try:
        request = decode_request(body, None)
    except EdgeRunnerError as exc:
        return type(exc).__name__, str(exc)
    # object (BYTES) arrays compare by value: their tobytes() are pointers, different on every decode
    arrays = {
        name: (a.dtype.str, a.shape, a.tolist() if a.dtype == object else a.tobytes())
        for name, a in request.inputs.items()
    }
    return "ok", (arrays, request.outputs, request.binary_default, request.id)


@FAST
@given(inputs=st.lists(json_tensors(), min_size=1, max_size=3), extra=st.dictionaries(st.text(max_size=5), json_values))
def test_large_json_bodies_decode_exactly_as_the_small_body_parser(
    inputs: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    """Bodies past TENSOR_PATH_BYTES go through simdjson straight into numpy; the orjson path is the reference:
    the same arrays to the byte, or the same error type and message, for every body."""
    header = {**extra, "inputs": inputs, "id": "p" * json_body.TENSOR_PATH_BYTES}
    body = json.dumps(header).encode()
    fast = _outcome(body)
    limit = json_body.TENSOR_PATH_BYTES
    json_body.TENSOR_PATH_BYTES = 1 << 62
    try:
        reference = _outcome(body)
    finally:
        json_body.TENSOR_PATH_BYTES = limit
    assert fast == reference


def test_large_json_tensor_path_is_taken_and_exact() -> None:
    """A flat 150,528-element FP32 image (as tritonclient sends it) and an INT64 tensor past 2**53 decode exactly
    through the tensor path; the same image nested decodes the same through the reference path."""
    image = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    ids = np.array([[2**62 + 1, -(2**62) - 3, 7]], dtype=np.int64)
    body = json.dumps(
        {
            "inputs": [
                {"name": "image", "datatype": "FP32", "shape": [1, 224, 224, 3], "data": image.ravel().tolist()},
                {"name": "ids", "datatype": "INT64", "shape": [1, 3], "data": ids.ravel().tolist()},
            ]
        }
    ).encode()
    parsed = json_body.infer_json_object(body)
    assert isinstance(parsed["inputs"][0]["data"], np.ndarray)  # not a list: no Python object per element
    request = decode_request(body, None)
    assert request.inputs["image"].dtype == np.float32 and np.array_equal(request.inputs["image"], image)
    assert np.array_equal(request.inputs["ids"], ids)
    nested = body.replace(json.dumps(image.ravel().tolist()).encode(), json.dumps(image.tolist()).encode())
    assert isinstance(json_body.infer_json_object(nested)["inputs"][0]["data"], list)
    assert np.array_equal(decode_request(nested, None).inputs["image"], image)


@st.composite
def binary_bodies(draw: st.DrawFn) -> tuple[bytes, int | None, dict[str, Any]]:
    """Binary tensor extension bodies, with sizes right, off by some bytes, or garbage tails."""
    inputs, blobs = [], []
    for index in range(draw(st.integers(1, 3))):
        datatype = draw(st.sampled_from(DATATYPES))
        shape = draw(dims)
        count = math.prod(shape)
        if datatype == "BYTES":
            blob = serialize_bytes(np.array(draw(st.lists(st.binary(max_size=4), min_size=count, max_size=count))))
        else:
            blob = draw(st.binary(min_size=count * element_size(datatype), max_size=count * element_size(datatype)))
        if draw(st.integers(0, 4)) == 0:
            blob = blob[: draw(st.integers(0, len(blob)))] + draw(st.binary(max_size=6))
        size: Any = len(blob) if draw(st.integers(0, 5)) else draw(st.integers(-2, 2**33) | st.floats() | st.just(True))
        inputs.append(
            {"name": f"i{index}", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}
        )
        blobs.append(blob)
    header = {"inputs": inputs, "outputs": [{"name": "o", "parameters": {"binary_data": True}}]}
    head = json.dumps(header).encode()
    length: int | None = len(head)
    if draw(st.integers(0, 5)) == 0:
        length = draw(st.none() | st.integers(-5, len(head) + 40))
    return head + b"".join(blobs), length, header


@FAST
@given(case=binary_bodies())
def test_binary_infer_body_decodes_or_raises_typed(case: tuple[bytes, int | None, dict[str, Any]]) -> None:
    body, length, header = case
    request = _decode(body, length)
    if request is not None:
        _check_decoded(request, header)
        assert request.binary_outputs == {"o"}


@FAST
@given(body=st.binary(max_size=300), length=st.none() | st.integers(-10, 400))
def test_random_bytes_raise_typed(body: bytes, length: int | None) -> None:
    _decode(body, length)


@FAST
@given(
    raw=st.fixed_dictionaries(
        {"name": st.just("x"), "datatype": st.sampled_from([*DATATYPES, "FP8", 3]), "shape": weird_dims},
        optional={"data": json_values, "parameters": json_values},
    ),
    outputs=json_values,
    parameters=json_values,
)
def test_mistyped_fields_raise_typed(raw: dict[str, Any], outputs: Any, parameters: Any) -> None:
    header = {"inputs": [raw], "outputs": outputs, "parameters": parameters, "id": outputs}
    request = _decode(json.dumps(header).encode(), None)
    if request is not None:
        _check_decoded(request, header)


def test_integer_data_is_range_checked_and_whole_floats_are_integers() -> None:
    """Regressions found by the fuzzers: 300 as UINT8 wrapped to 44; 7.0 (a JSON Schema integer) was refused."""

    def one(datatype: str, value: Any) -> bytes:
        return json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": [1], "data": [value]}]}).encode()

    with pytest.raises(InvalidInput, match="must lie in"):
        decode_request(one("UINT8", 300), None)
    with pytest.raises(InvalidInput, match="must be integers"):
        decode_request(one("INT8", 1.5), None)
    body = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [2.0], "data": [7.0, -3]}]}
    request = decode_request(json.dumps(body).encode(), None)
    assert request.inputs["x"].tolist() == [7, -3] and request.inputs["x"].dtype == np.int32
    head = b'{"inputs":[{"name":"x","datatype":"UINT8","shape":[1],"parameters":{"binary_data_size":true}}]}'
    with pytest.raises(InvalidInput, match="binary_data_size"):  # true is not a size of 1
        decode_request(head + b"\x01", len(head))


@pytest.mark.parametrize("shape", [[0, 2**40, 2**40], [0] * 40, [1] * 33])
def test_shapes_numpy_cannot_make_are_invalid_input(shape: list[int]) -> None:
    """Regression: these shapes hold 0 elements, passed the size check, and reshape raised ValueError (a 500)."""
    for data in ([], None):
        raw: dict[str, Any] = {"name": "x", "datatype": "FP32", "shape": shape}
        if data is None:
            raw["parameters"] = {"binary_data_size": 0}
        else:
            raw["data"] = data
        head = json.dumps({"inputs": [raw]}).encode()
        with pytest.raises(InvalidInput, match="shape"):
            decode_request(head, len(head)) if data is None else decode_request(head, None)


def test_openai_integers_accept_whole_floats() -> None:
    """JSON Schema's integer includes 7.0; the schema fuzzer sends it and the parser used to answer 400."""
    request = chat_request({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 7.0, "seed": 3.0}, 16)
    assert request.params.max_tokens == 7 and request.params.seed == 3
    assert completion_request({"prompt": "hi", "max_completion_tokens": 40.0}, 16).params.max_tokens == 16
    with pytest.raises(InvalidInput):
        chat_request({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 7.5}, 16)


@FAST
@given(
    body=st.dictionaries(st.sampled_from(["input", "model", "messages", "prompt", "max_tokens", "stop"]), json_values)
)
def test_openai_parsers_raise_typed(body: dict[str, Any]) -> None:
    for parse in (lambda b: chat_request(b, 16), lambda b: completion_request(b, 16), embedding_texts):
        with contextlib.suppress(EdgeRunnerError):
            parse(body)


# --- manifest.json -------------------------------------------------------------------------------------

VALID = {
    "name": "m",
    "version": 1,
    "format": "onnx",
    "files": [{"path": "model.onnx", "sha256": "0" * 64, "size": 4}],
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
}


@st.composite
def mutated_manifests(draw: st.DrawFn) -> Any:
    """The valid manifest with keys dropped, retyped or nested values replaced; or any JSON at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    data: dict[str, Any] = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*sorted(data), "extra", "source", "parity", "schema_version", "quantization"]))
        target: Any = data
        if key in ("files", "inputs", "outputs") and draw(st.booleans()) and data.get(key):
            target = data[key][0] if isinstance(data[key], list) and isinstance(data[key][0], dict) else data
            key = draw(st.sampled_from(sorted(target) or ["name"])) if isinstance(target, dict) else key
        if draw(st.integers(0, 3)) == 0 and key in target:
            del target[key]
        else:
            target[key] = draw(json_values | st.just("../x") | st.just(float("inf")) | st.integers(-(2**70), 2**70))
    return data


def _read(folder: Path, text: bytes) -> Manifest | None:
    (folder / MANIFEST_NAME).write_bytes(text)
    try:
        return read_manifest(folder)
    except ManifestError:
        return None


@FAST
@given(data=mutated_manifests())
def test_mutated_manifest_reads_or_raises_manifest_error(data: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        text = json.dumps(data, allow_nan=True).encode()
        manifest = _read(Path(tmp), text)
        if manifest is not None:
            assert isinstance(manifest.name, str) and isinstance(manifest.version, int)
            assert all(isinstance(d, int) for t in (*manifest.inputs, *manifest.outputs) for d in t.shape)
            assert all(not f.path.startswith("/") and ".." not in f.path for f in manifest.files)


@FAST
@given(text=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_manifest_bytes_raise_manifest_error(text: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _read(Path(tmp), text)


def test_manifest_regressions() -> None:
    """Deep nesting and non-UTF-8 bytes are ManifestErrors, not RecursionError / UnicodeDecodeError."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        assert _read(folder, b"[" * 100_000 + b"]" * 100_000) is None
        assert _read(folder, b"\xff\xfe{") is None
        assert _read(folder, struct.pack("<I", 7)) is None
