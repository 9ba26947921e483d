"""The gRPC codec of ModelInfer: requests to the one core's input, its answers to wire bytes.

No generated module is imported here: requests are read by field name only, so tests can build
them with any stubs of the protocol's .proto (tritonclient's among them), and answers are
written in protobuf's wire format directly, which tests parse back with those stubs.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

import numpy as np

from service import oip
from service.errors import V2Error

# The repeated field of InferTensorContents that holds each accepted datatype.
CONTENTS_FIELDS = {
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "BYTES": "bytes_contents",
}
SMALL = oip.SMALL  # inputs of up to this many values are unpacked by struct, larger by numpy


def parameter(value: Any) -> Any:
    """The Python value of an InferParameter; None when no kind is set."""
    kind = value.WhichOneof("parameter_choice")
    return None if kind is None else getattr(value, kind)


def parameters(values: Any) -> dict[str, Any]:
    """A protobuf parameter map as the dict REST requests carry."""
    return {key: parameter(value) for key, value in values.items()}


def _contents(tensor: Any) -> list:
    """The elements of an input given as contents, from the field its datatype names."""
    field = CONTENTS_FIELDS.get(tensor.datatype)
    if field is None:
        return []  # the codec refuses the datatype itself, with the list of accepted ones
    given = [f.name for f, _ in tensor.contents.ListFields()]
    if any(name != field for name in given):
        raise V2Error(f"input {tensor.name!r}: {tensor.datatype} elements go in contents.{field}"
                      f", got {', '.join(given)}")
    return list(getattr(tensor.contents, field))


def infer_header(request: Any) -> tuple[dict[str, Any], bytes]:
    """The REST header and binary data equivalent to a ModelInferRequest."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise V2Error(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} "
                      "inputs; give one per input, in input order")
    inputs = []
    for index, tensor in enumerate(request.inputs):
        params = parameters(tensor.parameters)
        params.pop("binary_data_size", None)  # REST's framing; gRPC frames each input itself
        item: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                                "shape": list(tensor.shape), "parameters": params}
        if raw:
            if tensor.HasField("contents"):
                raise V2Error(f"input {tensor.name!r}: give contents or raw_input_contents, "
                              "not both")
            params["binary_data_size"] = len(raw[index])
        elif tensor.HasField("contents"):
            item["data"] = _contents(tensor)
        else:
            raise V2Error(f"input {tensor.name!r}: needs contents or raw_input_contents")
        inputs.append(item)
    outputs = [{"name": o.name, "parameters": parameters(o.parameters)} for o in request.outputs]
    header = {"inputs": inputs, "outputs": outputs, "parameters": parameters(request.parameters)}
    return header, b"".join(raw)


SMALL_FORMATS = tuple(f"<{n}q" for n in range(SMALL + 1))  # struct formats, built once
ALL_OUTPUTS = tuple(oip.RequestedOutput(name, True) for name in oip.OUTPUT_TYPES)


def _raw_int64(tensor: Any, raw: bytes, max_batch: int) -> list[int] | None:
    """One input of the usual call: INT64 of shape [N], raw, non-negative; else None."""
    if tensor.datatype != "INT64" or tensor.parameters or tensor.HasField("contents"):
        return None
    shape = tensor.shape
    if len(shape) != 1:
        return None
    count = shape[0]
    if not 0 < count <= max_batch or len(raw) != 8 * count:
        return None
    if count <= SMALL:  # struct beats numpy's set-up for a few values
        ints = list(struct.unpack(SMALL_FORMATS[count], raw))
        return None if min(ints) < 0 else ints
    array = np.frombuffer(raw, dtype="<i8")
    return None if (array < 0).any() else array.tolist()


def common_request(request: Any, max_batch: int) -> oip.InferRequest | None:
    """The usual call, raw INT64 'a' and 'b' of shape [N] without parameters, decoded directly.

    It gives exactly the InferRequest that the mapping to REST's header gives (tested on
    generated requests); any other request gives None and goes that way, with every rule.
    Fields are read by index, not iterated: each protobuf container walk costs microseconds.
    """
    inputs, raw = request.inputs, request.raw_input_contents
    if request.parameters or len(inputs) != 2 or len(raw) != 2:
        return None
    first, second = inputs[0], inputs[1]
    names = first.name, second.name
    if names == ("a", "b"):
        a, b = _raw_int64(first, raw[0], max_batch), _raw_int64(second, raw[1], max_batch)
    elif names == ("b", "a"):
        b, a = _raw_int64(first, raw[0], max_batch), _raw_int64(second, raw[1], max_batch)
    else:
        return None
    if a is None or b is None:
        return None
    outputs = ALL_OUTPUTS
    if request.outputs:
        chosen: list[oip.RequestedOutput] = []
        for output in request.outputs:
            if output.parameters or output.name not in oip.OUTPUT_TYPES \
                    or any(c.name == output.name for c in chosen):
                return None
            chosen.append(oip.RequestedOutput(output.name, True))
        outputs = tuple(chosen)
    return oip.InferRequest(None, {}, a, b, False, outputs)


# --- ModelInferResponse in protobuf's wire format ----------------------------------------------
# A tag is (field number << 3 | wire type): 0 a varint, 1 eight bytes, 2 length-delimited.
RESPONSE_FIELDS = {"model_name": b"\x0a", "model_version": b"\x12", "id": b"\x1a",
                   "parameters": b"\x22", "outputs": b"\x2a", "raw_output_contents": b"\x32"}
TENSOR_FIELDS = {"name": b"\x0a", "datatype": b"\x12", "shape": b"\x1a", "contents": b"\x2a"}
ENTRY_KEY, ENTRY_VALUE = b"\x0a", b"\x12"  # a map entry is a message {key = 1; value = 2}
# InferTensorContents: bool_contents = 1, int64_contents = 3 (both packed), bytes_contents = 8.
CONTENTS_TAGS = {"BOOL": b"\x0a", "INT64": b"\x1a", "BYTES": b"\x42"}
VARINT_SHIFTS = np.arange(0, 70, 7, dtype=np.uint64)  # the ten 7-bit groups of a 64-bit value


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint, low group first; a negative int64 as its 64-bit complement."""
    if 0 <= value < 0x80:
        return bytes((value,))
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, the payload's length as a varint, the payload."""
    return tag + varint(len(payload)) + payload


def packed_varints(values: list[int]) -> bytes:
    """int64 values as a packed repeated field's payload; thousands at once through numpy.

    Each value's ten 7-bit groups are cut out together; a value keeps the groups up to its
    highest non-zero one (at least one), all but the last marked by the 0x80 continuation bit.
    """
    if len(values) <= SMALL:
        return b"".join(map(varint, values))
    groups = (np.asarray(values, dtype=np.int64).view(np.uint64)[:, None] >> VARINT_SHIFTS) \
        & np.uint64(0x7F)
    used = groups != 0
    lengths = np.where(used.any(axis=1), len(VARINT_SHIFTS) - np.argmax(used[:, ::-1], axis=1), 1)
    index = np.arange(len(VARINT_SHIFTS))
    groups |= np.where(index < (lengths - 1)[:, None], np.uint64(0x80), np.uint64(0))
    return groups.astype(np.uint8)[index < lengths[:, None]].tobytes()


@functools.lru_cache(maxsize=256, typed=True)
def parameter_entry(key: str, value: Any) -> bytes:
    """One entry of a parameters map: InferParameter's bool (1), int64 (2) or string (3).

    Cached: an answer's parameters (bits, trusted, forced) take few values.
    """
    if isinstance(value, bool):
        choice = b"\x08" + (b"\x01" if value else b"\x00")
    elif isinstance(value, int):
        choice = b"\x10" + varint(value)
    elif isinstance(value, str):
        choice = field(b"\x1a", value.encode())
    else:
        raise TypeError(f"no InferParameter kind is written for {type(value).__name__}")
    return field(RESPONSE_FIELDS["parameters"],
                 field(ENTRY_KEY, key.encode()) + field(ENTRY_VALUE, choice))


@functools.lru_cache(maxsize=256)
def answer_head(model_name: str, version: str) -> bytes:
    """model_name and model_version, the same for every answer of one version (cached)."""
    return (field(RESPONSE_FIELDS["model_name"], model_name.encode())
            + field(RESPONSE_FIELDS["model_version"], version.encode()))


@functools.lru_cache(maxsize=256)
def tensor_head(name: str, datatype: str, count: int) -> bytes:
    """An output tensor's name, datatype and shape [count] (cached: few outputs, few sizes)."""
    return (field(TENSOR_FIELDS["name"], name.encode())
            + field(TENSOR_FIELDS["datatype"], datatype.encode())
            + field(TENSOR_FIELDS["shape"], varint(count)))


def contents_message(datatype: str, values: list) -> bytes:
    """An InferTensorContents holding `values` in the field their datatype names."""
    tag = CONTENTS_TAGS[datatype]
    if datatype == "BYTES":
        return b"".join(field(tag, value.encode()) for value in values)
    # Packed bools are one byte each, as the raw tensor lays them out.
    payload = oip.tensor_bytes(datatype, values) if datatype == "BOOL" else packed_varints(values)
    return field(tag, payload)


def infer_response(model_name: str, version: str, request_id: str, parameters: dict[str, Any],
                   tensors: list[tuple[oip.RequestedOutput, str, list]], raw: bool) -> bytes:
    """A serialized ModelInferResponse: outputs in raw_output_contents when `raw`, else contents.

    Written directly, not through generated classes, from cached pieces: building the message
    field by field costs more than the whole inference of a single pair (docs/benchmarks.md).
    """
    parts = [answer_head(model_name, version)]
    if request_id:
        parts.append(field(RESPONSE_FIELDS["id"], request_id.encode()))
    parts.extend(parameter_entry(key, value) for key, value in parameters.items())
    chunks = []
    for requested, datatype, values in tensors:
        head = tensor_head(requested.name, datatype, len(values))
        if raw:
            chunks.append(field(RESPONSE_FIELDS["raw_output_contents"],
                                oip.tensor_bytes(datatype, values)))
        else:
            head += field(TENSOR_FIELDS["contents"], contents_message(datatype, values))
        parts.append(field(RESPONSE_FIELDS["outputs"], head))
    return b"".join(parts + chunks)
