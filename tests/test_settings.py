"""Settings from RNNADD_* (one object for app, limits and gunicorn), and the app factory."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from service.app import create_app
from service.settings import DEFAULT_MODEL_DIR, Settings, describe

CONF = Path(__file__).resolve().parent.parent / "service" / "gunicorn.conf.py"


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert (settings.model_dir, settings.max_bits, settings.max_body, settings.max_batch,
            settings.max_work, settings.admin_token, settings.reload_interval) == (
        str(DEFAULT_MODEL_DIR), 4096, 1024 * 1024, 10_000, 2_560_000, None, 1.0)
    assert settings.access_log and settings.fast_path and settings.job_history == 100
    assert Path(__file__).resolve().parent.parent / "models" == DEFAULT_MODEL_DIR


def test_every_setting_comes_from_its_variable() -> None:
    settings = Settings.from_env({
        "RNNADD_MODEL_DIR": "/srv/models", "RNNADD_MAX_BITS": "128", "RNNADD_MAX_BODY": "4096",
        "RNNADD_MAX_BATCH": "10", "RNNADD_MAX_WORK": "20000", "RNNADD_ADMIN_TOKEN": " tok ",
        "RNNADD_RELOAD_INTERVAL": "0.25", "RNNADD_ACCESS_LOG": "off", "RNNADD_FAST_PATH": "0",
        "RNNADD_JOB_HISTORY": "7", "WEB_CONCURRENCY": "3", "RNNADD_THREADS": "2",
    })
    assert settings == Settings(model_dir="/srv/models", max_bits=128, max_body=4096,
                                max_batch=10, max_work=20_000, admin_token="tok",
                                reload_interval=0.25, access_log=False, fast_path=False,
                                job_history=7, workers=3, threads=2)


def test_every_variable_is_documented_once() -> None:
    names = [name for name, _, _ in describe()]
    assert len(names) == len(set(names)) and all(help for _, _, help in describe())


def test_gunicorn_follows_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "5")
    monkeypatch.setenv("RNNADD_THREADS", "3")
    conf = runpy.run_path(str(CONF))
    assert (conf["workers"], conf["threads"]) == (5, 3)
    defaults = Settings()
    monkeypatch.delenv("WEB_CONCURRENCY")
    monkeypatch.delenv("RNNADD_THREADS")
    conf = runpy.run_path(str(CONF))
    assert (conf["workers"], conf["threads"], conf["timeout"]) == (
        defaults.workers, defaults.threads, defaults.timeout)


def test_an_empty_admin_token_means_none() -> None:
    assert Settings.from_env({"RNNADD_ADMIN_TOKEN": ""}).admin_token is None
    assert Settings.from_env({"RNNADD_ADMIN_TOKEN": "   "}).admin_token is None


@pytest.mark.parametrize("token", ["pässwörd", "tok\u2603en", "tab\tinside"])
def test_a_token_that_is_not_printable_ascii_is_refused_at_startup(token: str) -> None:
    with pytest.raises(ValueError, match="RNNADD_ADMIN_TOKEN must be printable ASCII"):
        Settings.from_env({"RNNADD_ADMIN_TOKEN": token})


@pytest.mark.parametrize(("name", "value"), [
    ("RNNADD_MAX_BITS", "many"), ("RNNADD_MAX_BODY", "1.5"), ("RNNADD_RELOAD_INTERVAL", "soon"),
    ("WEB_CONCURRENCY", "two"),
])
def test_a_malformed_variable_fails_at_startup_naming_it(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize("bits", ["2", "7"])
def test_14_a_max_bits_narrower_than_the_gate_stops_the_service_at_startup(bits: str) -> None:
    """Every retrain would fail (the gate checks all 8-bit sums): refuse it before serving."""
    from training.gate import EXHAUSTIVE_BITS

    with pytest.raises(ValueError, match=rf"RNNADD_MAX_BITS .*within {EXHAUSTIVE_BITS}\.\."):
        Settings.from_env({"RNNADD_MAX_BITS": bits})
    assert Settings.from_env({"RNNADD_MAX_BITS": str(EXHAUSTIVE_BITS)}).max_bits == 8


@pytest.mark.parametrize("value", ["proxy", "10.0.0.1/8", "127.0.0.1,,::1/200"])
def test_a_bad_forwarded_allow_ips_names_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match="RNNADD_FORWARDED_ALLOW_IPS"):
        Settings.from_env({"RNNADD_FORWARDED_ALLOW_IPS": value})


@pytest.mark.parametrize(("key", "value"), [
    ("MAX_BITS", 1), ("MAX_BITS", 7), ("MAX_BITS", 20_000), ("FORWARDED_ALLOW_IPS", "x"),
    ("MAX_BODY", 0), ("MAX_BATCH", 0),
    ("RELOAD_INTERVAL", -1), ("MAX_BATCH", True), ("MAX_BITS", "64"),
    ("MAX_WORK", 4096), ("JOB_HISTORY", 0), ("WORKERS", 0),
])
def test_out_of_range_settings_are_refused(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key.lower()):
        Settings().with_overrides({key: value})


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


def test_the_v2_blueprint_is_registered(app) -> None:
    assert "v2" in app.blueprints


def test_services_are_reachable_for_other_blueprints(app) -> None:
    from service.context import services

    with app.app_context():
        assert services().holder.ready and services().runtime.max_bits == 4096


def test_the_readme_table_lists_every_setting_with_its_default() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for env, default, help_text in describe():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{env}` |")), "")
        assert row, f"{env} is missing from the README's configuration table"
        assert help_text in row
        if default not in (None, "") and env != "RNNADD_MODEL_DIR":
            assert f"`{default}`" in row, row
