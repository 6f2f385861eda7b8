# The two commands of the README: `make serve` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c requirements/constraints.txt
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint typecheck unit binary clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade pip

$(VENV)/.runtime-stamp: $(BIN)/python requirements/runtime.txt requirements/constraints.txt pyproject.toml
	@echo "installing the runtime into $(VENV) (first time: llama-cpp-python compiles for ~7 minutes)"
	$(PIP) -r requirements/runtime.txt
	$(PIP) --no-deps -e .
	touch $@

$(VENV)/.dev-stamp: $(VENV)/.runtime-stamp requirements/dev.txt
	@echo "installing test and conversion tooling into $(VENV)"
	$(PIP) -r requirements/dev.txt
	touch $@

serve: $(VENV)/.runtime-stamp
	$(BIN)/edge-runner serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.dev-stamp
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev-stamp
	$(BIN)/mypy

test: $(VENV)/.dev-stamp lint typecheck
	$(BIN)/python -m pytest -q

unit: $(VENV)/.dev-stamp
	$(BIN)/python -m pytest -q -m "not slow"

binary:
	bash build/build_binary.sh

clean:
	rm -rf $(VENV) .venv-build dist build/work .pytest_cache .mypy_cache .ruff_cache
