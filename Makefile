# Two commands for a newcomer: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint bench install install-dev clean

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

serve: $(VENV)/.runtime
	$(BIN)/gunicorn -c service/gunicorn.conf.py --bind $(HOST):$(PORT) 'service.app:create_app()'

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
