"""Shared fixtures: a private copy of a real trained model, the app, its client, the contract."""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator, FormatChecker
from werkzeug.test import TestResponse

from service.app import create_app
from tests.servers import seed_models
from training.store import CERTIFICATE, ModelStore

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "service" / "openapi.json"


# A write to the model directory that fails: errno, the answer's status, words it must say.
STORAGE_ERRORS = [
    (errno.EROFS, 503, "not writable"), (errno.EACCES, 503, "not writable"),
    (errno.ENOSPC, 507, "full"),
]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's RNNADD_* or multiprocess settings must not change what tests see."""
    for name in list(os.environ):
        if name.startswith("RNNADD_") or name in ("PROMETHEUS_MULTIPROC_DIR", "WEB_CONCURRENCY"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def pristine_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model (or, in a bare checkout, a freshly trained one), copied once."""
    dest = tmp_path_factory.mktemp("bundled") / "models"
    seed_models(dest)
    return dest


@pytest.fixture(scope="session")
def adder_params(pristine_models: Path) -> dict:
    """Weights that really add (the bundled model's): what activation now checks for itself."""
    store = ModelStore(pristine_models)
    return dict(store.load_current().params)


@pytest.fixture(scope="session")
def adder_proof(pristine_models: Path) -> dict[str, bytes]:
    """The bundled model's certificate, as store.save's extra_files: it proves adder_params."""
    store = ModelStore(pristine_models)
    return {CERTIFICATE: (pristine_models / store.current() / CERTIFICATE).read_bytes()}


@pytest.fixture
def model_dir(pristine_models: Path, tmp_path: Path) -> Path:
    """A model directory of the test's own, so tests may activate, add and corrupt versions."""
    dest = tmp_path / "models"
    shutil.copytree(pristine_models, dest)
    return dest


@pytest.fixture
def store(model_dir: Path) -> ModelStore:
    """The store over the test's model directory."""
    return ModelStore(model_dir)


@pytest.fixture
def admin_token() -> str:
    """A fresh token per test: nothing may depend on a known default."""
    return secrets.token_urlsafe(24)


@pytest.fixture
def auth(admin_token: str) -> dict[str, str]:
    """The Authorization header that admin endpoints accept."""
    return {"Authorization": f"Bearer {admin_token}"}


@pytest.fixture
def app(model_dir: Path, admin_token: str) -> Flask:
    """The app as gunicorn would build it, on the test's model directory."""
    return create_app({"MODEL_DIR": str(model_dir), "ADMIN_TOKEN": admin_token, "TESTING": True})


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    """A test client of the app."""
    with app.test_client() as test_client:
        yield test_client


def clone_version(store: ModelStore, version: str | None = None, *, activate: bool = False,
                  flip_output: bool = False) -> str:
    """A new valid version with the same weights (as a retrain that found the same optimum).

    flip_output negates the output layer: a version that loads but adds wrongly (and so fails
    the gate, which runs on save).
    """
    model = store.load(version or store.current())
    fields = {k: model.record[k] for k in
              ("hyperparameters", "seed", "steps", "training_seconds", "metrics", "history")}
    params = dict(model.params)
    extra = {}
    if flip_output:
        params["w_o"] = -params["w_o"]
    elif (proof := store.root / model.version / CERTIFICATE).is_file():
        extra[CERTIFICATE] = proof.read_bytes()  # the same weights: the same proof holds
    return store.save(params, {**fields, "parent": model.version}, activate=activate,
                      extra_files=extra)


def corrupt_version(store: ModelStore) -> str:
    """A stored version whose weights no longer match their checksum."""
    version = clone_version(store)
    (store.root / version / "weights.npz").write_bytes(b"PK\x03\x04 not really a zip")
    return version


def point_current_at(store: ModelStore, version: str) -> None:
    """Rewrite CURRENT without validation, as a hand edit or a bad deploy would."""
    tmp = store.root / ".CURRENT.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, store.current_file)


class Contract:
    """Checks real responses against the OpenAPI document the service publishes."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def schema_for(self, path: str, method: str, status: int, media: str) -> dict[str, Any]:
        """The documented schema of one response; fails when it is not documented."""
        operation = self.document["paths"][path][method.lower()]
        response = operation["responses"].get(str(status))
        assert response is not None, f"{method} {path} -> {status} is not documented"
        if "$ref" in response:
            response = self.document["components"]["responses"][response["$ref"].split("/")[-1]]
        content = response.get("content", {})
        assert media in content, f"{method} {path} -> {status}: {media} not in {list(content)}"
        return content[media]["schema"]

    def validate(self, schema: dict[str, Any], instance: Any) -> None:
        """Validate against a schema that may $ref the document's components."""
        rooted = {**schema, "components": self.document["components"]}
        Draft202012Validator(rooted, format_checker=FormatChecker()).validate(instance)

    def check(self, response: TestResponse, path: str, method: str = "GET") -> None:
        """The response's status, media type and body are those the document promises."""
        media = response.mimetype
        schema = self.schema_for(path, method, response.status_code, media)
        if media.endswith("json"):
            self.validate(schema, json.loads(response.get_data()))


@pytest.fixture(scope="session")
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document as stored in the repository."""
    return json.loads(OPENAPI_PATH.read_text())


@pytest.fixture(scope="session")
def contract(openapi_document: dict[str, Any]) -> Contract:
    """The response checker."""
    return Contract(openapi_document)


def wide_version(store: ModelStore, hidden: int = 256, *, gate_passed: bool = True) -> str:
    """A stored version of `hidden` units (random weights) whose record carries a gate result.

    Saving does not run the gate when the record has one, so a 256-unit version is quick to
    make; what matters here is its size (the cost of one step), not what it adds.
    """
    rng = np.random.default_rng(hidden)
    params = {"w_i": rng.normal(size=(hidden, 2)), "w_h": rng.normal(size=(hidden, hidden)),
              "w_o": rng.normal(size=(1, hidden))}
    gate = {"passed": gate_passed, "max_bits": 4096,
            "failed": None if gate_passed else "exhaustive_8bit"}
    fields = {"hyperparameters": {"hidden_size": hidden, "bits": 8}, "seed": 0, "steps": 0,
              "training_seconds": 0.0, "metrics": {}, "history": [], "parent": None,
              "gate": gate}
    return store.save(params, fields)


@pytest.fixture(scope="session")
def exact_adder() -> dict:
    """A hand-built exact adder with one idle unit (tests/adders.py)."""
    from tests.adders import adder

    return adder(1)


@pytest.fixture(scope="session")
def exact_verdict(exact_adder: dict):
    """certify() of the exact adder (it certifies in about a second)."""
    from training.certify import certify

    return certify(exact_adder, time_limit=30.0)


@pytest.fixture(scope="session")
def slow_model() -> tuple[dict, int]:
    """A model exact up to N > 4096 bits and wrong beyond (tests/adders.py), with N."""
    from tests.adders import slow_adder

    return slow_adder()


@pytest.fixture(scope="session")
def seed0_before_certification() -> dict:
    """Seed 0 of the trainer as it was before certification: it passed the gate of its day
    (no run-structured pairs) and adds 673 + 137436856354 wrongly."""
    from benchmarks.training import before_certification

    return before_certification(0)
