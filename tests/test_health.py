"""GET /healthz (alive) and GET /readyz (a valid model is loaded, else 503 with the reason)."""

from __future__ import annotations

import socket
from pathlib import Path

from service.app import create_app
from tests.conftest import Contract, corrupt_version, point_current_at
from training.store import ModelStore


def test_healthz(client, contract: Contract) -> None:
    response = client.get("/healthz")
    assert response.get_json() == {"status": "ok"}
    contract.check(response, "/healthz")


def test_readyz_names_the_served_version(client, store: ModelStore, contract: Contract) -> None:
    response = client.get("/readyz")
    body = response.get_json()
    assert (body["status"], body["model_version"]) == ("ready", store.current())
    assert body["replica"] == socket.gethostname() and body["degraded"] is None
    assert body["gate"]["passed"] is True and body["forced"] is False
    contract.check(response, "/readyz")


def test_without_a_model_alive_but_not_ready(tmp_path: Path, contract: Contract) -> None:
    client = create_app({"MODEL_DIR": str(tmp_path / "empty")}).test_client()
    assert client.get("/healthz").status_code == 200
    response = client.get("/readyz")
    contract.check(response, "/readyz")
    assert response.status_code == 503
    assert "CURRENT" in response.get_json()["detail"]


def test_a_corrupt_current_version_at_startup_is_not_ready_with_the_reason(
    store: ModelStore, contract: Contract
) -> None:
    bad = corrupt_version(store)
    point_current_at(store, bad)
    response = create_app({"MODEL_DIR": str(store.root)}).test_client().get("/readyz")
    assert response.status_code == 503
    assert bad in response.get_json()["detail"] and "sha256" in response.get_json()["detail"]


def test_becomes_ready_when_a_model_appears(model_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "later"
    empty.mkdir()
    client = create_app({"MODEL_DIR": str(empty), "RELOAD_INTERVAL": 0.0}).test_client()
    assert client.get("/readyz").status_code == 503
    for path in model_dir.iterdir():
        path.rename(empty / path.name)
    assert client.get("/readyz").status_code == 200
