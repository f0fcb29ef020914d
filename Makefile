# Two commands do everything on a fresh machine with only Python:
#   make demo   sets up .venv and runs examples/quickstart.py
#   make test   sets up .venv, lints, and runs the test suite on every backend
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BACKENDS ?= tensorflow jax
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: all venv test lint pytest demo clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,demo]"
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

pytest: $(STAMP)
	@for backend in $(BACKENDS); do \
		echo "=== pytest, KERAS_BACKEND=$$backend"; \
		KERAS_BACKEND=$$backend $(BIN)/python -m pytest -q || exit 1; \
	done

test: lint pytest

demo: $(STAMP)
	$(BIN)/python examples/quickstart.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
