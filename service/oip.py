"""Open Inference Protocol (KServe V2) tensors: decode requests, encode responses; no Flask here.

Binary tensor data extension: a body may be a JSON header of `Inference-Header-Content-Length`
bytes followed by raw tensor bytes, little-endian, in input order; BYTES elements are each a
4-byte little-endian length and then the bytes.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import V2Error
from service.runtime import integer

MODEL_NAME = "rnnadd"
HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT_NAMES = ("a", "b")
INPUT_DATATYPE = "INT64"  # advertised; every integer type and BYTES are accepted
OUTPUT_TYPES = {"sum": "INT64", "binary": "BYTES", "correct": "BOOL"}
INT_TYPES = {
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
}
INT64_MAX = 2**63 - 1
UNSUPPORTED_PARAMS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
SMALL = 16  # tensors of up to this many values go through struct: numpy's set-up costs more


@dataclass(frozen=True)
class RequestedOutput:
    """One output the client asked for, and whether it wants it as binary data."""

    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request: pairs (a[i], b[i]) and what to send back."""

    id: str | None
    parameters: dict[str, Any]  # request-level; `bits` is checked by the same rule as /v1
    a: list[int]
    b: list[int]
    text: bool  # inputs came as BYTES decimal strings, so `sum` goes back the same way
    outputs: tuple[RequestedOutput, ...]


def _ints(values: list) -> list[int] | None:
    """JSON integers, also written 3.0 as JSON Schema allows; None if any is not one."""
    ints = [integer(v) for v in values]
    return None if None in ints else ints  # type: ignore[return-value]


def _object(value: object, what: str) -> dict:
    """Require a JSON object where the protocol puts one."""
    if not isinstance(value, dict):
        raise V2Error(f"{what} must be a JSON object")
    return value


def split_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """Separate the JSON header from the binary tensor data that may follow it."""
    if header_length is None:
        size = len(body)
    else:
        text = header_length.strip()
        digits = text.isascii() and text.isdigit() and len(text) <= 18
        if not digits or int(text) > len(body):
            raise V2Error(
                f"{HEADER_LENGTH} must be a whole number of bytes no larger than the body "
                f"({len(body)} bytes), got {header_length!r}"
            )
        size = int(text)
    try:
        header = json.loads(body[:size])
    except (ValueError, RecursionError) as exc:
        raise V2Error(f"the inference request header is not valid JSON: {exc}") from exc
    return _object(header, "the inference request"), body[size:]


def _shape(tensor: dict, name: str, max_batch: int) -> list[int]:
    """Accept [N] or [N, 1] within the batch limit (checked before any data is decoded)."""
    raw = tensor.get("shape")
    shape = _ints(raw) if isinstance(raw, list) else None
    if shape is None or any(d < 0 for d in shape):
        raise V2Error(f"input {name!r}: shape must be a list of non-negative integers")
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise V2Error(f"input {name!r}: shape must be [N] or [N, 1], got {shape}")
    if shape[0] > max_batch:
        raise V2Error(
            f"input {name!r}: {shape[0]} elements exceed the limit of {max_batch}", 413
        )
    return shape


def _flatten(data: object, shape: list[int], name: str) -> list:
    """Row-major elements from flat or nested JSON data, checked against the shape."""
    count = math.prod(shape)
    if isinstance(data, list) and not any(isinstance(x, list) for x in data):
        if len(data) != count:
            raise V2Error(f"input {name!r}: shape {shape} needs {count} elements, got {len(data)}")
        return data

    def walk(node: object, dims: list[int]) -> list:
        if not dims:
            if isinstance(node, list):
                raise V2Error(f"input {name!r}: data is nested deeper than shape {shape}")
            return [node]
        if not isinstance(node, list) or len(node) != dims[0]:
            raise V2Error(f"input {name!r}: data does not match shape {shape}")
        return [x for child in node for x in walk(child, dims[1:])]

    return walk(data, shape)


def _digits(value: str | bytes, name: str, max_digits: int) -> int:
    """A decimal string as an int; refuse signs, spaces, underscores and non-ASCII digits."""
    if not (value.isascii() and value.isdigit()):
        shown = value if isinstance(value, str) else value[:40].decode("utf-8", "replace")
        raise V2Error(f"input {name!r}: {shown[:40]!r} is not a string of decimal digits")
    if len(value) > max_digits:
        raise V2Error(f"input {name!r}: a value of {len(value)} digits is too wide")
    return int(value)


def _json_ints(items: list, datatype: str, name: str, max_digits: int) -> list[int]:
    """Check explicit JSON elements against the declared datatype."""
    if datatype == "BYTES":
        if not all(isinstance(x, str | bytes) for x in items):
            raise V2Error(f"input {name!r}: BYTES data must be strings of decimal digits")
        return [_digits(x, name, max_digits) for x in items]
    numbers = _ints(items)
    if numbers is None:
        raise V2Error(f"input {name!r}: {datatype} data must be JSON integers")
    items = numbers
    info = np.iinfo(np.dtype(INT_TYPES[datatype]))
    if any(x < 0 for x in items):
        raise V2Error(f"input {name!r}: values must be non-negative")
    if any(x > info.max for x in items):
        raise V2Error(f"input {name!r}: a value does not fit {datatype}")
    return items


def _binary_ints(raw: bytes, count: int, datatype: str, name: str, max_digits: int) -> list[int]:
    """Decode raw tensor bytes: fixed-width little-endian ints, or length-prefixed strings."""
    if datatype == "BYTES":
        return [_digits(x, name, max_digits) for x in _unpack_bytes(raw, count, name)]
    dtype = np.dtype(INT_TYPES[datatype])
    if len(raw) != count * dtype.itemsize:
        raise V2Error(
            f"input {name!r}: {count} {datatype} elements take {count * dtype.itemsize} bytes, "
            f"got {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype)
    if dtype.kind == "i" and (array < 0).any():
        raise V2Error(f"input {name!r}: values must be non-negative")
    return array.tolist()


def _unpack_bytes(raw: bytes, count: int, name: str) -> list[bytes]:
    """Split BYTES tensor data into exactly `count` length-prefixed elements."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise V2Error(f"input {name!r}: BYTES data ends inside a length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise V2Error(f"input {name!r}: BYTES element of {size} bytes runs past its data")
        items.append(raw[offset : offset + size])
        offset += size
        if len(items) > count:
            break
    if len(items) != count:
        raise V2Error(f"input {name!r}: shape needs {count} BYTES elements, got another count")
    return items


def _input(
    tensor: dict, binary: bytes, max_batch: int, max_digits: int
) -> tuple[str, str, list[int], int]:
    """Decode one input tensor; return (name, datatype, values, bytes of binary data used)."""
    name, datatype = tensor.get("name"), tensor.get("datatype")
    if not isinstance(name, str) or name not in INPUT_NAMES:
        raise V2Error(f"unknown input {name!r}: model {MODEL_NAME} takes inputs 'a' and 'b'")
    if not isinstance(datatype, str) or (datatype != "BYTES" and datatype not in INT_TYPES):
        raise V2Error(
            f"input {name!r}: datatype {datatype!r} is not accepted; use INT64, UINT64, INT32 "
            "(or another integer type), or BYTES holding decimal strings"
        )
    shape = _shape(tensor, name, max_batch)
    params = _object(tensor.get("parameters", {}), f"input {name!r}: parameters")
    if any(key in params for key in UNSUPPORTED_PARAMS):
        raise V2Error(f"input {name!r}: shared memory is not supported by this server")
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise V2Error(f"input {name!r}: needs 'data' or parameters.binary_data_size")
        values = _json_ints(_flatten(tensor["data"], shape, name), datatype, name, max_digits)
        return name, datatype, values, 0
    if "data" in tensor:
        raise V2Error(f"input {name!r}: give either 'data' or binary_data_size, not both")
    size = integer(size)
    if size is None or size < 0:
        raise V2Error(f"input {name!r}: binary_data_size must be a non-negative integer")
    if size > len(binary):
        raise V2Error(
            f"input {name!r}: binary_data_size {size} is more than the {len(binary)} bytes "
            "of binary data left in the body"
        )
    values = _binary_ints(binary[:size], shape[0], datatype, name, max_digits)
    return name, datatype, values, size


def _outputs(value: object, binary_default: bool) -> tuple[RequestedOutput, ...]:
    """Which outputs to return and how; none named means all of them."""
    if value is None or value == []:
        return tuple(RequestedOutput(name, binary_default) for name in OUTPUT_TYPES)
    if not isinstance(value, list):
        raise V2Error("outputs must be a list of objects")
    chosen: dict[str, RequestedOutput] = {}
    for item in value:
        name = _object(item, "each requested output").get("name")
        if not isinstance(name, str) or name not in OUTPUT_TYPES:
            raise V2Error(f"unknown output {name!r}: model {MODEL_NAME} has {list(OUTPUT_TYPES)}")
        if name in chosen:
            raise V2Error(f"output {name!r} is requested twice")
        params = _object(item.get("parameters", {}), f"output {name!r}: parameters")
        if any(key in params for key in UNSUPPORTED_PARAMS):
            raise V2Error(f"output {name!r}: shared memory is not supported by this server")
        if params.get("classification", 0) not in (0, False):
            raise V2Error(f"output {name!r}: classification is not supported by this model")
        binary = params.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise V2Error(f"output {name!r}: binary_data must be true or false")
        chosen[name] = RequestedOutput(name, binary)
    return tuple(chosen.values())


def _request_parameters(header: dict, binary_output: bool) -> tuple[dict[str, Any], bool]:
    """The request-level parameters, and binary_data_output (the binary data extension's)."""
    params = _object(header.get("parameters", {}), "parameters")
    binary = params.get("binary_data_output", binary_output)
    if not isinstance(binary, bool):
        raise V2Error("parameters.binary_data_output must be true or false")
    return params, binary


def parse_infer_request(
    body: bytes, header_length: str | None, max_batch: int, max_digits: int
) -> InferRequest:
    """Decode and validate a whole inference request, JSON or binary tensor data."""
    header, binary = split_body(body, header_length)
    return parse_infer_header(header, binary, max_batch, max_digits)


def parse_infer_header(
    header: dict, binary: bytes, max_batch: int, max_digits: int, binary_output: bool = False
) -> InferRequest:
    """Validate a request given as its JSON header and the binary tensor data after it.

    gRPC requests come here too, mapped to the same header (service.grpc_api), so both
    protocols follow one set of rules; binary_output is the default of binary_data_output.
    """
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2Error("id must be a string")
    params, binary_default = _request_parameters(header, binary_output)
    inputs = header.get("inputs")
    if not isinstance(inputs, list):
        raise V2Error("inputs must be a list of tensors")
    decoded: dict[str, tuple[str, list[int]]] = {}
    used = 0
    for tensor in inputs:
        name, datatype, values, size = _input(
            _object(tensor, "each input"), binary[used:], max_batch, max_digits
        )
        if name in decoded:
            raise V2Error(f"input {name!r} is given twice")
        decoded[name] = (datatype, values)
        used += size
    if missing := [name for name in INPUT_NAMES if name not in decoded]:
        raise V2Error(f"missing inputs {missing}: model {MODEL_NAME} needs 'a' and 'b'")
    if used != len(binary):
        raise V2Error(
            f"the body holds {len(binary)} bytes of binary data, the inputs declare {used}"
        )
    (type_a, a), (type_b, b) = decoded["a"], decoded["b"]
    if len(a) != len(b):
        raise V2Error(f"inputs 'a' and 'b' must have the same length, got {len(a)} and {len(b)}")
    if (type_a == "BYTES") != (type_b == "BYTES"):
        raise V2Error("inputs 'a' and 'b' must both be integers or both be BYTES")
    if not a:
        raise V2Error("inputs 'a' and 'b' must hold at least one element")
    outputs = _outputs(header.get("outputs"), binary_default)
    return InferRequest(request_id, params, a, b, type_a == "BYTES", outputs)


def metadata_tensor(name: str, datatype: str) -> dict[str, Any]:
    """A tensor of the model's metadata: one dimension, any length."""
    return {"name": name, "datatype": datatype, "shape": [-1]}


def model_metadata(versions: list[str]) -> dict[str, Any]:
    """Name, versions, platform and tensors, as both protocols answer them."""
    return {
        "name": MODEL_NAME,
        "versions": versions,
        "platform": "numpy",
        "inputs": [metadata_tensor("a", INPUT_DATATYPE), metadata_tensor("b", INPUT_DATATYPE)],
        "outputs": [metadata_tensor(name, datatype) for name, datatype in OUTPUT_TYPES.items()],
    }


def outputs(
    req: InferRequest, sums: list[int], bits: int
) -> list[tuple[RequestedOutput, str, list]]:
    """The requested output tensors, computed from the predicted sums only as needed."""
    tensors: list[tuple[RequestedOutput, str, list]] = []
    for requested in req.outputs:
        if requested.name == "sum" and req.text:
            tensors.append((requested, "BYTES", [str(s) for s in sums]))
        elif requested.name == "sum":
            if max(sums) > INT64_MAX:
                raise V2Error(
                    "a predicted sum does not fit the INT64 'sum' output; send 'a' and 'b' "
                    "as BYTES (decimal strings) to get 'sum' as BYTES, or leave 'sum' out "
                    "of the requested outputs"
                )
            tensors.append((requested, "INT64", sums))
        elif requested.name == "binary":
            width = f"0{bits}b"
            tensors.append((requested, "BYTES", [format(s, width) for s in sums]))
        else:
            correct = [s == x + y for s, x, y in zip(sums, req.a, req.b, strict=True)]
            tensors.append((requested, "BOOL", correct))
    return tensors


def _bytes_tensor(values: list[str]) -> bytes:
    """Length-prefixed ASCII strings; many of equal width (the `binary` output) through numpy."""
    widths, text = set(map(len, values)), "".join(values)
    if len(values) <= SMALL or len(widths) != 1 or not text or not text.isascii():
        return b"".join(struct.pack("<I", len(v)) + v for v in (s.encode() for s in values))
    (width,) = widths
    rows = np.empty((len(values), 4 + width), dtype=np.uint8)
    rows[:, :4] = np.frombuffer(struct.pack("<I", width), dtype=np.uint8)
    rows[:, 4:] = np.frombuffer(text.encode(), dtype=np.uint8).reshape(-1, width)
    return rows.tobytes()


def tensor_bytes(datatype: str, values: list) -> bytes:
    """Raw tensor bytes as the binary data extension lays them out."""
    if datatype == "BYTES":
        return _bytes_tensor(values)
    if datatype == "BOOL":
        return bytes(bytearray(values))
    if len(values) <= SMALL:
        return struct.pack(f"<{len(values)}q", *values)
    return np.asarray(values, dtype="<i8").tobytes()


def encode_infer_response(
    header: dict[str, Any], outputs: list[tuple[RequestedOutput, str, list]]
) -> tuple[bytes, int | None]:
    """Build the response body; return it with the JSON header length when binary data follows."""
    tensors, chunks = [], []
    for requested, datatype, values in outputs:
        tensor: dict[str, Any] = {"name": requested.name, "datatype": datatype,
                                  "shape": [len(values)]}
        if requested.binary:
            raw = tensor_bytes(datatype, values)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = values
        tensors.append(tensor)
    head = json.dumps({**header, "outputs": tensors}, separators=(",", ":")).encode()
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)
