# rnnadd: the service image. Builds with BuildKit and with the classic builder (docker-compose 1.29).
# Where no registry is reachable: scripts/offline-base-image.sh builds a stand-in base, then
#   docker build --build-arg PYTHON_IMAGE=rnnadd-python:3.11-bookworm-local -t rnnadd .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The label lets `make clean-docker` remove this stage's untagged image, which the classic builder
# (docker-compose 1.29) keeps after every build.
LABEL io.rnnadd.project=rnnadd io.rnnadd.image=api-build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
# Dependencies first: this layer is reused until requirements.txt changes.
COPY requirements.txt /tmp/requirements.txt
# Serving needs neither pip and setuptools nor numpy's own test suites (about 17 MB).
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt \
    && /opt/venv/bin/pip uninstall -q -y pip setuptools \
    && find /opt/venv/lib -depth -type d -name tests -path '*/numpy/*' -exec rm -rf {} +
# The bundled model: the version named in models/CURRENT, nothing else from a local models/.
COPY models/ /tmp/models/
RUN set -e; \
    version=$(cat /tmp/models/CURRENT 2>/dev/null || true); \
    if [ -z "$version" ] || [ ! -f "/tmp/models/$version/model.json" ]; then \
        echo "models/CURRENT must name a bundled model directory in models/" >&2; exit 1; \
    fi; \
    mkdir -p /opt/seed-models; \
    cp -R "/tmp/models/$version" /opt/seed-models/; \
    cp /tmp/models/CURRENT /opt/seed-models/CURRENT

FROM ${PYTHON_IMAGE}
LABEL io.rnnadd.project=rnnadd io.rnnadd.image=api
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    HOME=/tmp \
    RNNADD_MODEL_DIR=/var/lib/rnnadd/models \
    RNNADD_SEED_DIR=/opt/rnnadd/seed-models \
    RNNADD_GRPC_BIND=0.0.0.0:8081 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/rnnadd-metrics
RUN groupadd --system --gid 10001 rnnadd \
    && useradd --system --uid 10001 --gid rnnadd --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin rnnadd \
    && mkdir -p /var/lib/rnnadd/models \
    && chown rnnadd:rnnadd /var/lib/rnnadd/models
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/seed-models /opt/rnnadd/seed-models
COPY docker/entrypoint.sh /usr/local/bin/rnnadd-entrypoint
COPY training/ /app/training/
COPY service/ /app/service/
WORKDIR /app
USER rnnadd
VOLUME ["/var/lib/rnnadd/models"]
# 8000: HTTP (/v1, /v2 REST); 8081: gRPC (the Open Inference Protocol), from the same workers.
EXPOSE 8000 8081
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
ENTRYPOINT ["rnnadd-entrypoint"]
CMD ["gunicorn", "-c", "service/gunicorn.conf.py", "--bind", "0.0.0.0:8000", "service.app:create_app()"]
