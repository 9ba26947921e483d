"""GET /v1/model, GET /v1/models and the admin rollback POST /v1/models/<version>/activate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.app import create_app
from tests.conftest import STORAGE_ERRORS, Contract, clone_version, corrupt_version
from training import files as store_module
from training.store import ModelStore

ACTIVATE = "/v1/models/{version}/activate"


def test_model_is_the_served_record(client, store: ModelStore, contract: Contract) -> None:
    response = client.get("/v1/model")
    contract.check(response, "/v1/model")
    body = response.get_json()
    record = store.record(store.current())
    assert body["version"] == store.current() and body["active"] is True
    for key in ("created_at", "hyperparameters", "metrics", "sha256", "history"):
        assert body[key] == record[key]


def test_model_without_a_loaded_model_is_503(tmp_path: Path, contract: Contract) -> None:
    response = create_app({"MODEL_DIR": str(tmp_path)}).test_client().get("/v1/model")
    assert response.status_code == 503
    contract.check(response, "/v1/model")


def test_models_lists_every_version_and_marks_the_active_one(
    client, store: ModelStore, contract: Contract
) -> None:
    newer = clone_version(store)
    broken = store.root / "20200101T000000Z-badbad"
    broken.mkdir()
    (broken / "model.json").write_text("{not json")
    response = client.get("/v1/models")
    contract.check(response, "/v1/models")
    body = response.get_json()
    assert body["active"] == body["serving"] == store.current()
    listed = {m["version"]: m for m in body["models"]}
    assert set(listed) == {store.current(), newer, broken.name}
    assert [v for v, m in listed.items() if m["active"]] == [store.current()]
    assert "history" not in listed[newer] and listed[newer]["parent"] == store.current()
    assert "model.json" in listed[broken.name]["error"]
    assert [m["version"] for m in body["models"]] == sorted(listed)


def test_models_in_an_empty_directory(tmp_path: Path) -> None:
    body = create_app({"MODEL_DIR": str(tmp_path)}).test_client().get("/v1/models").get_json()
    assert body == {"active": None, "serving": None, "models": [], "next_after": None}


def test_activate_rolls_back_and_this_worker_serves_it_at_once(
    client, auth, store: ModelStore, contract: Contract
) -> None:
    old = store.current()
    new = clone_version(store, activate=True)
    client.get("/readyz")  # the holder may still serve old until its next check
    path = ACTIVATE.format(version=old)
    response = client.post(path, headers=auth)
    contract.check(response, ACTIVATE, "POST")
    body = response.get_json()
    assert (body["active"], body["previous"], body["model_version"]) == (old, new, old)
    assert body["forced"] is False and body["gate"]["passed"] is True
    assert store.current() == old
    assert client.post("/v1/predict", json={"a": 1, "b": 2}).get_json()["model_version"] == old
    assert client.post(ACTIVATE.format(version=new), headers=auth).status_code == 200
    assert client.get("/v1/model").get_json()["version"] == new


def test_activate_an_unknown_version_is_404(client, auth, store, contract: Contract) -> None:
    before = store.current()
    for version in ("20200101T000000Z-abcdef", "latest", "..", "20200101T000000Z-ABCDEF"):
        response = client.post(ACTIVATE.format(version=version), headers=auth)
        assert response.status_code == 404, version
        assert response.get_json()["field"] == "version"
    contract.check(response, ACTIVATE, "POST")
    assert store.current() == before


def test_activate_an_invalid_version_is_409_and_changes_nothing(
    client, auth, store: ModelStore, contract: Contract
) -> None:
    before = store.current()
    bad = corrupt_version(store)
    response = client.post(ACTIVATE.format(version=bad), headers=auth)
    contract.check(response, ACTIVATE, "POST")
    assert response.status_code == 409
    detail = response.get_json()["detail"]
    assert "weights.npz" in detail and str(store.root) not in detail  # no server paths
    assert store.current() == before
    assert client.get("/v1/model").get_json()["version"] == before


@pytest.mark.parametrize(("body", "field"), [({"x": 1}, "x"), ({"force": "yes"}, "force"),
                                             ({"force": 1}, "force")])
def test_activate_refuses_unknown_options(client, auth, store: ModelStore, body: dict,
                                          field: str) -> None:
    path = ACTIVATE.format(version=store.current())
    response = client.post(path, headers=auth, json=body)
    assert response.status_code == 400 and response.get_json()["field"] == field
    assert client.post(path, headers=auth).status_code == 200  # no body: no options


@pytest.mark.parametrize(("code", "status", "words"), STORAGE_ERRORS)
def test_activation_on_a_read_only_or_full_directory_names_the_cause(
    client, auth, store: ModelStore, monkeypatch: pytest.MonkeyPatch, code: int, status: int,
    words: str,
) -> None:
    before = store.current()
    other = clone_version(store)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code), str(store.root / "CURRENT"))

    monkeypatch.setattr(store_module.os, "replace", fail)
    response = client.post(ACTIVATE.format(version=other), headers=auth)
    assert response.status_code == status and response.mimetype == "application/problem+json"
    assert words in response.get_json()["detail"]
    assert str(store.root) not in response.get_data(as_text=True)
    assert store.current() == before
    assert client.post("/v1/predict", json={"a": 3, "b": 5}).get_json()["decimal"] == 8


def test_the_model_record_keeps_the_gate_checks(client) -> None:
    gate = client.get("/v1/model").get_json()["gate"]
    assert gate["passed"] is True and gate["status"] == "passed"
    assert {check["name"] for check in gate["checks"]} >= {"exhaustive_8bit", "random_4096bit"}


def test_models_are_listed_a_page_at_a_time(client, store: ModelStore,
                                            contract: Contract) -> None:
    versions = [store.current()] + [clone_version(store) for _ in range(4)]
    (store.root / versions[2] / "pinned").touch()
    seen, query = [], {"limit": 2}
    while True:
        response = client.get("/v1/models", query_string=query)
        contract.check(response, "/v1/models")
        body = response.get_json()
        seen += [(m["version"], m["pinned"]) for m in body["models"]]
        if body["next_after"] is None:
            break
        query = {"limit": 2, "after": body["next_after"]}
    assert [v for v, _ in seen] == versions
    assert [v for v, pinned in seen if pinned] == [versions[2]]


@pytest.mark.parametrize(("query", "field"), [
    ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"limit": "-1"}, "limit"), ({"after": "latest"}, "after"), ({"after": "../x"}, "after"),
])
def test_bad_listing_parameters_are_400_naming_them(client, query: dict, field: str) -> None:
    response = client.get("/v1/models", query_string=query)
    assert response.status_code == 400 and response.get_json()["field"] == field
