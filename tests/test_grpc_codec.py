"""The direct decoding of the usual gRPC call gives what the mapping to REST's header gives.

Messages are built with tritonclient's stubs of the same .proto (service.proto defines the same
protobuf package, and one process holds only one of them); service.grpc_codec reads fields by
name, so it takes them as they are.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from benchmarks.grpc import grpc_message
from service import oip
from service.errors import V2Error
from service.grpc_codec import common_request, infer_header

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
