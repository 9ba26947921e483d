"""A model that adds wrongly is reported as wrong: "correct" and accuracy follow exact sums."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.app import create_app
from tests.conftest import clone_version
from training.store import CERTIFICATE, ModelStore


@pytest.fixture
def imperfect(store: ModelStore, model_dir: Path):
    """The bundled weights with the output layer flipped, forced live: most sums are wrong."""
    version = clone_version(store, flip_output=True)
    store.activate(version, force=True, max_bits=4096)
    return create_app({"MODEL_DIR": str(model_dir)}).test_client(), version


def test_single_batch_and_v2_report_wrong_sums(imperfect) -> None:
    client, version = imperfect
    single = client.post("/v1/predict", json={"a": 3, "b": 5}).get_json()
    assert single["model_version"] == version
    assert single["decimal"] != 8 and single["correct"] is False
    batch = client.post("/v1/predict/batch", json={"pairs": [[3, 5], [100, 27]]}).get_json()
    assert [r["correct"] for r in batch["results"]] == [
        r["decimal"] == a + b for r, (a, b) in zip(batch["results"], [(3, 5), (100, 27)],
                                                   strict=True)]
    assert batch["accuracy"] < 1.0
    v2 = client.post("/v2/models/rnnadd/infer", json={"inputs": [
        {"name": "a", "datatype": "INT64", "shape": [1], "data": [3]},
        {"name": "b", "datatype": "INT64", "shape": [1], "data": [5]}]}).get_json()
    outputs = {o["name"]: o["data"] for o in v2["outputs"]}
    assert outputs["sum"] != [8] and outputs["correct"] == [False]
    ready = client.get("/readyz").get_json()
    assert ready["forced"] is True and ready["gate"]["passed"] is False


def test_activation_of_a_failing_version_is_refused_unless_forced(
    store: ModelStore, model_dir: Path, auth: dict[str, str], client
) -> None:
    version = clone_version(store, flip_output=True)
    path = f"/v1/models/{version}/activate"
    refused = client.post(path, headers=auth)
    assert refused.status_code == 409 and refused.get_json()["check"]
    assert store.current() != version
    forced = client.post(path, headers=auth, json={"force": True})
    assert forced.status_code == 200 and forced.get_json()["forced"] is True
    assert client.get("/v1/model").get_json()["forced"] is True


def test_a_version_that_adds_but_is_not_certified_is_refused_unless_forced(
    store: ModelStore, auth: dict[str, str], client
) -> None:
    """The gate passing is not enough: without a proof a version goes live only by force."""
    source = store.current()
    version = clone_version(store)
    (store.root / version / CERTIFICATE).unlink()  # the same weights, no proof
    path = f"/v1/models/{version}/activate"
    refused = client.post(path, headers=auth)
    body = refused.get_json()
    assert refused.status_code == 409, body
    assert body["type"] == "urn:rnnadd:problem:not-certified"
    assert body["reason"] == "it has no certificate" and "force" in body["detail"]
    assert store.current() == source
    forced = client.post(path, headers=auth, json={"force": True}).get_json()
    assert forced["forced"] is True and forced["certified"] is False
    assert forced["gate"]["passed"] is True
    served = client.get("/v1/model").get_json()
    assert served["version"] == version and served["forced"] is True
    assert served["certified"] is False and served["certificate"]["verified"] is True
    ready = client.get("/readyz").get_json()
    assert ready["certified"] is False and ready["forced"] is True
    answer = client.post("/v1/predict", json={"a": 3, "b": 5}).get_json()
    assert answer["decimal"] == 8 and answer["trusted"] is False and answer["forced"] is True
    assert store.last_good() != version  # forced is never the last good version
    back = client.post(f"/v1/models/{source}/activate", headers=auth).get_json()
    assert back["certified"] is True and back["forced"] is False
    assert client.get("/readyz").get_json()["certified"] is True
