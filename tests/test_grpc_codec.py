"""The codec: its direct decoding of the usual call gives what the mapping to REST's header
gives, and the answers it writes are the messages the generated classes would build.

Messages are built with tritonclient's stubs of the same .proto (service.proto defines the same
protobuf package, and one process holds only one of them); service.grpc_codec reads fields by
name, so it takes them as they are.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from benchmarks.grpc import grpc_message
from service import oip
from service.errors import V2Error
from service.grpc_codec import (
    common_request,
    field,
    infer_header,
    infer_response,
    packed_varints,
    varint,
)

MAX_BATCH, MAX_DIGITS = 8, 40
INT64 = st.integers(-(2**63), 2**63 - 1)


def general(request: pb.ModelInferRequest) -> oip.InferRequest | V2Error:
    """The mapping every request may take: REST's header, then the one set of rules."""
    try:
        header, binary = infer_header(request)
        return oip.parse_infer_header(header, binary, MAX_BATCH, MAX_DIGITS,
                                      binary_output=bool(request.raw_input_contents))
    except V2Error as exc:
        return exc


MUTATIONS = ("negative", "names", "count", "datatype", "shape", "binary_data_size", "contents",
             "short raw", "no raw", "output name", "output parameter", "output twice", "bits",
             "id", "one input", "three inputs")


@st.composite
def requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    """The usual call, often as it is, else changed in one to three ways."""
    changes = set(draw(st.one_of(st.just([]), st.lists(st.sampled_from(MUTATIONS), max_size=3))))
    n = draw(st.integers(1, MAX_BATCH))
    big = st.integers(0, 2**63 - 1)
    a, b = (draw(st.lists(st.one_of(st.integers(0, 1000), big), min_size=n, max_size=n))
            for _ in "ab")
    if "negative" in changes:
        a[draw(st.integers(0, n - 1))] = draw(st.integers(-(2**63), -1))
    outputs = draw(st.lists(st.sampled_from(list(oip.OUTPUT_TYPES)), unique=True, max_size=3))
    if "output name" in changes:
        outputs.append("other")
    if "output twice" in changes and outputs:
        outputs.append(outputs[0])
    request = grpc_message(a, b, tuple(outputs))
    if "names" in changes:
        request.inputs[1].name = draw(st.sampled_from(["a", "c", ""]))
    if "one input" in changes:
        del request.inputs[1]
    if "three inputs" in changes:
        request.inputs.add(name="b", datatype="INT64", shape=[n])
        request.raw_input_contents.append(request.raw_input_contents[1])
    tensor = request.inputs[0]
    if "count" in changes:
        tensor.shape[0] = draw(st.sampled_from([0, n + 1, MAX_BATCH + 1]))
    if "datatype" in changes:
        tensor.datatype = draw(st.sampled_from(["UINT64", "INT32", "BYTES", "FP64", "int64"]))
    if "shape" in changes:
        tensor.shape.append(draw(st.sampled_from([1, 2])))
    if "binary_data_size" in changes:
        tensor.parameters["binary_data_size"].int64_param = 8 * n
    if "contents" in changes:
        tensor.contents.int64_contents.extend(x for x in a if x >= 0)
    if "short raw" in changes:
        request.raw_input_contents[0] = request.raw_input_contents[0][:-1]
    if "no raw" in changes:
        del request.raw_input_contents[:]
        for tensor, values in zip(request.inputs, (a, b), strict=False):
            tensor.contents.int64_contents.extend(values)
    if "output parameter" in changes and request.outputs:
        request.outputs[0].parameters["binary_data"].bool_param = draw(st.booleans())
    if "bits" in changes:
        request.parameters["bits"].int64_param = draw(st.integers(1, 70))
    if "id" in changes:
        request.id = "call-7"
    return request


@settings(max_examples=600, deadline=None)
@given(requests())
def test_the_direct_decoding_agrees_with_the_general_one(request: pb.ModelInferRequest) -> None:
    direct, expected = common_request(request, MAX_BATCH), general(request)
    if direct is not None:  # taken: exactly the request the rules make of it
        assert direct == expected
    else:  # not taken: the rules refuse it, or it is not the usual call
        assert isinstance(expected, V2Error) or not is_usual(request)


def is_usual(request: pb.ModelInferRequest) -> bool:
    """What the direct decoding is for, written out independently of it."""
    names = [t.name for t in request.inputs]
    outputs = [o.name for o in request.outputs]
    return (sorted(names) == ["a", "b"] and not request.parameters and not request.id
            and all(t.datatype == "INT64" and len(t.shape) == 1 and not t.parameters
                    and not t.HasField("contents") for t in request.inputs)
            and len(request.raw_input_contents) == 2
            and not any(o.parameters for o in request.outputs)
            and len(set(outputs)) == len(outputs))


@pytest.mark.parametrize(("a", "b", "outputs"), [
    ([3], [5], ()),
    ([0, 2**62], [2**62, 7], ("sum",)),
    (list(range(20)), list(range(20, 40)), ("binary", "correct")),  # numpy-decoded, over SMALL
    ([1], [2], ("correct", "sum", "binary")),
])
def test_the_usual_call_is_decoded_directly(a: list[int], b: list[int],
                                            outputs: tuple[str, ...]) -> None:
    request = grpc_message(a, b, outputs)
    direct = common_request(request, 100)
    assert direct is not None
    assert direct.a == a and direct.b == b and not direct.text and direct.id is None
    assert [o.name for o in direct.outputs] == list(outputs or oip.OUTPUT_TYPES)
    assert all(o.binary for o in direct.outputs)  # raw inputs: raw outputs, as Triton answers


@pytest.mark.parametrize("change", [
    "negative", "over the batch limit", "a short raw input", "a tensor parameter",
    "a request parameter", "an output parameter", "an output twice", "UINT64", "shape [N, 1]",
])
def test_anything_else_goes_the_general_way(change: str) -> None:
    a, b = ([2**63 - 1, 1] if change != "negative" else [-1, 1]), [1, 2]
    request = grpc_message(a, b, ("sum", "sum") if change == "an output twice" else ("sum",))
    tensor = request.inputs[0]
    if change == "a short raw input":
        request.raw_input_contents[0] = request.raw_input_contents[0][:-8]
    elif change == "a tensor parameter":
        tensor.parameters["binary_data_size"].int64_param = 16
    elif change == "a request parameter":
        request.parameters["bits"].int64_param = 64
    elif change == "an output parameter":
        request.outputs[0].parameters["binary_data"].bool_param = True
    elif change == "UINT64":
        tensor.datatype = "UINT64"
    elif change == "shape [N, 1]":
        tensor.shape.append(1)
    assert common_request(request, 1 if change == "over the batch limit" else 100) is None


# --- the answer, written in protobuf's wire format ----------------------------------------------

def reference_response(version: str, request_id: str, parameters: dict[str, Any],
                       tensors: list[tuple[oip.RequestedOutput, str, list]],
                       raw: bool) -> pb.ModelInferResponse:
    """The same answer built field by field with the generated classes."""
    response = pb.ModelInferResponse(model_name=oip.MODEL_NAME, model_version=version,
                                     id=request_id)
    for key, value in parameters.items():
        kind = {bool: "bool_param", int: "int64_param", str: "string_param"}[type(value)]
        setattr(response.parameters[key], kind, value)
    for requested, datatype, values in tensors:
        tensor = response.outputs.add(name=requested.name, datatype=datatype, shape=[len(values)])
        if raw:
            response.raw_output_contents.append(oip.tensor_bytes(datatype, values))
        elif datatype == "INT64":
            tensor.contents.int64_contents.extend(values)
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(value.encode() for value in values)
        else:
            tensor.contents.bool_contents.extend(values)
    return response


VALUES = {"INT64": st.lists(INT64, min_size=1, max_size=40),
          "BOOL": st.lists(st.booleans(), min_size=1, max_size=40),
          "BYTES": st.lists(st.text(max_size=70), min_size=1, max_size=40)}


@st.composite
def answers(draw: st.DrawFn) -> tuple[str, str, dict[str, Any], list, bool]:
    """Versions, ids, parameters and output tensors of every kind the service writes."""
    parameters = draw(st.dictionaries(st.text(max_size=12), st.one_of(
        st.booleans(), INT64, st.text(max_size=20)), max_size=3))
    tensors = []
    for name in draw(st.lists(st.sampled_from(list(oip.OUTPUT_TYPES)), unique=True,
                              min_size=1, max_size=3)):
        datatype = draw(st.sampled_from(list(VALUES)))
        tensors.append((oip.RequestedOutput(name, True), datatype, draw(VALUES[datatype])))
    return (draw(st.text(max_size=40)), draw(st.text(max_size=30)), parameters, tensors,
            draw(st.booleans()))


@settings(max_examples=400, deadline=None)
@given(answers())
def test_the_written_answer_is_the_message_built_field_by_field(answer: tuple) -> None:
    version, request_id, parameters, tensors, raw = answer
    written = infer_response(oip.MODEL_NAME, version, request_id, parameters, tensors, raw)
    assert pb.ModelInferResponse.FromString(written) == reference_response(*answer)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(INT64, st.integers(0, 300), st.sampled_from([0, 127, 128, -1])),
                min_size=1, max_size=60))
def test_packed_varints_are_protobufs_own_bytes(values: list[int]) -> None:
    # Both sides of SMALL: one value at a time, and numpy's ten groups at once.
    expected = pb.InferTensorContents(int64_contents=values).SerializeToString()
    assert field(b"\x1a", packed_varints(values)) == expected


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**63 - 1, -1, -(2**63)])
def test_a_varint_reads_back_as_the_same_int64(value: int) -> None:
    parsed = pb.InferParameter.FromString(b"\x10" + varint(value))
    assert parsed.int64_param == value
