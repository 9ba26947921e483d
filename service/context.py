"""What the app factory builds once per app, reachable from any blueprint (e.g. service.v2)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from service.jobs import JobManager
from service.metrics import Metrics
from service.model import ModelHolder
from service.runtime import Runtime
from service.settings import Settings
from training.store import ModelStore

EXTENSION = "rnnadd"


@dataclass(frozen=True)
class Services:
    """The app's settings, model store, model holder, inference core, metrics and jobs."""

    settings: Settings
    store: ModelStore
    holder: ModelHolder
    runtime: Runtime
    metrics: Metrics
    jobs: JobManager


def services() -> Services:
    """The current app's services, for blueprints that are not built with them as arguments."""
    return current_app.extensions[EXTENSION]
