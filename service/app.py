"""Application factory: configuration from RNNADD_* variables, one blueprint per concern."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from service import (
    errors,
    fastpath,
    health,
    jobs_api,
    metrics,
    models_api,
    openapi,
    predict,
    reqlog,
)
from service.context import EXTENSION, Services
from service.inputs import Limits
from service.jobs import JobManager
from service.model import ModelHolder
from training.store import ModelStore

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models"
MAX_SAFE_BITS = 14_000  # Python refuses int <-> str beyond 4300 digits (about 14,284 bits)

log = logging.getLogger("rnnadd.app")


def _flag(value: str) -> bool:
    """Environment switches: 1/true/yes/on, case-insensitive."""
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _token(value: str) -> str | None:
    """An empty RNNADD_ADMIN_TOKEN means no token (admin endpoints stay off)."""
    return value.strip() or None


# config key -> (environment variable, parser, default)
SETTINGS: dict[str, tuple[str, Callable[[str], Any], Any]] = {
    "MODEL_DIR": ("RNNADD_MODEL_DIR", str, str(DEFAULT_MODEL_DIR)),
    "MAX_BITS": ("RNNADD_MAX_BITS", int, 4096),
    "MAX_BODY": ("RNNADD_MAX_BODY", int, 1024 * 1024),
    "MAX_BATCH": ("RNNADD_MAX_BATCH", int, 10_000),
    "MAX_WORK": ("RNNADD_MAX_WORK", int, 2_560_000),
    "ADMIN_TOKEN": ("RNNADD_ADMIN_TOKEN", _token, None),
    "MIN_ACCURACY": ("RNNADD_MIN_ACCURACY", float, 1.0),
    "RELOAD_INTERVAL": ("RNNADD_RELOAD_INTERVAL", float, 1.0),
    "ACCESS_LOG": ("RNNADD_ACCESS_LOG", _flag, True),
    "FAST_PATH": ("RNNADD_FAST_PATH", _flag, True),
}

BOUNDS: dict[str, tuple[float, float]] = {
    "MAX_BITS": (2, MAX_SAFE_BITS),
    "MAX_BODY": (64, 1 << 30),
    "MAX_BATCH": (1, 1_000_000),
    "MAX_WORK": (MAX_SAFE_BITS, 10**9),
    "MIN_ACCURACY": (0.0, 1.0),
    "RELOAD_INTERVAL": (0.0, 3600.0),
}


def settings_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Read every RNNADD_* setting, failing at startup with the variable's name if one is bad."""
    config: dict[str, Any] = {}
    for key, (name, parse, default) in SETTINGS.items():
        raw = environ.get(name)
        if raw is None or (raw.strip() == "" and parse is not _token):
            config[key] = default
            continue
        try:
            config[key] = parse(raw)
        except ValueError as exc:
            raise ValueError(f"{name}={raw!r} is not valid: {exc}") from exc
    return config


def check_bounds(config: Mapping[str, Any]) -> None:
    """Refuse out-of-range limits at startup rather than misbehave at request time."""
    for key, (low, high) in BOUNDS.items():
        value = config[key]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not low <= value <= high:
            name = SETTINGS[key][0]
            raise ValueError(f"{name} ({key}) must be within {low}..{high}, got {value!r}")


def optional_blueprints(app: Flask) -> None:
    """Register service.v2 (the Open Inference Protocol) when that module is installed."""
    try:
        module = importlib.import_module("service.v2")
    except ModuleNotFoundError as exc:
        if exc.name != "service.v2":
            raise
        return
    app.register_blueprint(module.create_blueprint())


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: gunicorn calls this once per worker, tests once per test."""
    reqlog.configure_logging()
    app = Flask(__name__)
    app.config.update(settings_from_env(os.environ))
    if test_config:
        app.config.update(test_config)
    check_bounds(app.config)
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_BODY"]
    app.json.sort_keys = False  # type: ignore[attr-defined]

    store = ModelStore(app.config["MODEL_DIR"])
    app_metrics = metrics.Metrics()
    holder = ModelHolder(store, app.config["RELOAD_INTERVAL"], events=app_metrics)
    if not holder.load():
        log.error("starting without a model (/readyz answers 503): %s", holder.reason)
    limits = Limits(app.config["MAX_BITS"], app.config["MAX_BATCH"], app.config["MAX_WORK"])
    jobs = JobManager(store.root, app.config["MIN_ACCURACY"])
    app_metrics.add_jobs_collector(lambda: jobs.list(limit=None))
    app.extensions[EXTENSION] = Services(store, holder, app_metrics, limits, jobs)

    errors.register_error_handlers(app)
    if app.config["FAST_PATH"]:
        app.wsgi_app = fastpath.PredictFastPath(  # type: ignore[method-assign]
            app.wsgi_app, holder, app_metrics, limits, app.config["MAX_BODY"]
        )
    reqlog.install(app, app_metrics, app.config["ACCESS_LOG"])
    app.register_blueprint(
        predict.create_blueprint(holder, app_metrics, limits, app.config["MAX_BODY"])
    )
    app.register_blueprint(models_api.create_blueprint(store, holder))
    app.register_blueprint(jobs_api.create_blueprint(jobs))
    app.register_blueprint(health.create_blueprint(holder))
    app.register_blueprint(metrics.create_blueprint(app_metrics))
    app.register_blueprint(openapi.create_blueprint())
    optional_blueprints(app)
    return app
