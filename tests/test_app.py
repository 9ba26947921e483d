"""The app factory: RNNADD_* configuration, overrides, limits and blueprint registration."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.app import DEFAULT_MODEL_DIR, check_bounds, create_app, settings_from_env


def test_defaults() -> None:
    config = settings_from_env({})
    assert config == {
        "MODEL_DIR": str(DEFAULT_MODEL_DIR), "MAX_BITS": 4096, "MAX_BODY": 1024 * 1024,
        "MAX_BATCH": 10_000, "MAX_WORK": 2_560_000, "ADMIN_TOKEN": None, "MIN_ACCURACY": 1.0,
        "RELOAD_INTERVAL": 1.0, "ACCESS_LOG": True, "FAST_PATH": True,
    }
    assert Path(__file__).resolve().parent.parent / "models" == DEFAULT_MODEL_DIR


def test_every_setting_comes_from_its_variable() -> None:
    config = settings_from_env({
        "RNNADD_MODEL_DIR": "/srv/models", "RNNADD_MAX_BITS": "128", "RNNADD_MAX_BODY": "4096",
        "RNNADD_MAX_BATCH": "10", "RNNADD_MAX_WORK": "20000", "RNNADD_ADMIN_TOKEN": " tok ",
        "RNNADD_MIN_ACCURACY": "0.5",
        "RNNADD_RELOAD_INTERVAL": "0.25", "RNNADD_ACCESS_LOG": "off", "RNNADD_FAST_PATH": "0",
    })
    assert config == {
        "MODEL_DIR": "/srv/models", "MAX_BITS": 128, "MAX_BODY": 4096, "MAX_BATCH": 10,
        "MAX_WORK": 20_000,
        "ADMIN_TOKEN": "tok", "MIN_ACCURACY": 0.5, "RELOAD_INTERVAL": 0.25, "ACCESS_LOG": False,
        "FAST_PATH": False,
    }


def test_an_empty_admin_token_means_none() -> None:
    assert settings_from_env({"RNNADD_ADMIN_TOKEN": ""})["ADMIN_TOKEN"] is None
    assert settings_from_env({"RNNADD_ADMIN_TOKEN": "   "})["ADMIN_TOKEN"] is None


@pytest.mark.parametrize(("name", "value"), [
    ("RNNADD_MAX_BITS", "many"), ("RNNADD_MAX_BODY", "1.5"), ("RNNADD_RELOAD_INTERVAL", "soon"),
])
def test_a_malformed_variable_fails_at_startup_naming_it(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        settings_from_env({name: value})


@pytest.mark.parametrize(("key", "value"), [
    ("MAX_BITS", 1), ("MAX_BITS", 20_000), ("MAX_BODY", 0), ("MAX_BATCH", 0),
    ("MIN_ACCURACY", 1.5), ("RELOAD_INTERVAL", -1), ("MAX_BATCH", True), ("MAX_BITS", "64"),
    ("MAX_WORK", 4096),
])
def test_out_of_range_settings_are_refused(key: str, value: object) -> None:
    config = {**settings_from_env({}), key: value}
    with pytest.raises(ValueError, match=key):
        check_bounds(config)


def test_environment_then_test_config(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNADD_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("RNNADD_MAX_BITS", "64")
    monkeypatch.setenv("RNNADD_MAX_BODY", "2048")
    app = create_app({"MAX_BATCH": 3})
    assert app.config["MAX_BITS"] == 64 and app.config["MAX_BATCH"] == 3
    assert app.config["MAX_CONTENT_LENGTH"] == 2048
    client = app.test_client()
    assert client.post("/v1/predict", json={"a": 2**63, "b": 0}).status_code == 400
    assert client.post("/v1/predict", json={"a": 2**62, "b": 0}).status_code == 200


def test_responses_keep_insertion_order(client) -> None:
    assert client.get("/readyz").get_data(as_text=True).startswith('{"status":')


def test_every_concern_has_its_blueprint(app) -> None:
    assert {"predict", "models", "jobs", "health", "metrics", "openapi"} <= set(app.blueprints)
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    assert {"/v1/predict", "/v1/predict/batch", "/v1/model", "/v1/models",
            "/v1/models/<version>/activate", "/v1/retrain", "/v1/jobs", "/v1/jobs/<job_id>",
            "/healthz", "/readyz", "/metrics", "/openapi.json"} <= routes


def test_the_v2_blueprint_is_registered_when_present(app) -> None:
    pytest.importorskip("service.v2")
    assert "v2" in app.blueprints


def test_services_are_reachable_for_other_blueprints(app) -> None:
    from service.context import services

    with app.app_context():
        assert services().holder.ready and services().limits.max_bits == 4096


def test_openapi_is_served_as_stored(client) -> None:
    response = client.get("/openapi.json")
    stored = (Path(__file__).resolve().parent.parent / "service" / "openapi.json").read_bytes()
    assert response.status_code == 200 and response.get_data() == stored
