"""gRPC inference requests as the one codec's input: ModelInferRequest to REST's header, or direct.

No generated module is imported here: messages are read by field name only, so tests can build
them with any stubs of the protocol's .proto (tritonclient's among them).
"""

from __future__ import annotations

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
SMALL = 16  # inputs of up to this many values are unpacked by struct, larger ones by numpy


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


def common_request(request: Any, max_batch: int) -> oip.InferRequest | None:
    """The usual call, raw INT64 'a' and 'b' of shape [N] without parameters, decoded directly.

    It gives exactly the InferRequest that the mapping to REST's header gives (tested on
    generated requests); any other request gives None and goes that way, with every rule.
    """
    if request.parameters or len(request.inputs) != 2 or len(request.raw_input_contents) != 2:
        return None
    values: dict[str, list[int]] = {}
    for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True):
        if tensor.datatype != "INT64" or tensor.parameters or tensor.HasField("contents"):
            return None
        shape = tensor.shape
        if len(shape) != 1 or not 0 < shape[0] <= max_batch or len(raw) != 8 * shape[0]:
            return None
        if shape[0] <= SMALL:  # struct beats numpy's set-up for a few values
            ints = list(struct.unpack(f"<{shape[0]}q", raw))
            if min(ints) < 0:
                return None
        else:
            array = np.frombuffer(raw, dtype="<i8")
            if (array < 0).any():
                return None
            ints = array.tolist()
        values[tensor.name] = ints
    if len(values) != 2 or "a" not in values or "b" not in values:
        return None
    chosen: list[oip.RequestedOutput] = []
    for output in request.outputs:
        if output.parameters or output.name not in oip.OUTPUT_TYPES \
                or any(c.name == output.name for c in chosen):
            return None
        chosen.append(oip.RequestedOutput(output.name, True))
    outputs = tuple(chosen) or tuple(oip.RequestedOutput(n, True) for n in oip.OUTPUT_TYPES)
    return oip.InferRequest(None, {}, values["a"], values["b"], False, outputs)
