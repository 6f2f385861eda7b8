# The two commands of the README: `make serve` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c requirements/constraints.txt
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint typecheck unit binary llama-wheel smoke-binary clean

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

# dist/edge-runner-linux-<arch> (one file) and dist/edge-runner-linux-<arch>.d/ (one folder) with all four runtimes;
# BINARY_BACKENDS=onnxruntime,openvino picks fewer. The first build compiles a portable llama.cpp wheel (~10 min on 2 cores).
BINARY_BACKENDS ?= onnxruntime,openvino,tflite,llama_cpp
BINARY_ARCH := $(shell uname -m)
binary:
	bash build/build_binary.sh $(BINARY_BACKENDS)

# only the portable llama-cpp-python wheel (build/work/wheels/, kept in ~/.cache/edge-runner/wheels/)
llama-wheel:
	bash build/build_binary.sh --llama-wheel

# both variants against the Python package in .venv (the reference)
smoke-binary: $(VENV)/.runtime-stamp
	bash build/smoke_binary.sh dist/edge-runner-linux-$(BINARY_ARCH)
	bash build/smoke_binary.sh dist/edge-runner-linux-$(BINARY_ARCH).d/edge-runner

# linux/aarch64 on an x86_64 Debian 12 host, as root, under qemu (not part of `make test`; ~40 min the first time on
# 2 busy cores, ~15 min once the rootfs and the wheel exist): qemu 10 from
# bookworm-backports, an arm64 rootfs in build/work/aarch64/, llama.cpp cross-compiled, then the smoke test on the
# one file under qemu against .venv's python -m edge_runner. See docs/deployment.md, "aarch64".
.PHONY: binary-aarch64
binary-aarch64: $(VENV)/.runtime-stamp
	bash build/build_binary_aarch64.sh --smoke $(BINARY_BACKENDS)

# Container images with podman against locally bootstrapped bases, as root on an x86_64 Debian 12 host (not part of
# `make test`): IMAGE_ARCHES=amd64 (default), amd64,arm64, or all (adds cuda); IMAGE_FLAGS=--smoke runs the seed's
# `docker run` line against each CPU image. See build/build_images.sh and docs/deployment.md, "Images".
IMAGE_ARCHES ?= amd64
IMAGE_FLAGS ?= --smoke
.PHONY: image
image: $(VENV)/.runtime-stamp
	bash build/build_images.sh $(IMAGE_FLAGS) $(IMAGE_ARCHES)

clean:
	rm -rf $(VENV) .venv-build dist build/work .pytest_cache .mypy_cache .ruff_cache
