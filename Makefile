# The front door. Every target creates or reuses its virtualenv and installs from setup.cfg.
#   make test   the suite on TensorFlow (.venv), JAX (.venv-jax) and PyTorch (.venv-torch), the
#               three side by side (the three virtualenvs are created side by side too); tests
#               marked tensorflow_only skip on the other two. Each suite's output is printed
#               whole when it ends. `make test-tf` (or -jax, -torch) runs one of them.
#               Then the docstring examples on all three backends and the documentation
#               site (`make doctest`, `make docs`).
#   make demo   the main example on bundled data (.venv)
#   make docs   the documentation site, strict: a broken link or reference fails (.venv)
#   make test-keras-min  the suite on JAX against the lowest Keras that
#               setup.cfg allows (.venv-keras-min); not part of make test (21 min on a
#               loaded 2-core machine)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.keras_reg-installed
JAX_VENV ?= .venv-jax
TORCH_VENV ?= .venv-torch
# The lowest Keras that setup.cfg allows (install_requires keras>=3.14): keep the two equal.
KERAS_MIN ?= 3.14.1
KERAS_MIN_VENV ?= .venv-keras-min
# A CPU wheel of this version is on the project's machines; newer ones are CUDA builds (GBs).
TORCH_VERSION ?= 2.13.0
PIP_QUIET ?= --quiet

# pytest-xdist workers for the TensorFlow suite (whole test files per worker, so that
# module-scoped fixtures are built once). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

export TF_CPP_MIN_LOG_LEVEL ?= 2

# PyTorch's suite computes on one thread (OpenMP's). `make test` runs four pytest processes side
# by side on a 2-core machine, and PyTorch's OpenMP threads spin while they wait for a core:
# with the three backends side by side on three test files, its suite took 170 s with its
# default threads and 86 s with one. (One thread for TensorFlow and XLA too made a fresh
# clone's `.ci/run` slower, 642 s -> 833 s: their tests' processes are not always busy, and a
# second thread then finds a free core.) TORCH_TEST_THREADS=0 leaves PyTorch's default.
TORCH_TEST_THREADS ?= 1
TORCH_THREADS_ENV := $(if $(filter 0,$(TORCH_TEST_THREADS)),,OMP_NUM_THREADS=$(TORCH_TEST_THREADS))

.PHONY: test test-tf test-jax test-torch test-keras-min doctest demo docs lint format bench clean venvs

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) --upgrade pip
	$(PY) -m pip install $(PIP_QUIET) -e ".[tensorflow-cpu,dev,docs]"
	touch $@

$(JAX_VENV)/.keras_reg-installed: setup.cfg pyproject.toml
	test -x $(JAX_VENV)/bin/python || $(PYTHON) -m venv $(JAX_VENV)
	$(JAX_VENV)/bin/python -m pip install $(PIP_QUIET) --upgrade pip
	$(JAX_VENV)/bin/python -m pip install $(PIP_QUIET) -e ".[jax,dev]"
	touch $@

$(TORCH_VENV)/.keras_reg-installed: setup.cfg pyproject.toml
	test -x $(TORCH_VENV)/bin/python || $(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/python -m pip install $(PIP_QUIET) --upgrade pip
	$(TORCH_VENV)/bin/python -m pip install $(PIP_QUIET) "torch==$(TORCH_VERSION)"
	$(TORCH_VENV)/bin/python -m pip install $(PIP_QUIET) -e ".[dev]"
	touch $@

$(KERAS_MIN_VENV)/.keras_reg-installed: setup.cfg pyproject.toml
	test -x $(KERAS_MIN_VENV)/bin/python || $(PYTHON) -m venv $(KERAS_MIN_VENV)
	$(KERAS_MIN_VENV)/bin/python -m pip install $(PIP_QUIET) --upgrade pip
	$(KERAS_MIN_VENV)/bin/python -m pip install $(PIP_QUIET) -e ".[jax,dev]" "keras==$(KERAS_MIN)"
	touch $@

# The three virtualenvs at once (.ci/run builds them before the linter, which needs .venv only:
# built alone first, it kept the two others waiting a minute).
venvs:
	$(MAKE) --no-print-directory -j3 $(STAMP) $(JAX_VENV)/.keras_reg-installed \
		$(TORCH_VENV)/.keras_reg-installed

# The three suites (and their virtualenvs) at once, whatever -j make was given.
test:
	$(MAKE) --no-print-directory -j3 --output-sync=target test-tf test-jax test-torch doctest docs

# The docstring examples, on every backend (each imports its backend once more: ~20 s apiece).
doctest: $(STAMP) $(JAX_VENV)/.keras_reg-installed $(TORCH_VENV)/.keras_reg-installed
	KERAS_BACKEND=tensorflow $(PY) -m pytest -q --doctest-modules keras_reg
	KERAS_BACKEND=jax $(JAX_VENV)/bin/python -m pytest -q -p no:cacheprovider --doctest-modules keras_reg
	$(TORCH_THREADS_ENV) KERAS_BACKEND=torch $(TORCH_VENV)/bin/python -m pytest -q -p no:cacheprovider --doctest-modules keras_reg

test-tf: $(STAMP)
	KERAS_BACKEND=tensorflow $(PY) -m pytest $(XDIST) --durations=10

test-jax: $(JAX_VENV)/.keras_reg-installed
	KERAS_BACKEND=jax $(JAX_VENV)/bin/python -m pytest -p no:cacheprovider --durations=10

test-torch: $(TORCH_VENV)/.keras_reg-installed
	$(TORCH_THREADS_ENV) KERAS_BACKEND=torch $(TORCH_VENV)/bin/python -m pytest -p no:cacheprovider --durations=10

test-keras-min: $(KERAS_MIN_VENV)/.keras_reg-installed
	KERAS_BACKEND=jax $(KERAS_MIN_VENV)/bin/python -m pytest -p no:cacheprovider

# TensorFlow 2.21 prints a oneDNN notice on import that TF_CPP_MIN_LOG_LEVEL does not hide.
demo: $(STAMP)
	TF_ENABLE_ONEDNN_OPTS=0 $(PY) examples/feature_selection.py

# mkdocstrings reads the docstrings without importing keras_reg. The site's tools live in .venv
# (a virtualenv of their own took one more install of Keras and its dependencies).
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Writes BENCHMARKS.md from what it measured (JAX and PyTorch figures in their virtualenvs).
bench: $(STAMP) $(JAX_VENV)/.keras_reg-installed $(TORCH_VENV)/.keras_reg-installed
	$(PY) -m benchmarks.run --write BENCHMARKS.md

# keras_reg's pruning (Keras 3, .venv) next to TFMOT's on tf_keras (its own virtualenv).
TFMOT_VENV ?= .venv-tfmot
.PHONY: bench-tfmot
$(TFMOT_VENV)/.installed:
	test -x $(TFMOT_VENV)/bin/python || $(PYTHON) -m venv $(TFMOT_VENV)
	$(TFMOT_VENV)/bin/python -m pip install $(PIP_QUIET) --upgrade pip
	$(TFMOT_VENV)/bin/python -m pip install $(PIP_QUIET) "tensorflow-cpu==2.21.*" \
		"tf_keras==2.21.*" "tensorflow-model-optimization==0.8.1" scikit-learn
	touch $@

bench-tfmot: $(STAMP) $(TFMOT_VENV)/.installed
	$(PY) -m benchmarks.tfmot_compare --tfmot-python $(TFMOT_VENV)/bin/python

clean:
	rm -rf $(VENV) $(JAX_VENV) $(TORCH_VENV) $(KERAS_MIN_VENV) $(TFMOT_VENV) .venv-docs \
		build dist *.egg-info demo_output bench_output site strength_path_output
