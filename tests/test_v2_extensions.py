"""GET /v2/, the model repository extension, Triton's model config and statistics."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from service.app import create_app
from tests.conftest import STORAGE_ERRORS, Contract, clone_version
from training.store import ModelStore

INDEX = "/v2/repository/index"
LOAD = "/v2/repository/models/rnnadd/load"
UNLOAD = "/v2/repository/models/rnnadd/unload"
INFER = "/v2/models/rnnadd/infer"


def infer_body(a: int, b: int) -> dict[str, Any]:
    return {"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": [a]},
                       {"name": "b", "shape": [1], "datatype": "INT64", "data": [b]}]}


def test_v2_with_a_slash_is_server_metadata(client: FlaskClient, contract: Contract) -> None:
    slash, bare = client.get("/v2/"), client.get("/v2")
    assert slash.status_code == 200 and slash.get_json() == bare.get_json()
    contract.check(slash, "/v2/")


def test_index_lists_every_stored_version_with_its_state(client: FlaskClient, store: ModelStore,
                                                         contract: Contract) -> None:
    served = store.current()
    other = clone_version(store)
    response = client.post(INDEX)
    contract.check(response, INDEX, "POST")
    states = {entry["version"]: entry["state"] for entry in response.get_json()}
    assert states == {served: "READY", other: "UNAVAILABLE"}
    ready = client.post(INDEX, json={"ready": True}).get_json()
    assert [entry["version"] for entry in ready] == [served]


def test_load_activates_through_the_gate_like_v1(client: FlaskClient, store: ModelStore,
                                                 auth: dict[str, str],
                                                 contract: Contract) -> None:
    old = store.current()
    new = clone_version(store)
    response = client.post(LOAD, json={"parameters": {"version": new}}, headers=auth)
    contract.check(response, "/v2/repository/models/{model_name}/load", "POST")
    body = response.get_json()
    assert (body["active"], body["previous"], body["model_version"]) == (new, old, new)
    assert store.current() == new
    assert client.post(INFER, json=infer_body(1, 2)).get_json()["model_version"] == new
    states = {e["version"]: e["state"] for e in client.post(INDEX).get_json()}
    assert states == {new: "READY", old: "UNAVAILABLE"}


def test_load_refuses_a_version_that_fails_the_gate_unless_forced(
        client: FlaskClient, store: ModelStore, auth: dict[str, str]) -> None:
    old = store.current()
    wrong = clone_version(store, flip_output=True)
    refused = client.post(LOAD, json={"parameters": {"version": wrong}}, headers=auth)
    assert refused.status_code == 409 and "fails the promotion gate" in refused.get_json()["error"]
    assert store.current() == old
    v1 = client.post(f"/v1/models/{wrong}/activate", json={}, headers=auth)
    assert v1.status_code == 409  # the same rule on both paths
    forced = client.post(LOAD, json={"parameters": {"version": wrong, "force": True}},
                         headers=auth)
    assert forced.status_code == 200 and forced.get_json()["forced"] is True
    assert store.current() == wrong


@pytest.mark.parametrize("errno_code, status, words", STORAGE_ERRORS)
def test_load_reports_storage_errors(client: FlaskClient, store: ModelStore,
                                     auth: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                     errno_code: int, status: int, words: str) -> None:
    new = clone_version(store)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno_code, "refused")

    monkeypatch.setattr(ModelStore, "activate", fail)
    response = client.post(LOAD, json={"parameters": {"version": new}}, headers=auth)
    assert response.status_code == status and words in response.get_json()["error"]


BAD_LOADS = [
    ({"parameters": {}}, 400, "parameters.version is required"),
    (None, 400, "parameters.version is required"),
    ({"parameters": {"version": 5}}, 400, "must be a version id (a string)"),
    ({"parameters": {"version": "latest"}}, 404, "'latest' is not a version id"),
    ({"parameters": {"version": "20000101T000000Z-000000"}}, 404, "No stored version"),
    ({"parameters": {"version": "x", "force": "yes"}}, 400, "force must be true or false"),
    ({"parameters": {"config": "{}"}}, 400, "unknown field 'config'"),
    ({"parameters": [], "x": 1}, 400, "parameters must be a JSON object"),
    ({"version": "x"}, 400, "unknown field 'version'"),
    ([1], 400, "JSON object"),
    (b"{not json", 400, "not valid JSON"),
]


@pytest.mark.parametrize("body, status, fragment", BAD_LOADS)
def test_bad_loads(client: FlaskClient, auth: dict[str, str], body: Any, status: int,
                   fragment: str, store: ModelStore) -> None:
    active = store.current()
    if isinstance(body, bytes):
        response = client.post(LOAD, data=body, headers=auth)  # no Content-Type, as tritonclient
    elif body is None:
        response = client.post(LOAD, headers=auth)
    else:
        response = client.post(LOAD, json=body, headers=auth)
    assert response.status_code == status, response.get_data(as_text=True)
    assert fragment in response.get_json()["error"]
    assert store.current() == active


@pytest.mark.parametrize("path", [LOAD, UNLOAD])
def test_repository_control_needs_the_admin_token(client: FlaskClient, path: str) -> None:
    missing = client.post(path, json={})
    assert missing.status_code == 401 and "admin token" in missing.get_json()["error"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = client.post(path, json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_repository_control_is_off_without_a_token(model_dir) -> None:
    client = create_app({"MODEL_DIR": str(model_dir)}).test_client()
    response = client.post(LOAD, json={}, headers={"Authorization": "Bearer x"})
    assert response.status_code == 403 and "disabled" in response.get_json()["error"]


def test_unload_is_refused_clearly(client: FlaskClient, auth: dict[str, str],
                                   store: ModelStore) -> None:
    active = store.current()
    response = client.post(UNLOAD, headers=auth)
    assert response.status_code == 409
    assert "always serves exactly one model" in response.get_json()["error"]
    assert store.current() == active
    assert client.post("/v2/repository/models/other/unload", headers=auth).status_code == 404


def test_config_is_tritons_shape(client: FlaskClient, contract: Contract,
                                 store: ModelStore) -> None:
    response = client.get("/v2/models/rnnadd/config")
    contract.check(response, "/v2/models/{model_name}/config")
    config = response.get_json()
    assert [t["name"] for t in config["input"]] == ["a", "b"]
    assert {t["name"]: t["data_type"] for t in config["output"]} == {
        "sum": "TYPE_INT64", "binary": "TYPE_STRING", "correct": "TYPE_BOOL"}
    assert config["parameters"]["version"] == {"string_value": store.current()}


def test_stats_count_inferences_from_the_metrics(client: FlaskClient, contract: Contract,
                                                 store: ModelStore) -> None:
    def stats() -> dict[str, Any]:
        response = client.get("/v2/models/rnnadd/stats")
        contract.check(response, "/v2/models/{model_name}/stats")
        return response.get_json()["model_stats"][0]

    before = stats()
    client.post(INFER, json=infer_body(1, 2))
    client.post("/v1/predict/batch", json={"pairs": [[1, 2]] * 5})
    client.post(INFER, json=infer_body(-1, 2))
    after = stats()
    assert after["inference_count"] - before["inference_count"] == 6
    assert after["execution_count"] - before["execution_count"] == 2
    success, fail = after["inference_stats"]["success"], after["inference_stats"]["fail"]
    assert success["count"] == 2 and fail["count"] == 1
    assert success["ns"] > before["inference_stats"]["success"]["ns"] and fail["ns"] > 0
    assert after["version"] == store.current()
    assert client.get("/v2/models/stats").get_json()["model_stats"][0]["execution_count"] == 2
    versioned = client.get(f"/v2/models/rnnadd/versions/{store.current()}/stats")
    assert versioned.status_code == 200


@pytest.mark.parametrize("method, path, status, fragment", [
    ("GET", "/v2/models/other/config", 404, "unknown model 'other'"),
    ("GET", "/v2/models/other/stats", 404, "unknown model 'other'"),
    ("GET", "/v2/models/rnnadd/versions/20000101T000000Z-000000/stats", 404, "version"),
    ("POST", "/v2/models/rnnadd/config", 405, "POST is not allowed"),
    ("GET", LOAD, 405, "GET is not allowed"),
    ("POST", "/v2/repository/models/other/load", 404, "unknown model 'other'"),
])
def test_extension_routes_refuse_clearly(client: FlaskClient, auth: dict[str, str], method: str,
                                         path: str, status: int, fragment: str) -> None:
    response = client.open(path, method=method, headers=auth, json={})
    assert response.status_code == status
    assert fragment in response.get_json()["error"]


@pytest.mark.parametrize("body, fragment", [
    ({"ready": "yes"}, "ready must be true or false"),
    ({"everything": True}, "unknown field 'everything'"),
    ([], "JSON object"),
])
def test_bad_index_requests(client: FlaskClient, body: Any, fragment: str) -> None:
    response = client.post(INDEX, json=body)
    assert response.status_code == 400 and fragment in response.get_json()["error"]
