"""A bare Flask endpoint: the floor that gunicorn and Flask alone cost, for benchmarks.http.

`gunicorn -c service/gunicorn.conf.py 'benchmarks.bare_app:create_app()'`
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Response

# the shape and size of the service's answer to {"a": 100, "b": 27}
BODY = (
    b'{"a": 100, "b": 27, "bits": 8, "binary": "01111111", "decimal": 127, '
    b'"correct": true, "model_version": "20261129T030818Z-48dce8"}'
)
# environment variables that change how a worker computes or allocates
SETUP_ENV = ("OPENBLAS", "OMP_", "MKL_", "MALLOC_", "GLIBC_TUNABLES", "WEB_CONCURRENCY")


def create_app() -> Flask:
    """POST /v1/predict answers fixed JSON; GET /setup shows a worker's BLAS and environment."""
    app = Flask(__name__)

    @app.post("/v1/predict")
    def predict() -> Response:
        return Response(BODY, mimetype="application/json")

    @app.get("/setup")
    def setup() -> dict[str, Any]:
        # imported here so the timed endpoint runs in a process as bare as Flask allows
        import numpy  # noqa: F401
        from threadpoolctl import threadpool_info

        env = {k: v for k, v in os.environ.items() if k.startswith(SETUP_ENV)}
        return {"blas": threadpool_info(), "env": env}

    return app
