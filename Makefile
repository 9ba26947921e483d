# Two commands for a newcomer: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
GRPC_PORT ?= 8081

.PHONY: serve test lint bench install install-dev clean up down clean-docker bench-proxy \
	grpc-stubs bench-grpc

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt client/pyproject.toml $(VENV)/.runtime
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

$(VENV)/.bench: requirements-bench.txt $(VENV)/.dev
	$(BIN)/pip install -q -r requirements-bench.txt
	touch $@

install: $(VENV)/.runtime

install-dev: $(VENV)/.dev

# REST and gRPC from the same gunicorn workers (GRPC_PORT= turns gRPC off); Ctrl-C stops both.
serve: $(VENV)/.runtime
	@echo "serving the model in $${RNNADD_MODEL_DIR:-models/} on http://$(HOST):$(PORT)/$(if $(GRPC_PORT), and gRPC on $(HOST):$(GRPC_PORT),) (Ctrl-C stops)"
	RNNADD_GRPC_BIND=$(if $(GRPC_PORT),$(HOST):$(GRPC_PORT),) \
	    $(BIN)/gunicorn -c service/gunicorn.conf.py --bind $(HOST):$(PORT) 'service.app:create_app()'

# The committed Python modules of the Open Inference Protocol's gRPC definition.
grpc-stubs: $(VENV)/.dev
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. \
	    service/proto/open_inference_grpc.proto

test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .

bench: $(VENV)/.bench
	$(BIN)/python -m benchmarks.training
	$(BIN)/python -m benchmarks.http

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

# Production-like, in containers: HAProxy in front of REPLICAS api replicas (docs/deployment.md).
REPLICAS ?= 3
up:
	scripts/compose-up.sh $(REPLICAS)

down:
	if docker compose version >/dev/null 2>&1; then docker compose down; else docker-compose down; fi

# Untagged images that rebuilds of rnnadd's images leave behind (the classic builder also keeps
# the api image's build stage); tagged images and other projects' images are not touched.
clean-docker:
	docker image prune -f --filter label=io.rnnadd.project=rnnadd

bench-proxy: $(VENV)/.dev
	$(BIN)/python -m benchmarks.proxy

# gRPC against /v2 REST and against MLServer 1.7 (in a venv of its own: its pins differ).
MLSERVER_VENV ?= .venv-mlserver
$(MLSERVER_VENV)/bin/mlserver: requirements-mlserver.txt
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/pip install -q -r requirements-mlserver.txt
	touch $@

bench-grpc: $(VENV)/.dev $(MLSERVER_VENV)/bin/mlserver
	$(BIN)/python -m benchmarks.grpc --mlserver $(MLSERVER_VENV)/bin/mlserver
