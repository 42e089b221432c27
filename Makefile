# make demo: set up .venv from nothing and run the whole pipeline offline on the embedded data.
# make test: set up .venv, lint (ruff, mypy) and run the test suite (what CI runs, through .ci/run).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench wheel clean-venv

setup: $(VENV)/.installed

# One install for the checkout: the runtime (editable) plus the train, export and dev dependency
# groups (pyproject.toml's [dependency-groups], PEP 735: checkout-only, so not in the wheel's
# metadata). pip reads groups from 25.1 on; a new venv may come with an older one.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=25.1"
	$(PY) -m pip install -q -e . --group train --group export --group dev
	touch $@

demo: setup
	$(PY) -m demo $(ARGS)

test: setup lint
	$(PY) -m pytest $(ARGS)

# pyflakes-level ruff over the tree and mypy over the wheel's package, train and export
# (settings in pyproject.toml).
lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy edge_infer train export

# The benchmark on this machine (ResNet34, random weights): results in benchmarks/results/<cpu>-<isa>/.
# Run it on a quiet machine; it takes 3-30 minutes depending on the CPU.
bench: setup
	$(PY) -m benchmarks --random-weights $(ARGS)

wheel:
	$(PYTHON) -m pip wheel . --no-deps -w dist

clean-venv:
	rm -rf $(VENV)
