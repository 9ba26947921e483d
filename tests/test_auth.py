"""Admin endpoints: Bearer token from RNNADD_ADMIN_TOKEN, constant-time, no default token."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.app import create_app
from service.auth import check_admin
from service.errors import Forbidden, Unauthorized

ADMIN_ROUTES = [
    ("/v1/models/20261129T013600Z-a1b2c3/activate", None),
    ("/v1/retrain", {}),
]


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Bearer ", "Basic dG9rZW46", "bearer wrong", "Bearer wrong",
    "Bearer s3cret-but-longer", "Bearer s3cre", "Token s3cret", "Bearer s3crét",
])
def test_wrong_or_missing_credentials_are_401_with_a_challenge(header: str | None) -> None:
    with pytest.raises(Unauthorized) as info:
        check_admin("s3cret", header)
    assert info.value.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer s3cret", "bearer s3cret", "  Bearer   s3cret "])
def test_the_configured_token_passes(header: str) -> None:
    check_admin("s3cret", header)


@pytest.mark.parametrize("configured", [None, ""])
def test_no_configured_token_is_403_saying_how_to_enable(configured: str | None) -> None:
    with pytest.raises(Forbidden) as info:
        check_admin(configured, "Bearer anything")
    assert "RNNADD_ADMIN_TOKEN" in info.value.detail


@pytest.mark.parametrize(("path", "body"), ADMIN_ROUTES)
def test_admin_routes_reject_missing_and_wrong_tokens(client, contract, path, body) -> None:
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 401 and response.mimetype == "application/problem+json"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        contract.check(response, path.replace("20261129T013600Z-a1b2c3", "{version}"), "POST")


@pytest.mark.parametrize(("path", "body"), ADMIN_ROUTES)
def test_admin_routes_are_off_without_a_token(model_dir: Path, monkeypatch, path, body) -> None:
    monkeypatch.setenv("RNNADD_ADMIN_TOKEN", "")
    client = create_app({"MODEL_DIR": str(model_dir)}).test_client()
    response = client.post(path, json=body, headers={"Authorization": "Bearer "})
    assert response.status_code == 403
    assert "RNNADD_ADMIN_TOKEN" in response.get_json()["detail"]


def test_the_token_comes_from_the_environment(model_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("RNNADD_ADMIN_TOKEN", "from-env")
    client = create_app({"MODEL_DIR": str(model_dir)}).test_client()
    path = "/v1/models/20261129T013600Z-a1b2c3/activate"
    assert client.post(path, headers={"Authorization": "Bearer from-env"}).status_code == 404
    assert client.post(path, headers={"Authorization": "Bearer other"}).status_code == 401


def test_a_non_ascii_header_is_a_401_not_a_crash(client) -> None:
    path = "/v1/models/20261129T013600Z-a1b2c3/activate"
    response = client.post(path, headers={"Authorization": "Bearer t\u00f6ken"})
    assert response.status_code == 401
