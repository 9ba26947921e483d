"""The Open Inference Protocol over gRPC against a real 2-worker gunicorn, spoken by
tritonclient.grpc and by raw protobuf messages of tritonclient's own generated stubs.

No module of service.proto is imported here: it defines the same protobuf package
(`inference`) as tritonclient's stubs, and one process holds only one of them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests import servers
from tests.conftest import clone_version, corrupt_version
from training.store import ModelStore

pytestmark = pytest.mark.integration

MODEL = "rnnadd"
INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    """gunicorn with 2 workers serving REST and gRPC; ended by PID."""
    running = servers.start_server(tmp_path_factory.mktemp("grpc"), workers=2, grpc=True,
                                   env={"RNNADD_MAX_BATCH": "10000"})
    try:
        yield running
    finally:
        servers.stop_server(running)


@pytest.fixture(scope="module")
def client(server: servers.Server) -> Iterator[grpcclient.InferenceServerClient]:
    triton = grpcclient.InferenceServerClient(server.grpc)
    try:
        yield triton
    finally:
        triton.close()


@pytest.fixture(scope="module")
def stub(server: servers.Server) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def tensors(a: np.ndarray, b: np.ndarray, datatype: str = "INT64") -> list:
    """Inputs as tritonclient builds them (raw_input_contents)."""
    built = []
    for name, values in (("a", a), ("b", b)):
        tensor = grpcclient.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values)
        built.append(tensor)
    return built


def int64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def active(server: servers.Server) -> str:
    return (server.model_dir / "CURRENT").read_text().strip()


def test_health_and_readiness(client: grpcclient.InferenceServerClient,
                              server: servers.Server) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, active(server))


def test_metadata_matches_rest(client: grpcclient.InferenceServerClient,
                               server: servers.Server) -> None:
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == MODEL and meta["version"]
    model = client.get_model_metadata(MODEL, as_json=True)
    rest = requests.get(f"{server.url}/v2/models/{MODEL}", timeout=5).json()
    for key in ("name", "versions", "platform", "inputs", "outputs"):
        got = model[key]
        if key in ("inputs", "outputs"):  # protobuf's JSON writes int64 as strings
            got = [{**t, "shape": [int(d) for d in t["shape"]]} for t in got]
        assert got == rest[key], key
    versioned = client.get_model_metadata(MODEL, active(server), as_json=True)
    assert versioned["name"] == MODEL


@pytest.mark.parametrize("version", [False, True])
def test_infer_raw_int64(client: grpcclient.InferenceServerClient, server: servers.Server,
                         version: bool) -> None:
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 2**40, 500), rng.integers(0, 2**40, 500)
    result = client.infer(MODEL, tensors(a, b), model_version=active(server) if version else "",
                          request_id="req-7")
    np.testing.assert_array_equal(result.as_numpy("sum"), a + b)
    assert result.as_numpy("correct").all()
    bits = result.get_response().parameters["bits"].int64_param
    assert bits == max(8, int((a + b).max()).bit_length())
    expected = [format(int(x), f"0{bits}b").encode() for x in a + b]
    assert result.as_numpy("binary").tolist() == expected
    response = result.get_response()
    assert response.model_version == active(server) and response.id == "req-7"
    assert len(response.raw_output_contents) == 3 and not response.outputs[0].HasField("contents")


@pytest.mark.parametrize("datatype, dtype", [("INT32", np.int32), ("UINT64", np.uint64),
                                             ("UINT8", np.uint8), ("INT16", np.int16)])
def test_every_integer_type_adds(client: grpcclient.InferenceServerClient, datatype: str,
                                 dtype: Any) -> None:
    a, b = np.array([3, 100], dtype=dtype), np.array([5, 27], dtype=dtype)
    result = client.infer(MODEL, tensors(a, b, datatype))
    assert result.as_numpy("sum").tolist() == [8, 127]


def test_bytes_inputs_wider_than_64_bits(client: grpcclient.InferenceServerClient) -> None:
    big = np.array([str(2**100).encode(), b"7"], dtype=np.object_)
    one = np.array([b"1", b"8"], dtype=np.object_)
    result = client.infer(MODEL, tensors(big, one, "BYTES"),
                          outputs=[grpcclient.InferRequestedOutput("sum")])
    assert result.as_numpy("sum").tolist() == [str(2**100 + 1).encode(), b"15"]
    assert [o.name for o in result.get_response().outputs] == ["sum"]


def test_bits_parameter_and_chosen_outputs(client: grpcclient.InferenceServerClient) -> None:
    result = client.infer(MODEL, tensors(int64(3), int64(5)), parameters={"bits": 4},
                          outputs=[grpcclient.InferRequestedOutput("binary")])
    assert result.as_numpy("binary").tolist() == [b"1000"]
    assert result.get_response().parameters["bits"].int64_param == 4


def contents_request(**extra: Any) -> pb.ModelInferRequest:
    """A request whose inputs are `contents` (as KServe's Python clients send)."""
    request = pb.ModelInferRequest(model_name=MODEL, **extra)
    for name, values in (("a", [3, 100, 2**62]), ("b", [5, 27, 2**62 - 1])):
        tensor = request.inputs.add(name=name, datatype="INT64", shape=[3])
        tensor.contents.int64_contents.extend(values)
    return request


def test_contents_in_contents_out(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    response = stub.ModelInfer(contents_request(id="c-1"), timeout=10)
    assert not response.raw_output_contents and response.id == "c-1"
    outputs = {o.name: o for o in response.outputs}
    assert list(outputs["sum"].contents.int64_contents) == [8, 127, 2**63 - 1]
    assert list(outputs["correct"].contents.bool_contents) == [True] * 3
    assert outputs["binary"].contents.bytes_contents[0] == b"0" * 56 + b"00001000"
    assert list(outputs["sum"].shape) == [3] and outputs["sum"].datatype == "INT64"


def test_raw_outputs_on_request_for_contents_inputs(
        stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = contents_request()
    request.parameters["binary_data_output"].bool_param = True
    response = stub.ModelInfer(request, timeout=10)
    sums = np.frombuffer(response.raw_output_contents[0], dtype="<i8").tolist()
    assert sums == [8, 127, 2**63 - 1]


def test_request_id_metadata_is_echoed_and_logged(
        stub: service_pb2_grpc.GRPCInferenceServiceStub, server: servers.Server) -> None:
    _, call = stub.ModelInfer.with_call(contents_request(), timeout=10,
                                        metadata=(("x-request-id", "grpc-log-1"),))
    assert ("x-request-id", "grpc-log-1") in call.trailing_metadata()
    lines = [json.loads(line) for line in server.log_text().splitlines()
             if '"grpc-log-1"' in line]
    assert lines and lines[-1]["path"] == INFER and lines[-1]["status"] == "OK"
    assert lines[-1]["protocol"] == "grpc" and lines[-1]["duration_ms"] >= 0


def test_metrics_count_grpc_beside_http(client: grpcclient.InferenceServerClient,
                                        server: servers.Server) -> None:
    def count(status: str) -> float:
        text = requests.get(f"{server.url}/metrics", timeout=5).text
        key = (f'rnnadd_http_requests_total{{endpoint="{INFER}",method="POST",'
               f'protocol="grpc",status="{status}"}}')
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(key))

    ok, bad = count("OK"), count("INVALID_ARGUMENT")
    client.infer(MODEL, tensors(int64(1), int64(2)))
    with pytest.raises(InferenceServerException):
        client.infer(MODEL, tensors(int64(1), int64(-2)))
    assert (count("OK"), count("INVALID_ARGUMENT")) == (ok + 1, bad + 1)


def raw_request(a: bytes, b: bytes, datatype: str = "INT64", shape: int = 1) -> Any:
    request = pb.ModelInferRequest(model_name=MODEL)
    for name in ("a", "b"):
        request.inputs.add(name=name, datatype=datatype, shape=[shape])
    request.raw_input_contents.extend([a, b])
    return request


def one(value: int) -> bytes:
    return struct.pack("<q", value)


def edit(change: Callable[[pb.ModelInferRequest], None]) -> pb.ModelInferRequest:
    request = contents_request()
    change(request)
    return request


def _bits(value: Any) -> Callable[[pb.ModelInferRequest], None]:
    def change(request: pb.ModelInferRequest) -> None:
        parameter = request.parameters["bits"]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, str):
            parameter.string_param = value
        else:
            parameter.int64_param = value
    return change


# (request, expected code, words the message must hold): the same rules as /v2 REST.
BAD = [
    (pb.ModelInferRequest(model_name="other"), "NOT_FOUND", "unknown model 'other'"),
    (pb.ModelInferRequest(model_name=MODEL, model_version="20990101T000000Z-abcdef"),
     "NOT_FOUND", "Unknown version"),
    (pb.ModelInferRequest(model_name=MODEL, model_version="../etc"), "NOT_FOUND", "version"),
    (pb.ModelInferRequest(model_name=MODEL), "INVALID_ARGUMENT", "missing inputs ['a', 'b']"),
    (edit(lambda r: r.inputs.pop()), "INVALID_ARGUMENT", "missing inputs ['b']"),
    (edit(lambda r: setattr(r.inputs[0], "name", "c")), "INVALID_ARGUMENT", "unknown input 'c'"),
    (edit(lambda r: setattr(r.inputs[0], "datatype", "FP32")), "INVALID_ARGUMENT",
     "datatype 'FP32' is not accepted"),
    (edit(lambda r: r.inputs[0].contents.int_contents.append(1)), "INVALID_ARGUMENT",
     "INT64 elements go in contents.int64_contents"),
    (edit(lambda r: r.inputs[0].shape.append(2)), "INVALID_ARGUMENT", "shape must be [N] or"),
    (edit(lambda r: r.inputs[0].ClearField("contents")), "INVALID_ARGUMENT",
     "needs contents or raw_input_contents"),
    (edit(lambda r: r.inputs[0].contents.int64_contents.__setitem__(0, -3)), "INVALID_ARGUMENT",
     "non-negative"),
    (edit(lambda r: r.inputs[0].shape.__setitem__(0, 10001)), "RESOURCE_EXHAUSTED",
     "exceed the limit of 10000"),
    (edit(lambda r: r.outputs.add(name="carry")), "INVALID_ARGUMENT", "unknown output 'carry'"),
    (edit(lambda r: [r.outputs.add(name="sum") for _ in range(2)]), "INVALID_ARGUMENT",
     "requested twice"),
    (edit(_bits(2)), "INVALID_ARGUMENT", "bits=2 is too small"),
    (edit(_bits(5000)), "INVALID_ARGUMENT", "between 1 and 4096"),
    (edit(_bits("8")), "INVALID_ARGUMENT", "bits must be an integer, got a string"),
    (edit(_bits(True)), "INVALID_ARGUMENT", "bits must be an integer"),
    (edit(lambda r: r.inputs[0].parameters["shared_memory_region"].CopyFrom(
        pb.InferParameter(string_param="region"))), "INVALID_ARGUMENT",
     "shared memory is not supported"),
    (raw_request(one(1), one(2) + one(3)), "INVALID_ARGUMENT", "take 8 bytes, got 16"),
    (raw_request(one(1), b""), "INVALID_ARGUMENT", "take 8 bytes, got 0"),
    (raw_request(struct.pack("<I", 2) + b"1x", struct.pack("<I", 1) + b"1", "BYTES"),
     "INVALID_ARGUMENT", "is not a string of decimal digits"),
    (raw_request(struct.pack("<I", 9) + b"1", struct.pack("<I", 1) + b"1", "BYTES"),
     "INVALID_ARGUMENT", "runs past its data"),
    (raw_request(one(1), one(2), shape=2), "INVALID_ARGUMENT", "2 INT64 elements take 16 bytes"),
    (edit(lambda r: r.raw_input_contents.append(one(1))), "INVALID_ARGUMENT",
     "raw_input_contents has 1 entries for 2 inputs"),
    (raw_request(struct.pack("<I", 4000) + b"9" * 4000, struct.pack("<I", 1) + b"1", "BYTES"),
     "INVALID_ARGUMENT", "too wide"),
]


@pytest.mark.parametrize("request_message, code, fragment", BAD,
                         ids=[f"{i}-{c}" for i, (_, c, _f) in enumerate(BAD)])
def test_bad_requests_get_the_protocols_status(
        stub: service_pb2_grpc.GRPCInferenceServiceStub, request_message: Any, code: str,
        fragment: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request_message, timeout=10)
    assert info.value.code() == grpc.StatusCode[code], info.value.details()
    assert fragment in info.value.details()


def test_int64_overflow_of_sum_says_what_to_do(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, tensors(int64(2**63 - 1), int64(1)))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "send 'a' and 'b' as BYTES" in info.value.message()


def test_work_limit_is_resource_exhausted(client: grpcclient.InferenceServerClient) -> None:
    a = np.full(1000, 1, dtype=np.int64)
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, tensors(a, a), parameters={"bits": 4000})
    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "pair-bits of work" in info.value.message()


@pytest.mark.parametrize("call, code", [
    (lambda c: c.get_model_metadata("other"), "NOT_FOUND"),
    (lambda c: c.get_model_metadata(MODEL, "20990101T000000Z-abcdef"), "NOT_FOUND"),
    (lambda c: c.is_model_ready("other"), "NOT_FOUND"),
    (lambda c: c.is_model_ready(MODEL, "20990101T000000Z-abcdef"), "NOT_FOUND"),
])
def test_unknown_models_and_versions(client: grpcclient.InferenceServerClient, call: Callable,
                                     code: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        call(client)
    assert info.value.status() == f"StatusCode.{code}", info.value.message()


def test_a_version_that_does_not_load_is_not_ready_and_failed_precondition(
        client: grpcclient.InferenceServerClient, server: servers.Server) -> None:
    broken = corrupt_version(ModelStore(server.model_dir))
    assert not client.is_model_ready(MODEL, broken)
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, tensors(int64(1), int64(2)), model_version=broken)
    assert info.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert f"Version {broken} is not ready" in info.value.message()


@pytest.mark.parametrize("method", ["ModelInfer", "ModelMetadata", "ModelReady", "ServerLive"])
@pytest.mark.parametrize("payload", [b"\xff\xff\xff", b"\x0a\x05ab", b"\x08" + b"\x80" * 11])
def test_undecodable_messages_are_invalid_argument(server: servers.Server, method: str,
                                                   payload: bytes) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
        with pytest.raises(grpc.RpcError) as info:
            call(payload, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a valid inference." in info.value.details()
    assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200


def test_unknown_method_is_unimplemented(server: servers.Server) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelStreamInfer")
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_batch_of_ten_thousand_pairs(client: grpcclient.InferenceServerClient) -> None:
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 2**62, 10_000), rng.integers(0, 2**62, 10_000)
    result = client.infer(MODEL, tensors(a, b), outputs=[grpcclient.InferRequestedOutput("sum")])
    np.testing.assert_array_equal(result.as_numpy("sum"), a + b)


def test_a_stored_version_that_fails_the_gate_answers_only_admins(
        client: grpcclient.InferenceServerClient, server: servers.Server) -> None:
    flipped = clone_version(ModelStore(server.model_dir), flip_output=True)
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, tensors(int64(3), int64(5)), model_version=flipped)
    assert info.value.status() == "StatusCode.PERMISSION_DENIED"
    assert "not trusted" in info.value.message()
    assert not client.is_model_ready(MODEL, flipped)
    wrong = {"authorization": "Bearer not-the-token"}
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, tensors(int64(3), int64(5)), model_version=flipped, headers=wrong)
    assert info.value.status() == "StatusCode.UNAUTHENTICATED"
    admin = {"authorization": f"Bearer {server.token}"}
    result = client.infer(MODEL, tensors(int64(3), int64(5)), model_version=flipped,
                          headers=admin)
    params = result.get_response().parameters
    assert result.get_response().model_version == flipped
    assert (params["trusted"].bool_param, params["forced"].bool_param) == (False, False)
    assert client.is_model_ready(MODEL, flipped, headers=admin)
    trusted = client.infer(MODEL, tensors(int64(3), int64(5)), model_version=active(server))
    assert set(trusted.get_response().parameters) == {"bits"}
