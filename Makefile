# Two commands do everything on a fresh machine with only Python:
#   make demo   installs keras_regs and the demo's extra (nothing else) into .venv
#               and runs the main job, examples/mnist.py
#   make test   installs the test, demo, docs and hub extras into .venv, lints,
#               builds the sdist and wheel (make dist) and installs the wheel into
#               a fresh environment with only its base dependencies (the
#               quickstart and every public name, .ci/wheel-check), runs the test
#               suite on every backend (which also builds the docs site with
#               --strict, runs every docs code block and every example in its
#               short mode), then the Keras-compatibility subset on the lowest
#               supported Keras and on keras-nightly
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo
# The Pythons .ci/wheel-check installs the wheel into (each one found; `make
# wheel-check WHEEL_PYTHONS="python3.11 python3.12 python3.13"` tries several).
WHEEL_PYTHONS ?= $(PYTHON)
BACKENDS ?= tensorflow jax torch
# PyTorch's CPU build (this workplace has its file on disk; elsewhere pip fetches
# it). If it cannot be installed, the torch backend is skipped with a message.
TORCH_SPEC ?= torch==2.13.0
TORCH_STAMP := $(VENV)/.torch
PYTEST_WORKERS ?= 2
export TF_CPP_MIN_LOG_LEVEL ?= 2

# Other Keras releases: the lowest supported must pass; keras-nightly is run and
# printed (and recorded in docs/compatibility.md), never blocking. The subset
# exercises every Keras internal keras_regs touches (keras_regs/_keras.py): the
# internals themselves, then what uses each: graph surgery and KerasHub models
# (graph attributes, nodes, history), weight slots (sublayers, own variables),
# records and pickling, logs and schedules (tracker, compute_loss, the JAX
# state, the optimizer's counter, retracing), node bookkeeping (node lists,
# tensor histories, node keys). Tests marked slow are left out.
KERAS_LOWEST ?= 3.14.0
KERAS_COMPAT_TESTS ?= tests/test_keras_internals.py tests/test_training.py \
	tests/test_logs.py tests/test_schedules.py tests/test_insert.py \
	tests/test_kerashub.py tests/test_layer_table.py tests/test_subclassed.py \
	tests/test_surgery.py
KERAS_COMPAT_JAX_TESTS ?= tests/test_keras_internals.py tests/test_training.py \
	tests/test_schedules.py tests/test_logs.py
export KERAS_COMPAT_TESTS KERAS_COMPAT_JAX_TESTS

.PHONY: all venv test lint pytest compat demo docs dist wheel-check bench long clean

all: test

$(STAMP): pyproject.toml keras_regs/__init__.py
	@echo "=== installing keras_regs (editable) with the test, demo, docs and hub extras into $(VENV)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(DEMO_STAMP)

# The demo's own install: keras_regs and its demo extra only (a first run takes a
# few minutes, mostly TensorFlow's download).
$(DEMO_STAMP): pyproject.toml keras_regs/__init__.py
	@echo "=== installing keras_regs (editable) with the demo extra into $(VENV): a few minutes the first time"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[demo]"
	@echo "=== installed"
	touch $@

$(TORCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" \
		|| echo "*** $(TORCH_SPEC) could not be installed: the torch backend is skipped"
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

pytest: $(STAMP) $(TORCH_STAMP)
	@for backend in $(BACKENDS); do \
		if [ "$$backend" = torch ] && ! $(BIN)/python -c "import torch" 2>/dev/null; then \
			echo "=== skipped: KERAS_BACKEND=torch (PyTorch is not installed)"; continue; \
		fi; \
		echo "=== pytest, KERAS_BACKEND=$$backend"; \
		KERAS_BACKEND=$$backend $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) || exit 1; \
	done

# The wheel check's fresh environment spends its two minutes mostly downloading
# TensorFlow, so it runs beside the test suite (its output in
# build/wheel-check.log, printed at the end; either failing fails `make test`).
test: lint dist $(TORCH_STAMP)
	@mkdir -p build
	@echo "=== wheel-check, in the background: build/wheel-check.log"
	@.ci/wheel-check $(WHEEL_PYTHONS) > build/wheel-check.log 2>&1 & wheel=$$!; \
	status=0; $(MAKE) --no-print-directory pytest compat || status=$$?; \
	if wait $$wheel; then \
		echo "=== wheel-check: passed"; grep -E "^(===|    installed|import_public)" build/wheel-check.log; \
	else \
		echo "=== wheel-check: FAILED"; tail -n 40 build/wheel-check.log; status=1; \
	fi; \
	exit $$status

compat: $(STAMP)
	.ci/keras-compat lowest "keras==$(KERAS_LOWEST)"
	@.ci/keras-compat nightly keras-nightly \
		|| echo "*** keras-nightly: failures above (not blocking; see docs/compatibility.md)"

demo: $(DEMO_STAMP)
	$(BIN)/python examples/mnist.py

# The publishing rehearsal: the sdist and the wheel into dist/, checked by twine
# (the README renders on a package index, the metadata is complete).
# MANIFEST.in grafts whole folders, so a file not committed would ship: refused.
dist: $(STAMP)
	@if [ -d .git ] && git status --porcelain --untracked-files=all | grep '^??'; then \
		echo "make dist: the untracked files above would ship in the sdist; commit or remove them" >&2; \
		exit 1; \
	fi
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

wheel-check: dist
	.ci/wheel-check $(WHEEL_PYTHONS)

# The long runs (not part of `make test`; docs/testing.md records them): 2,000 train
# steps, 500 regularize/strip/preview cycles, 500 examples per property, on
# TensorFlow. About an hour on 2 CPU cores.
LONG_BACKEND ?= tensorflow
long: $(STAMP)
	KERAS_BACKEND=$(LONG_BACKEND) KERAS_REGS_LONG_STEPS=2000 \
		KERAS_REGS_LONG_CYCLES=500 KERAS_REGS_PROPERTY_EXAMPLES=500 \
		$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) \
		--durations=0 tests/test_long_run.py tests/test_properties.py

# The docs site, into build/site (tests/test_docs.py builds it the same way).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Benchmarks (not part of `make test`): writes benchmarks/results.json and
# docs/benchmarks.md. Several minutes on 2 CPU cores.
BENCH_BACKENDS ?= tensorflow
bench: $(STAMP)
	@for backend in $(BENCH_BACKENDS); do \
		for script in train_step layers_step attach logs_step schedule_step; do \
			echo "=== $$script, KERAS_BACKEND=$$backend"; \
			(cd benchmarks && KERAS_BACKEND=$$backend ../$(BIN)/python $$script.py) || exit 1; \
		done; \
	done
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) .venv-keras-* .pytest_cache .ruff_cache *.egg-info build dist demo_output
