"""The Open Inference Protocol against a real 2-worker gunicorn, spoken by tritonclient[http].

tritonclient is a client no one here wrote: if it can talk to the service, KServe, Triton and
Seldon gateways can too. It sends binary tensors and asks for binary outputs by default.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests import servers

pytestmark = pytest.mark.integration

MODEL = "rnnadd"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    """gunicorn with 2 workers on a copy of the bundled models; ended by PID, bounded."""
    running = servers.start_server(tmp_path_factory.mktemp("v2-gunicorn"), workers=2)
    try:
        yield running
    finally:
        servers.stop_server(running)


@pytest.fixture(scope="module")
def client(server: servers.Server) -> Iterator[httpclient.InferenceServerClient]:
    triton = httpclient.InferenceServerClient(server.url.removeprefix("http://"),
                                              network_timeout=30.0)
    try:
        yield triton
    finally:
        triton.close()


def inputs(a: np.ndarray, b: np.ndarray, datatype: str, binary: bool = True) -> list:
    """Inputs a and b as tritonclient builds them."""
    built = []
    for name, values in (("a", a), ("b", b)):
        tensor = httpclient.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        built.append(tensor)
    return built


def int64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def expect_error(status: str, fragment: str, call, *args: object, **kwargs: object) -> None:
    """The client raises InferenceServerException carrying the server's status and message."""
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kwargs)
    assert info.value.status() == status, info.value.message()
    assert fragment in info.value.message()


def test_health(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert not client.is_model_ready("other")


def test_metadata(client: httpclient.InferenceServerClient, server: servers.Server) -> None:
    meta = client.get_server_metadata()
    assert meta["name"] == MODEL and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata(MODEL)
    active = (server.model_dir / "CURRENT").read_text().strip()
    assert model["name"] == MODEL and model["platform"] == "numpy"
    assert active in model["versions"] and model["parameters"]["version"] == active
    assert [(t["name"], t["datatype"], t["shape"]) for t in model["inputs"]] == [
        ("a", "INT64", [-1]), ("b", "INT64", [-1])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in model["outputs"]] == [
        ("sum", "INT64", [-1]), ("binary", "BYTES", [-1]), ("correct", "BOOL", [-1])]
    expect_error("404", "unknown model", client.get_model_metadata, "other")


def test_infer_json_tensors(client: httpclient.InferenceServerClient) -> None:
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False)
               for n in ("sum", "binary", "correct")]
    result = client.infer(MODEL, inputs(int64(3, 100), int64(5, 27), "INT64", binary=False),
                          outputs=outputs, request_id="json-1")
    response = result.get_response()
    assert response["id"] == "json-1" and response["model_name"] == MODEL
    assert all("data" in o for o in response["outputs"])
    assert result.as_numpy("sum").tolist() == [8, 127]
    assert result.as_numpy("sum").dtype == np.int64
    assert result.as_numpy("binary").tolist() == ["00001000", "01111111"]
    assert result.as_numpy("correct").tolist() == [True, True]


def test_infer_binary_tensors_by_default(client: httpclient.InferenceServerClient) -> None:
    a, b = int64(1, 2, 2**40, 12345), int64(1, 254, 2**40, 54321)
    result = client.infer(MODEL, inputs(a, b, "INT64"))
    response = result.get_response()
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    assert np.array_equal(result.as_numpy("sum"), a + b)
    assert result.as_numpy("binary")[1] == format(256, "042b").encode()
    assert result.as_numpy("correct").dtype == np.bool_
    assert result.as_numpy("correct").all()


@pytest.mark.parametrize(("datatype", "dtype"), [("INT32", np.int32), ("UINT64", np.uint64)])
def test_other_integer_types(client: httpclient.InferenceServerClient, datatype: str,
                             dtype: type) -> None:
    a, b = np.array([[7], [9]], dtype=dtype), np.array([[8], [1]], dtype=dtype)
    result = client.infer(MODEL, inputs(a, b, datatype))
    assert result.as_numpy("sum").tolist() == [15, 10]


@pytest.mark.parametrize("binary", [True, False])
def test_bytes_inputs_for_integers_wider_than_64_bits(
    client: httpclient.InferenceServerClient, binary: bool
) -> None:
    a, b = 2**200 + 99, 2**150 + 1
    values = (np.array([str(a).encode(), b"3"], dtype=np.object_),
              np.array([str(b).encode(), b"4"], dtype=np.object_))
    result = client.infer(MODEL, inputs(*values, "BYTES", binary=binary),
                          parameters={"bits": 256})
    assert result.get_response()["parameters"] == {"bits": 256}
    assert result.as_numpy("sum").tolist() == [str(a + b).encode(), b"7"]
    assert result.as_numpy("binary")[0] == format(a + b, "0256b").encode()
    assert result.as_numpy("correct").tolist() == [True, True]


def test_outputs_selection(client: httpclient.InferenceServerClient) -> None:
    outputs = [httpclient.InferRequestedOutput("correct"),
               httpclient.InferRequestedOutput("sum", binary_data=False)]
    result = client.infer(MODEL, inputs(int64(20), int64(22), "INT64"), outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["correct", "sum"]
    assert result.get_output("sum")["data"] == [42]
    assert result.as_numpy("correct").tolist() == [True]
    assert result.as_numpy("binary") is None


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(client: httpclient.InferenceServerClient, algorithm: str) -> None:
    result = client.infer(MODEL, inputs(int64(40), int64(2), "INT64"),
                          request_compression_algorithm=algorithm)
    assert result.as_numpy("sum").tolist() == [42]


def test_versioned_inference_after_a_retrain(
    client: httpclient.InferenceServerClient, server: servers.Server
) -> None:
    active = (server.model_dir / "CURRENT").read_text().strip()
    submitted = requests.post(
        server.url + "/v1/retrain", timeout=10,
        headers={"Authorization": f"Bearer {server.token}"},
        json={"max_steps": 3000, "seed": 11, "hidden_size": 12, "activate": False},
    )
    assert submitted.status_code == 202, submitted.text
    job = servers.wait_job(server, submitted.json()["job_id"])
    assert job["status"] == "succeeded", job
    new = job["model_version"]
    assert new != active
    assert client.is_model_ready(MODEL, new)
    assert new in client.get_model_metadata(MODEL)["versions"]
    assert client.get_model_metadata(MODEL, new)["parameters"]["version"] == new
    a, b = int64(3, 100), int64(5, 27)
    for _ in range(8):  # enough requests to reach both workers
        versioned = client.infer(MODEL, inputs(a, b, "INT64"), model_version=new)
        assert versioned.get_response()["model_version"] == new
        assert versioned.as_numpy("sum").shape == (2,)
        assert client.infer(MODEL, inputs(a, b, "INT64")).get_response()["model_version"] == active


def test_errors_are_4xx_for_the_client(client: httpclient.InferenceServerClient) -> None:
    good = inputs(int64(1), int64(2), "INT64")
    expect_error("404", "unknown model", client.infer, "other", good)
    expect_error("404", "Unknown version", client.infer, MODEL, good,
                 model_version="20000101T000000Z-000000")
    floats = np.array([1.0], dtype=np.float32)
    expect_error("400", "datatype 'FP32'", client.infer, MODEL, inputs(floats, floats, "FP32"))
    expect_error("400", "same length", client.infer, MODEL,
                 inputs(int64(1, 2), int64(3), "INT64"))
    expect_error("400", "non-negative", client.infer, MODEL, inputs(int64(-1), int64(2), "INT64"))
    short = inputs(int64(1, 2), int64(3, 4), "INT64")
    short[0].set_shape([3])  # declares 3 elements but sends 16 bytes
    expect_error("400", "take 24 bytes", client.infer, MODEL, short)
    unknown = httpclient.InferInput("c", [1], "INT64").set_data_from_numpy(int64(1))
    expect_error("400", "unknown input 'c'", client.infer, MODEL, [good[0], unknown])
    expect_error("400", "missing inputs ['b']", client.infer, MODEL, [good[0]])
    words = np.array([b"twelve"], dtype=np.object_)
    expect_error("400", "decimal digits", client.infer, MODEL, inputs(words, words, "BYTES"))
    expect_error("400", "unknown output", client.infer, MODEL, good,
                 outputs=[httpclient.InferRequestedOutput("total")])
    expect_error("400", "bits=1 is too small", client.infer, MODEL, good, parameters={"bits": 1})
    big = np.array([2**63], dtype=np.uint64)
    expect_error("400", "INT64", client.infer, MODEL, inputs(big, big, "UINT64"))


def test_too_many_elements_is_413(client: httpclient.InferenceServerClient) -> None:
    many = np.zeros(10_001, dtype=np.int64)
    expect_error("413", "limit of 10000", client.infer, MODEL, inputs(many, many, "INT64"))


def test_plain_requests_with_the_protocol_example_shape(server: servers.Server) -> None:
    request = {
        "id": "42",
        "inputs": [
            {"name": "a", "shape": [2, 1], "datatype": "UINT32", "data": [[1], [2]]},
            {"name": "b", "shape": [2, 1], "datatype": "UINT32", "data": [3, 4]},
        ],
        "outputs": [{"name": "sum"}],
    }
    response = requests.post(server.url + "/v2/models/rnnadd/infer", json=request, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Request-ID"]
    body = response.json()
    assert set(body) == {"model_name", "model_version", "id", "parameters", "outputs"}
    assert body["model_name"] == "rnnadd"
    assert body["model_version"] == (server.model_dir / "CURRENT").read_text().strip()
    assert body["id"] == "42"
    record = requests.get(server.url + "/v1/model", timeout=10).json()
    assert body["parameters"] == {"bits": max(record["hyperparameters"]["bits"], 3)}
    assert body["outputs"] == [{"name": "sum", "datatype": "INT64", "shape": [2], "data": [4, 6]}]


def test_plain_requests_binary_round_trip(server: servers.Server) -> None:
    header = json.dumps({
        "inputs": [{"name": n, "shape": [2], "datatype": "INT64",
                    "parameters": {"binary_data_size": 16}} for n in ("a", "b")],
        "outputs": [{"name": "sum", "parameters": {"binary_data": True}}],
    }).encode()
    body = header + int64(3, 4).tobytes() + int64(5, 6).tobytes()
    response = requests.post(server.url + "/v2/models/rnnadd/infer", data=body, timeout=10,
                             headers={"Inference-Header-Content-Length": str(len(header)),
                                      "Content-Type": "application/octet-stream"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    size = int(response.headers["Inference-Header-Content-Length"])
    head = json.loads(response.content[:size])
    assert head["outputs"] == [{"name": "sum", "datatype": "INT64", "shape": [2],
                                "parameters": {"binary_data_size": 16}}]
    assert np.frombuffer(response.content[size:], dtype="<i8").tolist() == [8, 10]


def test_errors_over_http_are_protocol_errors(server: servers.Server) -> None:
    for method, path, status in [("GET", "/v2/models/rnnadd/infer", 405),
                                 ("GET", "/v2/nope", 404),
                                 ("POST", "/v2/models/rnnadd/infer", 400)]:
        response = requests.request(method, server.url + path, data=b"{", timeout=10)
        assert response.status_code == status
        assert response.headers["Content-Type"] == "application/json"
        assert list(response.json()) == ["error"]


def test_repository_config_and_statistics_extensions(
        client: httpclient.InferenceServerClient, server: servers.Server) -> None:
    active = (server.model_dir / "CURRENT").read_text().strip()
    index = client.get_model_repository_index()
    assert {"name": MODEL, "version": active, "state": "READY", "reason": ""} in index
    assert client.get_model_config(MODEL)["name"] == MODEL
    before = client.get_inference_statistics(MODEL)["model_stats"][0]["execution_count"]
    client.infer(MODEL, inputs(int64(1), int64(2), "INT64"))
    after = client.get_inference_statistics(MODEL)["model_stats"][0]
    assert after["name"] == MODEL and after["execution_count"] >= before + 1
    admin = {"Authorization": f"Bearer {server.token}"}
    # tritonclient's load sends no version: refused, naming what is missing; nothing changes
    expect_error("400", "parameters.version is required", client.load_model, MODEL,
                 headers=admin)
    expect_error("409", "always serves exactly one model", client.unload_model, MODEL,
                 headers=admin)
    expect_error("401", "admin token", client.unload_model, MODEL)
    assert (server.model_dir / "CURRENT").read_text().strip() == active
