"""Application factory: settings from RNNADD_* variables, one blueprint per concern."""

from __future__ import annotations

import logging
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
    pages,
    predict,
    reqlog,
    v2,
)
from service.context import EXTENSION, Services
from service.jobs import JobManager
from service.model import ModelHolder
from service.runtime import Runtime
from service.settings import Settings
from training.store import ModelStore

log = logging.getLogger("rnnadd.app")


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: gunicorn calls this once per worker, tests once per test.

    test_config overrides settings by name (MODEL_DIR, MAX_BITS, ...) and may add Flask keys.
    """
    reqlog.configure_logging()
    settings = Settings.from_env(overrides=test_config)
    app = Flask(__name__, static_folder=None)  # service.pages serves its assets itself
    app.config.update(settings.as_config())
    app.config.update({k: v for k, v in (test_config or {}).items() if k not in app.config})
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    app.json.sort_keys = False  # type: ignore[attr-defined]

    store = ModelStore(settings.model_dir)
    try:
        if removed := store.clean_stale():
            log.info("removed %d stale temporary entries of crashed writers", len(removed))
    except OSError as exc:  # a read-only model directory: nothing to clean, serving goes on
        log.warning("cannot clean stale temporary files: %s", exc.strerror)
    app_metrics = metrics.Metrics()
    holder = ModelHolder(store, settings.reload_interval, events=app_metrics)
    if not holder.load():
        log.error("starting without a model (/readyz answers 503): %s", holder.reason)
    runtime = Runtime(settings, holder, app_metrics)
    jobs = JobManager(store.root, settings.max_bits, keep=settings.job_history,
                      keep_models=settings.model_history)
    app_metrics.add_jobs_collector(jobs.outcomes, jobs.active)
    app.extensions[EXTENSION] = Services(settings, store, holder, runtime, app_metrics, jobs)

    errors.register_error_handlers(app)
    if settings.fast_path:
        app.wsgi_app = fastpath.PredictFastPath(  # type: ignore[method-assign]
            app.wsgi_app, runtime, settings.max_body
        )
    reqlog.install(app, app_metrics, settings.access_log)
    app.register_blueprint(predict.create_blueprint(runtime, settings.max_body))
    app.register_blueprint(models_api.create_blueprint(store, runtime, settings.max_body))
    app.register_blueprint(jobs_api.create_blueprint(jobs, settings.max_body))
    app.register_blueprint(health.create_blueprint(runtime))
    app.register_blueprint(metrics.create_blueprint(app_metrics))
    app.register_blueprint(openapi.create_blueprint(settings))
    app.register_blueprint(v2.create_blueprint())
    app.register_blueprint(pages.create_blueprint())
    return app
