# Entropic OS: two commands set everything up on a fresh machine.
#   make run    create the environment, then start the workbench
#               (REMOTE=1 ARGS="--home DIR": attach to a remote backend, fetch no model)
#   make test   create the environment, then run lint, types and the whole test suite
#   make bench  run the benchmarks (each prints a final JSON line of figures)
#   make models obtain the default model (Qwen2.5-Coder-1.5B, ~1.1 GB download) into the
#               shared models cache, once; `make run` and `make test` do it first
#   make learning  add the optional fine-tuning extra (torch CPU, transformers, peft) and
#                  llama.cpp's GGUF converter; `make test` installs it too

PYTHON ?= python3
UV_VERSION := 0.13.8
UV := .tools/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run test lint typecheck pytest bench clean learning models

$(UV):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --prefix .tools uv==$(UV_VERSION)

# --inexact: the base sync keeps the learning extra when it is installed.
$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --inexact --python $(PYTHON)
	touch $@

# The learning extra and convert_hf_to_gguf.py from the llama.cpp that llama-cpp-python vendors,
# into .tools/llama.cpp. torch is the CPU build: the locked wheel on disk (pyproject's
# [tool.uv.sources]) where it lies, else the same version from PyTorch's own CPU index (pinned
# by version there: the lock cannot record that index's hashes from a machine that cannot reach
# it); everything else comes from the lock either way.
TORCH_WHEEL := /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
$(VENV)/.learning: $(VENV)/.synced
	if [ -f "$(TORCH_WHEEL)" ]; then \
	    $(UV) sync --frozen --inexact --extra learning --python $(PYTHON); \
	else \
	    $(UV) pip install --python $(PY) --index-url $(TORCH_CPU_INDEX) "torch==2.13.0+cpu" && \
	    $(UV) sync --frozen --inexact --extra learning --no-install-package torch --python $(PYTHON); \
	fi
	$(PY) -m backend.learning.converter install
	touch $@

learning: $(VENV)/.learning

# Idempotent and instant once the model is there and verified; resumes an interrupted fetch.
models: $(VENV)/.synced
	$(PY) main.py models fetch

# REMOTE=1: the workbench of a home attached to a backend on another machine (README
# "Scaling out"), which runs the models there: no model is fetched here.
run: $(VENV)/.synced $(if $(filter 1,$(REMOTE)),,models)
	$(PY) main.py $(ARGS)

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.synced
	$(VENV)/bin/mypy

pytest: $(VENV)/.learning models
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(VENV)/.learning models
	$(PY) -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
