"""KServe v2 request/response encoding: JSON tensors and the binary tensor extension."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from edge_runner.core.datatypes import element_size, from_numpy, to_numpy
from edge_runner.core.errors import InvalidInput, MalformedRequest
from edge_runner.protocol.json_body import infer_json_object, json_int

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass
class InferRequest:
    """A decoded infer request: named arrays, requested outputs and their binary flags."""

    id: str | None
    inputs: dict[str, np.ndarray]
    input_datatypes: dict[str, str]
    outputs: list[str] | None
    binary_outputs: set[str] = field(default_factory=set)
    binary_default: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


#: one BYTES element (a string, an encoded image): larger ones are refused before any copy
MAX_BYTES_ELEMENT = 16 * 2**20


def _too_long(name: str, length: int) -> InvalidInput:
    return InvalidInput(f"input {name!r}: a BYTES element of {length} bytes; at most {MAX_BYTES_ELEMENT} per element")


def _deserialize_bytes(buf: bytes, count: int, name: str) -> np.ndarray:
    items: list[bytes] = []
    offset = 0
    while offset < len(buf):
        if len(items) == count:  # stop at once: millions of empty elements would cost ~50 bytes each
            raise InvalidInput(f"input {name!r}: more BYTES elements in binary data than shape's {count}")
        if offset + 4 > len(buf):
            raise InvalidInput(f"input {name!r}: truncated BYTES element length prefix")
        (length,) = struct.unpack_from("<I", buf, offset)
        offset += 4
        if length > MAX_BYTES_ELEMENT:
            raise _too_long(name, length)
        if offset + length > len(buf):
            raise InvalidInput(f"input {name!r}: BYTES element of {length} bytes runs past the data")
        items.append(buf[offset : offset + length])
        offset += length
    if len(items) != count:
        raise InvalidInput(f"input {name!r}: {len(items)} BYTES elements in binary data, shape needs {count}")
    return np.array(items, dtype=np.object_)


def serialize_bytes(array: np.ndarray) -> bytes:
    """Length-prefixed concatenation used by the binary extension for BYTES tensors."""
    parts = []
    for item in array.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)


def _bf16_from_floats(values: np.ndarray) -> np.ndarray:
    bits = values.astype(np.float32).view(np.uint32)
    return (bits >> 16).astype(np.uint16)


MAX_ELEMENTS = 1 << 31  # per tensor; the body limit usually bites long before this
MAX_DIMS = 32  # numpy's limit (numpy 1.x)


def _shape(raw: Any, name: str) -> tuple[int, ...]:
    dims = [json_int(d) for d in raw] if isinstance(raw, list) else [None]
    if not all(d is not None and d >= 0 for d in dims):
        raise InvalidInput(f"input {name!r}: 'shape' must be a list of non-negative integers, got {raw!r}")
    shape = tuple(int(d or 0) for d in dims)
    if len(shape) > MAX_DIMS:
        raise InvalidInput(f"input {name!r}: shape has {len(shape)} dimensions; at most {MAX_DIMS}")
    # Zero dims count as 1: numpy refuses to reshape even an empty array to (0, 2**40, 2**40).
    if math.prod(max(d, 1) for d in shape) > MAX_ELEMENTS:  # Python ints: no silent overflow as with np.prod
        raise InvalidInput(f"input {name!r}: shape {list(shape)} has more than {MAX_ELEMENTS} elements")
    return shape


def _check_integers(array: np.ndarray, target: np.dtype[np.generic], datatype: str, name: str) -> None:
    """Integer data must be whole numbers (``7.0`` is one, as in JSON Schema) within the datatype's range:
    numpy's cast would silently wrap 300 to 44 as UINT8."""
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and (array == np.trunc(array)).all()):
        raise InvalidInput(f"input {name!r}: {datatype} data must be integers, got fractional or non-finite values")
    info = np.iinfo(target)  # type: ignore[type-var]
    low, high = array.min().item(), array.max().item()
    if low < info.min or high > info.max:
        raise InvalidInput(f"input {name!r}: {datatype} data must lie in [{info.min}, {info.max}]")


def _from_json_data(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = math.prod(shape)
    try:
        if datatype == "BYTES":
            flat = np.array(data, dtype=np.object_).reshape(-1)
            if not all(isinstance(v, str) for v in flat):  # bytes(4_000_000_000) would allocate 4 GB
                raise InvalidInput(f"input {name!r}: BYTES data in JSON must be strings")
            array = np.array([v.encode("utf-8") for v in flat], dtype=np.object_)
            longest = max((len(v) for v in array), default=0)
            if longest > MAX_BYTES_ELEMENT:
                raise _too_long(name, longest)
        elif datatype == "BF16":
            array = _bf16_from_floats(np.asarray(data, dtype=np.float32).reshape(-1))
        elif datatype == "BOOL":
            array = np.asarray(data).reshape(-1)
            if array.size and array.dtype != np.bool_:
                raise InvalidInput(f"input {name!r}: BOOL data must be true/false, got {array.dtype.name} values")
            array = array.astype(np.bool_)
        else:
            array = np.asarray(data).reshape(-1)
            target = to_numpy(datatype)
            if array.size and array.dtype.kind not in "iufb":
                raise InvalidInput(f"input {name!r}: {datatype} data must be numbers, got {array.dtype.name}")
            if array.size and target.kind in "iu" and array.dtype.kind in "iuf":
                _check_integers(array, target, datatype, name)
            with np.errstate(over="ignore"):  # checked just below
                array = array.astype(target)
            if array.dtype.kind == "f" and not np.isfinite(array).all():  # 1e999 parses as inf
                raise InvalidInput(f"input {name!r}: a number overflows {datatype} (JSON numbers must be finite)")
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"input {name!r}: data does not fit datatype {datatype}: {exc}") from None
    if array.size != count:
        raise InvalidInput(f"input {name!r}: shape {list(shape)} needs {count} elements, data has {array.size}")
    return array.reshape(shape)


def _from_binary(buf: memoryview, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        return _deserialize_bytes(bytes(buf), count, name).reshape(shape)
    expected = count * element_size(datatype)
    if len(buf) != expected:
        raise InvalidInput(
            f"input {name!r}: binary_data_size is {len(buf)} bytes, but shape {list(shape)} of "
            f"{datatype} needs {expected}"
        )
    return np.frombuffer(buf, dtype=to_numpy(datatype)).reshape(shape).copy()


def parse_header(body: bytes, header_length: int | None) -> tuple[dict[str, Any], memoryview]:
    """Split the body into the JSON header and the binary tail."""
    if header_length is None:
        header_bytes, tail = body, memoryview(b"")
    else:
        if header_length < 0 or header_length > len(body):
            raise MalformedRequest(f"{HEADER_LENGTH} is {header_length}, but the body has {len(body)} bytes")
        header_bytes, tail = body[:header_length], memoryview(body)[header_length:]
    return infer_json_object(header_bytes), tail


def decode_request(body: bytes, header_length: int | None) -> InferRequest:
    """Decode a v2 infer request (JSON, optionally followed by binary tensors)."""
    header, tail = parse_header(body, header_length)
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise MalformedRequest("'inputs' must be a non-empty list of {name, shape, datatype, data} objects")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for raw in raw_inputs:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise MalformedRequest("each input needs a string 'name'")
        name = raw["name"]
        if name in inputs:
            raise MalformedRequest(f"input {name!r} appears twice")
        datatype = raw.get("datatype")
        if not isinstance(datatype, str):
            raise MalformedRequest(f"input {name!r}: 'datatype' is required (e.g. FP32, INT64, BYTES)")
        to_numpy(datatype)
        shape = _shape(raw.get("shape"), name)
        params = raw.get("parameters") or {}
        raw_size = params.get("binary_data_size") if isinstance(params, dict) else None
        if raw_size is not None:
            size = json_int(raw_size)
            if size is None or size < 0 or offset + size > len(tail):
                raise InvalidInput(
                    f"input {name!r}: binary_data_size {raw_size!r} exceeds the {len(tail) - offset} "
                    "binary bytes left in the body"
                )
            inputs[name] = _from_binary(tail[offset : offset + size], datatype, shape, name)
            offset += size
        elif "data" in raw:
            inputs[name] = _from_json_data(raw["data"], datatype, shape, name)
        else:
            raise MalformedRequest(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
        datatypes[name] = datatype
    if offset != len(tail):
        raise InvalidInput(f"body has {len(tail) - offset} binary bytes not claimed by any input's binary_data_size")
    return _with_outputs(header, inputs, datatypes)


def _with_outputs(header: dict[str, Any], inputs: dict[str, np.ndarray], datatypes: dict[str, str]) -> InferRequest:
    params = header.get("parameters") or {}
    if not isinstance(params, dict):
        raise MalformedRequest("'parameters' must be an object")
    request = InferRequest(
        id=str(header["id"]) if "id" in header else None,
        inputs=inputs,
        input_datatypes=datatypes,
        outputs=None,
        binary_default=bool(params.get("binary_data_output", False)),
        parameters=params,
    )
    raw_outputs = header.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list) or not all(isinstance(o, dict) and "name" in o for o in raw_outputs):
            raise MalformedRequest("'outputs' must be a list of {name, parameters} objects")
        request.outputs = [str(o["name"]) for o in raw_outputs]
        for out in raw_outputs:
            oparams = out.get("parameters") or {}
            if not isinstance(oparams, dict):
                raise MalformedRequest(f"output {out['name']!r}: 'parameters' must be an object")
            if oparams.get("binary_data", request.binary_default):
                request.binary_outputs.add(str(out["name"]))
    return request


def _json_data(array: np.ndarray, datatype: str, name: str) -> Any:
    """Row-major values for JSON: a list of strings for BYTES, else a contiguous 1-D numpy array that
    orjson writes at C speed (no Python object per element)."""
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in flat]
    if datatype == "BF16":
        flat = (flat.astype(np.uint32) << 16).view(np.float32)
    elif flat.dtype == np.float16:
        flat = flat.astype(np.float32)  # orjson writes float16 arrays too, but not every version does
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():  # NaN and Infinity are not JSON
        raise InvalidInput(
            f"output {[name]} holds NaN or infinite values, which JSON cannot carry; ask for it with "
            '"parameters": {"binary_data": true} to get the raw values'
        )
    return np.ascontiguousarray(flat)


def encode_response(
    model: str, version: str, request: InferRequest, results: dict[str, np.ndarray], datatypes: dict[str, str]
) -> tuple[bytes, int | None]:
    """Encode outputs as JSON, appending binary tensors when asked; returns (body, json header length)."""
    outputs, blobs = [], []
    for name, array in results.items():
        datatype = datatypes.get(name) or from_numpy(array.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if name in request.binary_outputs or (request.outputs is None and request.binary_default):
            blob = serialize_bytes(array) if datatype == "BYTES" else np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(array, datatype, name)
        outputs.append(entry)
    response: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
