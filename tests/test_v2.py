"""The Open Inference Protocol (KServe V2) endpoints through Flask's test client."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import oip
from service.app import create_app
from service.errors import V2Error
from tests.conftest import clone_version
from tests.servers import seed_models
from training.store import ModelStore
from training.train import TrainConfig, train_and_save

INFER = "/v2/models/rnnadd/infer"
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """Stored models: the active version and a second, inactive one, for versioned requests."""
    root = tmp_path_factory.mktemp("v2") / "models"
    active = seed_models(root)
    other, _ = train_and_save(TrainConfig(seed=1, hidden_size=8, certify=False), ModelStore(root),
                                 activate=False)
    return root, active, other


def trained_bits(stored: tuple[Path, str, str]) -> int:
    """The width the active model was trained on: the default `bits` for short inputs."""
    return ModelStore(stored[0]).record(stored[1])["hyperparameters"]["bits"]


def make_app(root: Path, **config: Any) -> Flask:
    """An app on the given model directory, without access log noise."""
    return create_app({"MODEL_DIR": str(root), "ACCESS_LOG": False, **config})


@pytest.fixture
def app(stored: tuple[Path, str, str]) -> Flask:
    """Overrides conftest's app: this module's store holds a second, different version."""
    return make_app(stored[0])


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    """A test client of this module's app."""
    with app.test_client() as test_client:
        yield test_client


def tensor(name: str, data: list, datatype: str = "INT64", shape: list | None = None) -> dict:
    """An explicit (JSON) input tensor."""
    return {"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": data}


def pairs(a: list, b: list, datatype: str = "INT64", **extra: Any) -> dict:
    """A JSON inference request for pairs (a[i], b[i])."""
    return {"inputs": [tensor("a", a, datatype), tensor("b", b, datatype)], **extra}


def binary_body(header: dict, *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    """A binary tensor data request body and its header."""
    head = json.dumps(header).encode()
    return head + b"".join(chunks), {HEADER: str(len(head))}


def bytes_tensor(values: list[bytes]) -> bytes:
    """BYTES elements as the binary data extension lays them out."""
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def split_binary(response: Any) -> tuple[dict, dict[str, bytes]]:
    """A binary response's JSON header and each binary output's raw bytes, by name."""
    size = int(response.headers[HEADER])
    header = json.loads(response.data[:size])
    raw, offset = {}, size
    for output in header["outputs"]:
        if "data" in output:
            continue
        length = output["parameters"]["binary_data_size"]
        raw[output["name"]] = response.data[offset : offset + length]
        offset += length
    assert offset == len(response.data)
    return header, raw


def v1_results(client: FlaskClient, a: list[int], b: list[int]) -> list[dict]:
    """What /v1 answers for the same pairs, the reference for /v2."""
    batch = {"pairs": [[x, y] for x, y in zip(a, b, strict=True)]}
    response = client.post("/v1/predict/batch", json=batch)
    assert response.status_code == 200
    return response.get_json()["results"]


def assert_error(response: Any, status: int, fragment: str = "") -> str:
    """The protocol's error object: exactly {"error": <message>} as application/json."""
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    assert fragment.lower() in body["error"].lower()
    return body["error"]


# --- health and metadata ---------------------------------------------------------------------


def test_server_metadata(client: FlaskClient) -> None:
    response = client.get("/v2")
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = response.get_json()
    assert list(body) == ["name", "version", "extensions"]
    assert body["name"] == "rnnadd"
    assert isinstance(body["version"], str) and body["version"]
    assert body["extensions"] == ["binary_tensor_data", "model_repository", "model_configuration",
                                  "statistics"]


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready",
                                  "/v2/models/rnnadd/ready"])
def test_health_is_200_with_an_empty_body(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200 and response.data == b""
    assert response.headers["X-Request-ID"]


def test_versioned_ready(client: FlaskClient, stored: tuple[Path, str, str]) -> None:
    _, active, other = stored
    for version in (active, other):
        assert client.get(f"/v2/models/rnnadd/versions/{version}/ready").status_code == 200
    missing = "/v2/models/rnnadd/versions/20000101T000000Z-000000/ready"
    assert_error(client.get(missing), 404, "no stored version")
    assert_error(client.get("/v2/models/other/ready"), 404, "unknown model 'other'")


def test_without_a_model_live_but_not_ready(tmp_path: Path) -> None:
    empty = make_app(tmp_path / "none").test_client()
    assert empty.get("/v2/health/live").status_code == 200
    assert empty.get("/v2/health/ready").status_code == 400
    assert empty.get("/v2/models/rnnadd/ready").status_code == 400
    assert_error(empty.post(INFER, json=pairs([1], [2])), 503, "No valid model")


def test_model_metadata(client: FlaskClient, stored: tuple[Path, str, str]) -> None:
    _, active, other = stored
    response = client.get("/v2/models/rnnadd")
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = response.get_json()
    assert list(body) == ["name", "versions", "platform", "inputs", "outputs", "parameters"]
    assert body["name"] == "rnnadd"
    assert body["versions"] == sorted([active, other])
    assert body["platform"] == "numpy"
    assert body["inputs"] == [
        {"name": "a", "datatype": "INT64", "shape": [-1]},
        {"name": "b", "datatype": "INT64", "shape": [-1]},
    ]
    assert body["outputs"] == [
        {"name": "sum", "datatype": "INT64", "shape": [-1]},
        {"name": "binary", "datatype": "BYTES", "shape": [-1]},
        {"name": "correct", "datatype": "BOOL", "shape": [-1]},
    ]
    gate = body["parameters"].pop("gate")
    assert body["parameters"] == {"max_bits": 4096, "max_batch": 10000, "version": active,
                                  "bits": trained_bits(stored)}
    assert gate["status"] in ("passed", "failed", "unchecked", "narrower")
    versioned = client.get(f"/v2/models/rnnadd/versions/{other}").get_json()
    assert versioned["parameters"]["version"] == other
    assert versioned["versions"] == body["versions"]


# --- inference -------------------------------------------------------------------------------


def test_infer_example_shaped_request(
    client: FlaskClient, stored: tuple[Path, str, str]
) -> None:
    request = {
        "id": "42",
        "inputs": [
            {"name": "a", "shape": [3], "datatype": "INT64", "data": [3, 100, 255]},
            {"name": "b", "shape": [3], "datatype": "INT64", "data": [5, 27, 1]},
        ],
        "outputs": [{"name": "sum"}, {"name": "binary"}, {"name": "correct"}],
    }
    response = client.post(INFER, json=request)
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert HEADER not in response.headers
    body = response.get_json()
    assert list(body) == ["model_name", "model_version", "id", "parameters", "outputs"]
    assert body["model_name"] == "rnnadd"
    assert body["model_version"] == stored[1]
    assert body["id"] == "42"
    assert body["parameters"] == {"bits": max(trained_bits(stored), 9)}
    expected = v1_results(client, [3, 100, 255], [5, 27, 1])
    assert body["outputs"] == [
        {"name": "sum", "datatype": "INT64", "shape": [3],
         "data": [r["decimal"] for r in expected]},
        {"name": "binary", "datatype": "BYTES", "shape": [3],
         "data": [r["binary"] for r in expected]},
        {"name": "correct", "datatype": "BOOL", "shape": [3],
         "data": [r["correct"] for r in expected]},
    ]
    assert body["outputs"][0]["data"] == [8, 127, 256]  # the bundled model adds correctly


def test_all_outputs_when_none_requested_and_no_id(
    client: FlaskClient, stored: tuple[Path, str, str]
) -> None:
    body = client.post(INFER, json=pairs([1], [2])).get_json()
    assert "id" not in body
    assert [o["name"] for o in body["outputs"]] == ["sum", "binary", "correct"]
    assert body["outputs"][1]["data"] == [format(3, f"0{trained_bits(stored)}b")]


@pytest.mark.parametrize("datatype", ["INT64", "UINT64", "INT32", "UINT8"])
def test_integer_datatypes(client: FlaskClient, datatype: str) -> None:
    body = client.post(INFER, json=pairs([7, 9], [8, 1], datatype)).get_json()
    assert body["outputs"][0] == {"name": "sum", "datatype": "INT64", "shape": [2],
                                  "data": [15, 10]}


def test_shape_n_by_1_flat_or_nested(client: FlaskClient) -> None:
    nested = {"inputs": [tensor("a", [[3], [4]], shape=[2, 1]), tensor("b", [5, 6], shape=[2])]}
    flat = {"inputs": [tensor("a", [3, 4], shape=[2, 1]), tensor("b", [[5], [6]], shape=[2, 1])]}
    for request in (nested, flat):
        body = client.post(INFER, json=request).get_json()
        assert body["outputs"][0]["data"] == [8, 10]
        assert body["outputs"][0]["shape"] == [2]


def test_bytes_inputs_for_integers_wider_than_64_bits(client: FlaskClient) -> None:
    a, b = 2**100 + 12345, 2**90 + 1
    request = pairs([str(a), "7"], [str(b), "8"], "BYTES", parameters={"bits": 128})
    body = client.post(INFER, json=request).get_json()
    assert body["parameters"] == {"bits": 128}
    sums, binary, correct = body["outputs"]
    assert sums == {"name": "sum", "datatype": "BYTES", "shape": [2],
                    "data": [str(a + b), "15"]}
    assert binary["data"] == [format(a + b, "0128b"), format(15, "0128b")]
    assert correct["data"] == [True, True]


def test_outputs_selects_and_orders(client: FlaskClient) -> None:
    request = pairs([3], [5], outputs=[{"name": "correct"}, {"name": "sum"}])
    body = client.post(INFER, json=request).get_json()
    assert [(o["name"], o["data"]) for o in body["outputs"]] == [("correct", [True]),
                                                                 ("sum", [8])]


def test_bits_parameter_sets_the_width(client: FlaskClient) -> None:
    body = client.post(INFER, json=pairs([3], [5], parameters={"bits": 12})).get_json()
    assert body["parameters"] == {"bits": 12}
    assert body["outputs"][1]["data"] == ["000000001000"]


def test_versioned_infer_uses_that_version(
    app: Flask, client: FlaskClient, stored: tuple[Path, str, str]
) -> None:
    _, active, other = stored
    a, b = list(range(0, 200, 7)), list(range(50, 250, 7))
    body = client.post(f"/v2/models/rnnadd/versions/{other}/infer", json=pairs(a, b)).get_json()
    assert body["model_version"] == other
    model = app.extensions["rnnadd"].holder.get_version(other)
    expected = model.predictor.add(a, b, max(model.bits, 9))
    assert body["outputs"][0]["data"] == expected
    assert client.post(INFER, json=pairs(a, b)).get_json()["model_version"] == active
    response = client.post(f"/v2/models/rnnadd/versions/{active}/infer", json=pairs(a, b))
    assert response.get_json()["model_version"] == active


def test_binary_request_and_binary_response(client: FlaskClient) -> None:
    a = np.array([3, 100, 2**40], dtype=np.int64)
    b = np.array([5, 27, 2**40], dtype=np.int64)
    header = {
        "id": "bin",
        "inputs": [
            {"name": "a", "shape": [3], "datatype": "INT64",
             "parameters": {"binary_data_size": 24}},
            {"name": "b", "shape": [3, 1], "datatype": "INT64",
             "parameters": {"binary_data_size": 24}},
        ],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_body(header, a.tobytes(), b.tobytes())
    response = client.post(INFER, data=body, headers=headers,
                           content_type="application/octet-stream")
    assert response.status_code == 200 and response.mimetype == "application/octet-stream"
    head, raw = split_binary(response)
    assert head["id"] == "bin" and head["parameters"] == {"bits": 42}
    assert [o["parameters"]["binary_data_size"] for o in head["outputs"]] == [24, 3 * 46, 3]
    assert all("data" not in o for o in head["outputs"])
    assert np.frombuffer(raw["sum"], dtype="<i8").tolist() == [8, 127, 2**41]
    assert raw["binary"][:4] == struct.pack("<I", 42)
    assert raw["binary"][4:46] == format(8, "042b").encode()
    assert np.frombuffer(raw["correct"], dtype=bool).tolist() == [True, True, True]


def test_binary_bytes_inputs_and_mixed_json(client: FlaskClient) -> None:
    a = [str(2**70).encode(), b"1"]
    header = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "BYTES",
             "parameters": {"binary_data_size": len(bytes_tensor(a))}},
            tensor("b", ["3", "4"], "BYTES"),
        ],
        "outputs": [{"name": "sum", "parameters": {"binary_data": True}}, {"name": "correct"}],
    }
    body, headers = binary_body(header, bytes_tensor(a))
    response = client.post(INFER, data=body, headers=headers)
    head, raw = split_binary(response)
    assert head["outputs"][0]["datatype"] == "BYTES"
    assert raw["sum"] == bytes_tensor([str(2**70 + 3).encode(), b"5"])
    assert head["outputs"][1] == {"name": "correct", "datatype": "BOOL", "shape": [2],
                                  "data": [True, True]}


def test_per_output_binary_data_overrides_the_request_default(client: FlaskClient) -> None:
    request = pairs([1], [1], parameters={"binary_data_output": True},
                    outputs=[{"name": "sum", "parameters": {"binary_data": False}},
                             {"name": "correct"}])
    response = client.post(INFER, json=request)
    head, raw = split_binary(response)
    assert head["outputs"][0]["data"] == [2]
    assert raw == {"correct": b"\x01"}


def test_header_length_with_no_binary_data(client: FlaskClient) -> None:
    body, headers = binary_body(pairs([2], [2]))
    response = client.post(INFER, data=body, headers=headers)
    assert response.status_code == 200
    assert response.get_json()["outputs"][0]["data"] == [4]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request(client: FlaskClient, encoding: str) -> None:
    plain = json.dumps(pairs([20], [22])).encode()
    data = gzip.compress(plain) if encoding == "gzip" else zlib.compress(plain)
    response = client.post(INFER, data=data, headers={"Content-Encoding": encoding})
    assert response.get_json()["outputs"][0]["data"] == [42]


def test_sum_over_int64_is_refused_unless_left_out(client: FlaskClient) -> None:
    big = pairs([2**63 - 1], [2**63 - 1], "UINT64")
    message = assert_error(client.post(INFER, json=big), 400, "does not fit the INT64 'sum'")
    assert "BYTES" in message
    big["outputs"] = [{"name": "binary"}, {"name": "correct"}]
    body = client.post(INFER, json=big).get_json()
    assert body["parameters"] == {"bits": 64}
    assert body["outputs"][0]["data"] == [format(2**64 - 2, "064b")]
    assert body["outputs"][1]["data"] == [True]


def test_max_batch_is_accepted(stored: tuple[Path, str, str]) -> None:
    client = make_app(stored[0], MAX_BATCH=10_000).test_client()
    a = np.arange(10_000, dtype=np.int64)
    header = {"inputs": [
        {"name": n, "shape": [10_000], "datatype": "INT64",
         "parameters": {"binary_data_size": a.nbytes}} for n in ("a", "b")],
        "outputs": [{"name": "sum", "parameters": {"binary_data": True}}]}
    body, headers = binary_body(header, a.tobytes(), a.tobytes())
    _, raw = split_binary(client.post(INFER, data=body, headers=headers))
    assert np.array_equal(np.frombuffer(raw["sum"], dtype="<i8"), 2 * a)


def test_metrics_and_request_log_cover_v2(app: Flask, client: FlaskClient) -> None:
    client.post(INFER, json=pairs([1, 2, 3], [4, 5, 6]), headers={"X-Request-ID": "v2-req-1"})
    client.post(INFER, json={"inputs": []})
    client.get("/v2/nope")
    text = client.get("/metrics").get_data(as_text=True)
    line = 'rnnadd_http_requests_total{endpoint="/v2/models/<model_name>/infer",method="POST"'
    assert line + ',protocol="http",status="200"} 1.0' in text
    assert line + ',protocol="http",status="400"} 1.0' in text
    assert "rnnadd_pairs_predicted_total 3.0" in text
    response = client.post(INFER, json=pairs([1], [1]), headers={"X-Request-ID": "v2-req-2"})
    assert response.headers["X-Request-ID"] == "v2-req-2"


def test_v1_errors_stay_problem_documents(client: FlaskClient) -> None:
    response = client.get("/v1/nope")
    assert response.status_code == 404 and response.mimetype == "application/problem+json"
    response = client.post("/v1/predict", json={"a": -1, "b": 2})
    assert response.mimetype == "application/problem+json"


# --- errors ----------------------------------------------------------------------------------

INT = {"name": "b", "shape": [1], "datatype": "INT64", "data": [1]}


def with_a(**a: Any) -> dict:
    """A request whose input a is replaced by the given fields (b is a valid INT64 [1])."""
    return {"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": [1], **a}, INT]}


def raw_a(size: int, payload: bytes, header_len: str | None = None, **a: Any) -> tuple:
    """A binary request whose input a declares `size` bytes and carries `payload`."""
    header = {"inputs": [{"name": "a", "shape": [1], "datatype": "INT64",
                          "parameters": {"binary_data_size": size}, **a}, INT]}
    body, headers = binary_body(header, payload)
    if header_len is not None:
        headers[HEADER] = header_len
    return body, headers


BAD_JSON_REQUESTS = [
    ({"inputs": [INT]}, 400, "missing inputs ['a']"),
    ({"inputs": "a"}, 400, "inputs must be a list"),
    ({}, 400, "inputs must be a list"),
    ({"inputs": [INT, INT, {**INT, "name": "a"}]}, 400, "given twice"),
    ({"inputs": [{**INT, "name": "c"}, INT]}, 400, "unknown input 'c'"),
    ({"inputs": [7, INT]}, 400, "each input must be a JSON object"),
    (with_a(datatype="FP32", data=[1.0]), 400, "datatype 'FP32' is not accepted"),
    (with_a(datatype="BOOL", data=[True]), 400, "datatype 'BOOL'"),
    (with_a(datatype=None), 400, "datatype None"),
    (with_a(shape=[2], data=[1, 2]), 400, "same length"),
    (with_a(shape=[2], data=[1]), 400, "needs 2 elements, got 1"),
    (with_a(shape=[1], data=[1, 2]), 400, "needs 1 elements, got 2"),
    (with_a(shape=[2, 2], data=[1, 2, 3, 4]), 400, "shape must be [N] or [N, 1]"),
    (with_a(shape=[1, 1, 1], data=[1]), 400, "shape must be [N] or [N, 1]"),
    (with_a(shape=[]), 400, "shape must be [N] or [N, 1]"),
    (with_a(shape="1"), 400, "shape must be a list of non-negative integers"),
    (with_a(shape=[-1]), 400, "non-negative integers"),
    (with_a(shape=[True]), 400, "non-negative integers"),
    (with_a(shape=[1, 1], data=[[1, 2]]), 400, "does not match shape"),
    (with_a(shape=[1, 1], data=[[[1]]]), 400, "nested deeper than shape"),
    (with_a(data=[-1]), 400, "non-negative"),
    (with_a(data=[3.5]), 400, "must be JSON integers"),
    (with_a(data=[1e300]), 400, "must be JSON integers"),
    (with_a(data=[True]), 400, "must be JSON integers"),
    (with_a(data=[None]), 400, "must be JSON integers"),
    (with_a(data=["3"]), 400, "must be JSON integers"),
    (with_a(data=3), 400, "does not match shape"),
    (with_a(datatype="INT32", data=[2**40]), 400, "does not fit INT32"),
    (with_a(datatype="UINT64", data=[2**64]), 400, "does not fit UINT64"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "INT64"}, INT]}, 400,
     "needs 'data' or parameters.binary_data_size"),
    (with_a(data=[1], parameters={"binary_data_size": 8}), 400, "not both"),
    (with_a(parameters={"shared_memory_region": "r"}), 400, "shared memory"),
    (with_a(parameters=[]), 400, "parameters must be a JSON object"),
    (pairs([], []), 400, "at least one element"),
    (pairs(["abc"], ["1"], "BYTES"), 400, "not a string of decimal digits"),
    (pairs(["-1"], ["1"], "BYTES"), 400, "not a string of decimal digits"),
    (pairs([" 1"], ["1"], "BYTES"), 400, "not a string of decimal digits"),
    (pairs(["1_0"], ["1"], "BYTES"), 400, "not a string of decimal digits"),
    (pairs([""], ["1"], "BYTES"), 400, "not a string of decimal digits"),
    (pairs(["\u0661"], ["1"], "BYTES"), 400, "not a string of decimal digits"),
    (pairs(["0x10"], ["1"], "BYTES"), 400, "not a string of decimal digits"),
    (pairs([1], [1], "BYTES"), 400, "BYTES data must be strings"),
    (pairs(["9" * 2000], ["1"], "BYTES"), 400, "too wide"),
    (pairs([str(2**4095)], ["1"], "BYTES"), 400, "at most 4095"),
    ({"inputs": [tensor("a", ["1"], "BYTES"), INT]}, 400, "both be integers or both be BYTES"),
    (pairs([1], [1], id=42), 400, "id must be a string"),
    (pairs([1], [1], parameters=[1]), 400, "parameters must be a JSON object"),
    (pairs([1], [1], parameters={"bits": True}), 400, "bits must be an integer"),
    (pairs([1], [1], parameters={"bits": 0}), 400, "bits must be between 1 and 4096"),
    (pairs([1], [1], parameters={"bits": 4097}), 400, "bits must be between 1 and 4096"),
    (pairs([255], [1], parameters={"bits": 8}), 400, "too small"),
    (pairs([1], [1], parameters={"binary_data_output": "yes"}), 400, "true or false"),
    (pairs([1], [1], outputs=[{"name": "total"}]), 400, "unknown output 'total'"),
    (pairs([1], [1], outputs=[{"name": "sum"}, {"name": "sum"}]), 400, "requested twice"),
    (pairs([1], [1], outputs={"name": "sum"}), 400, "outputs must be a list"),
    (pairs([1], [1], outputs=["sum"]), 400, "each requested output must be a JSON object"),
    (pairs([1], [1], outputs=[{"name": "sum", "parameters": {"binary_data": 1}}]), 400,
     "binary_data must be true or false"),
    (pairs([1], [1], outputs=[{"name": "sum", "parameters": {"classification": 2}}]), 400,
     "classification"),
    (pairs([1], [1], outputs=[{"name": "sum", "parameters": {"shared_memory_region": "r"}}]),
     400, "shared memory"),
]


@pytest.mark.parametrize(("request_body", "status", "fragment"), BAD_JSON_REQUESTS)
def test_bad_json_requests(client: FlaskClient, request_body: dict, status: int,
                           fragment: str) -> None:
    assert_error(client.post(INFER, json=request_body), status, fragment)


def two(value: bytes) -> bytes:
    """A BYTES tensor of one element: a length prefix and the value."""
    return struct.pack("<I", len(value)) + value


BAD_RAW_REQUESTS = [
    ((b"", {}), 400, "not valid JSON"),
    ((b"{not json", {}), 400, "not valid JSON"),
    ((b"[1, 2]", {}), 400, "must be a JSON object"),
    ((b"\xff\xfe", {}), 400, "not valid JSON"),
    ((b"[" * 100_000, {}), 400, "not valid JSON"),
    ((b'{"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": [' + b"9" * 5000
      + b"]}]}", {}), 400, "not valid JSON"),
    (raw_a(8, b"\x01" * 8, header_len="abc"), 400, "must be a whole number of bytes"),
    (raw_a(8, b"\x01" * 8, header_len="-5"), 400, "must be a whole number of bytes"),
    (raw_a(8, b"\x01" * 8, header_len="99999"), 400, "no larger than the body"),
    (raw_a(8, b"\x01" * 8, header_len="9" * 5000), 400, "no larger than the body"),
    (raw_a(8, b"\x01" * 8, header_len="10"), 400, "not valid JSON"),
    (raw_a(8, b"\x01" * 7), 400, "more than the 7 bytes"),
    (raw_a(4, b"\x01" * 4), 400, "take 8 bytes, got 4"),
    (raw_a(8, b"\x01" * 9), 400, "holds 9 bytes of binary data, the inputs declare 8"),
    (raw_a(-1, b""), 400, "binary_data_size must be a non-negative integer"),
    (raw_a(8, (-3).to_bytes(8, "little", signed=True)), 400, "non-negative"),
    (raw_a(3, two(b"7")[:3], datatype="BYTES"), 400, "ends inside a length prefix"),
    (raw_a(6, struct.pack("<I", 9) + b"12", datatype="BYTES"), 400, "runs past its data"),
    (raw_a(10, two(b"1") + two(b"2"), datatype="BYTES"), 400, "needs 1 BYTES elements"),
    (raw_a(0, b"", datatype="BYTES"), 400, "needs 1 BYTES elements"),
    (raw_a(6, two(b"1e"), datatype="BYTES"), 400, "not a string of decimal digits"),
    (raw_a(6, two(b"\xff\xfe"), datatype="BYTES"), 400, "not a string of decimal digits"),
]


@pytest.mark.parametrize(("request_parts", "status", "fragment"), BAD_RAW_REQUESTS)
def test_bad_raw_requests(client: FlaskClient, request_parts: tuple, status: int,
                          fragment: str) -> None:
    body, headers = request_parts
    assert_error(client.post(INFER, data=body, headers=headers), status, fragment)


def test_binary_data_without_the_header_length(client: FlaskClient) -> None:
    body, _ = raw_a(8, b"\x01" * 8)
    assert_error(client.post(INFER, data=body), 400, "not valid JSON")
    header, _ = raw_a(8, b"")
    assert_error(client.post(INFER, data=header), 400, "more than the 0 bytes")


def test_limits_are_those_of_v1(stored: tuple[Path, str, str]) -> None:
    client = make_app(stored[0], MAX_BATCH=4, MAX_BODY=4096, MAX_BITS=64).test_client()
    assert_error(client.post(INFER, json=pairs([1] * 5, [1] * 5)), 413, "limit of 4")
    huge = {"inputs": [{"name": "a", "shape": [10**18], "datatype": "INT64", "data": []}, INT]}
    assert_error(client.post(INFER, json=huge), 413, "limit of 4")
    assert_error(client.post(INFER, data=b"x" * 5000), 413, "limit of 4096 bytes")
    assert_error(client.post(INFER, json=pairs([2**63], [1], "UINT64")), 400, "at most 63")
    assert_error(client.post(INFER, json=pairs(["1"], ["1"], "BYTES", parameters={"bits": 65})),
                 400, "between 1 and 64")
    bomb = gzip.compress(b" " * 100_000)
    assert_error(client.post(INFER, data=bomb, headers={"Content-Encoding": "gzip"}), 413,
                 "decompressed body exceeds")
    bounded = make_app(stored[0], MAX_WORK=14_000).test_client()  # pairs x bits, as in /v1
    wide = pairs(["1"] * 4, ["1"] * 4, "BYTES", parameters={"bits": 4000})
    assert_error(bounded.post(INFER, json=wide), 413, "pair-bits of work")
    assert bounded.post(INFER, json=pairs(["1"] * 3, ["1"] * 3, "BYTES",
                                          parameters={"bits": 4000})).status_code == 200


@pytest.mark.parametrize(("headers", "data", "status", "fragment"), [
    ({"Content-Encoding": "br"}, b"{}", 415, "not supported"),
    ({"Content-Encoding": "gzip"}, b"not gzip", 400, "not valid gzip"),
    ({"Content-Encoding": "gzip"}, gzip.compress(b'{"inputs": []}')[:-8], 400, "truncated"),
])
def test_bad_encodings(client: FlaskClient, headers: dict, data: bytes, status: int,
                       fragment: str) -> None:
    assert_error(client.post(INFER, data=data, headers=headers), status, fragment)


@pytest.mark.parametrize(("method", "path", "status", "fragment"), [
    ("POST", "/v2/models/other/infer", 404, "unknown model 'other'"),
    ("GET", "/v2/models/other", 404, "unknown model"),
    ("POST", "/v2/models/rnnadd/versions/20000101T000000Z-000000/infer", 404,
     "no stored version"),
    ("POST", "/v2/models/rnnadd/versions/..%2F..%2Fetc/infer", 404, "no such endpoint"),
    ("GET", "/v2/models/rnnadd/versions/..", 404, "no stored version"),
    ("GET", "/v2/models/rnnadd/versions/latest", 404, "no stored version"),
    ("GET", "/v2/models/rnnadd/infer", 405, "GET is not allowed"),
    ("POST", "/v2/health/live", 405, "POST is not allowed"),
    ("GET", "/v2/models/other/config", 404, "unknown model 'other'"),
    ("GET", "/v2/models/other/stats", 404, "unknown model 'other'"),
    ("GET", "/v2/repository/index", 405, "GET is not allowed"),
    ("GET", "/v2/models/rnnadd/nothing", 404, "no such endpoint"),
])
def test_unknown_models_versions_and_routes(client: FlaskClient, method: str, path: str,
                                            status: int, fragment: str) -> None:
    for body in (pairs([1], [1]), {}):  # a missing model or version outranks a bad body
        response = client.open(path, method=method, json=body)
        assert_error(response, status, fragment)
    if status == 405:
        assert response.headers["Allow"]


def test_a_version_that_fails_validation(
    tmp_path: Path, stored: tuple[Path, str, str]
) -> None:
    root = tmp_path / "models"
    shutil.copytree(stored[0], root)
    broken = "20000101T000000Z-abcdef"
    shutil.copytree(root / stored[2], root / broken)
    record = json.loads((root / broken / "model.json").read_text())
    (root / broken / "model.json").write_text(json.dumps({**record, "version": broken}))
    (root / broken / "weights.npz").write_bytes(b"PK\x03\x04 corrupted")
    client = make_app(root).test_client()
    assert client.get(f"/v2/models/rnnadd/versions/{broken}/ready").status_code == 400
    path = f"/v2/models/rnnadd/versions/{broken}/infer"
    assert_error(client.post(path, json=pairs([1], [1])), 409, "is not ready")
    assert client.post(INFER, json=pairs([1], [1])).status_code == 200


def test_unexpected_errors_are_protocol_errors_and_logged(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(oip, "outputs", boom)
    assert_error(client.post(INFER, json=pairs([1], [1])), 500, "unexpected error")
    assert "boom" in caplog.text


# --- the codec on its own ----------------------------------------------------------------------


def test_codec_refuses_sums_over_int64_and_keeps_bytes_sums() -> None:
    numbers = oip.parse_infer_request(json.dumps(pairs([1], [1])).encode(), None, 10, 1300)
    with pytest.raises(V2Error, match="INT64"):
        oip.outputs(numbers, [2**63], 64)
    assert oip.outputs(numbers, [2**63 - 1], 64)[0][2] == [2**63 - 1]
    text = oip.parse_infer_request(json.dumps(pairs(["1"], ["1"], "BYTES")).encode(), None,
                                   10, 1300)
    assert oip.outputs(text, [2**63], 64)[0][1:] == ("BYTES", [str(2**63)])


def test_codec_response_layout() -> None:
    requested = [oip.RequestedOutput("sum", True), oip.RequestedOutput("binary", False),
                 oip.RequestedOutput("correct", True)]
    body, size = oip.encode_infer_response(
        {"model_name": "rnnadd"},
        [(requested[0], "INT64", [1, 2]), (requested[1], "BYTES", ["01", "10"]),
         (requested[2], "BOOL", [True, False])],
    )
    assert size is not None
    head = json.loads(body[:size])
    assert head["outputs"][1]["data"] == ["01", "10"]
    assert body[size:] == np.array([1, 2], "<i8").tobytes() + b"\x01\x00"


@pytest.mark.parametrize("values", [["01", "10"], ["1", "22", ""], ["7"], ["", ""], ["é", "e"]])
def test_codec_bytes_tensor_layout(values: list[str]) -> None:
    expected = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
    assert oip._bytes_tensor(values) == expected


def test_integers_written_with_a_fraction_are_integers(client: FlaskClient) -> None:
    body = {"inputs": [{"name": "a", "datatype": "INT64", "shape": [1.0], "data": [3.0]},
                       {"name": "b", "datatype": "INT64", "shape": [1], "data": [5]}]}
    response = client.post(INFER, json=body)
    assert response.status_code == 200, response.data
    outputs = {o["name"]: o["data"] for o in response.get_json()["outputs"]}
    assert outputs["sum"] == [8] and outputs["correct"] == [True]


# --- versions that are not trusted -----------------------------------------------------------

def test_a_stored_version_that_fails_the_gate_answers_only_admins(model_dir: Path,
                                                                  admin_token: str) -> None:
    """Anyone could pick a rejected version by id and get 3 + 5 = 174 unmarked: now a caller
    without the admin token gets a 403, and an admin's answer says trusted: false."""
    store = ModelStore(model_dir)
    flipped = clone_version(store, flip_output=True)
    client = make_app(model_dir, ADMIN_TOKEN=admin_token).test_client()
    path = f"/v2/models/rnnadd/versions/{flipped}"
    refused = client.post(f"{path}/infer", json=pairs([3], [5]))
    assert "not trusted" in assert_error(refused, 403)
    assert client.get(f"{path}/ready").status_code == 400
    wrong = client.post(f"{path}/infer", json=pairs([3], [5]),
                        headers={"Authorization": "Bearer not-the-token"})
    assert_error(wrong, 401)
    auth = {"Authorization": f"Bearer {admin_token}"}
    answer = client.post(f"{path}/infer", json=pairs([3], [5]), headers=auth).get_json()
    assert answer["model_version"] == flipped
    assert answer["parameters"] == {"bits": 8, "trusted": False, "forced": False}
    assert client.get(f"{path}/ready", headers=auth).status_code == 200
    trusted = client.post(f"/v2/models/rnnadd/versions/{store.current()}/infer",
                          json=pairs([3], [5])).get_json()
    assert trusted["parameters"] == {"bits": 8}


def test_answers_of_a_forced_active_version_are_marked(model_dir: Path, contract) -> None:
    store = ModelStore(model_dir)
    flipped = clone_version(store, flip_output=True)
    store.activate(flipped, force=True)
    client = make_app(model_dir).test_client()
    response = client.post(INFER, json=pairs([3], [5]))
    contract.check(response, "/v2/models/{model_name}/infer", "POST")
    answer = response.get_json()
    assert answer["model_version"] == flipped
    assert answer["parameters"] == {"bits": 8, "trusted": False, "forced": True}
