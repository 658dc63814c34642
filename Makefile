# One-command set-up for a fresh clone: a local .venv with the pinned CPU torch
# installed first (an unpinned torch may pull a multi-GB CUDA build).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test lint docs clean

# Bytecode is written once, into the environment (.venv/pycache, not beside the sources), also where the shell sets
# PYTHONDONTWRITEBYTECODE: without it every Python process the test-suite starts (its workers, the notebook kernels,
# the scripts) compiled torch's, JAX's and Sphinx's modules again, about 5 s each (import 8.9 s from source, 3.6 s
# from bytecode), a minute of a fresh clone's `make test`.
export PYTHONDONTWRITEBYTECODE :=
export PYTHONPYCACHEPREFIX := $(abspath $(VENV))/pycache

# --no-compile: Python compiles a module's bytecode when it is first imported (above), so compiling all of torch's and
# JAX's at install time (most of the install's minute) buys nothing.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile "$(TORCH_PIN)"
	$(PY) -m pip install -q --no-compile -e ".[pyro,numpyro,examples,test,docs]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) examples/pyro/spanning_tree_svi.py

lint: setup
	$(VENV)/bin/ruff check .

# The documentation site; -W: a warning is an error (CI builds it as part of `make test`).
docs: setup
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

# Two pytest-xdist workers, one compute thread each (tests/conftest.py): the suite is mostly JAX compilation and
# small tensor ops, which one thread runs as fast as two. worksteal: a worker that runs out of tests takes queued
# ones from the other, so the long tests do not leave a core idle at the end.
PYTEST_WORKERS ?= 2

# The test-suite builds the docs itself (tests/test_docs.py, sphinx -W) and checks the built pages.
test: lint
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache docs/_build
