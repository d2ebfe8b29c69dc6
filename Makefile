# Entropic OS: two commands set everything up on a fresh machine.
#   make run    create the environment, then start the workbench
#   make test   create the environment, then run lint, types and the whole test suite
#   make bench  run the benchmarks (each prints a final JSON line of figures)

PYTHON ?= python3
UV_VERSION := 0.13.8
UV := .tools/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run test lint typecheck pytest bench clean

$(UV):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --prefix .tools uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

run: $(VENV)/.synced
	$(PY) main.py $(ARGS)

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .

typecheck: $(VENV)/.synced
	$(VENV)/bin/mypy

pytest: $(VENV)/.synced
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(VENV)/.synced
	$(PY) -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
