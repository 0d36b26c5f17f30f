# The two commands (README): `make demo` and `make test`. Each first installs whatever is missing
# (scripts/setup.sh: Debian packages, then the venv at .venv from requirements.txt) and is a fast no-op
# when everything is there.
#
#   make demo [ARGS="--max_minutes=5"]   synthetic corpus -> omni-sparsity training -> TFLite tiers, in runs/demo
#   make test                            ruff, then pytest on tests/, then `bazel test` (bazel_smoke subset)
#   make lint                            ruff check only
#   make bazel-test                      `bazel test` only

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# Debian packages (scripts/setup.sh installs the missing ones). espeak-ng speaks the synthetic corpus; flac and
# sox are command-line tools for the FLAC audio (the Python code reads it with soundfile). The sentence list is
# embedded (omni_tf/data/resources), so no fortunes package. bazel-bootstrap (Bazel 4.2.3): `make test` only.
APT_PACKAGES := espeak-ng flac sox
APT_TEST_PACKAGES := bazel-bootstrap

LINT_DIRS := omni_tf recipes tflite_export tests benchmarks scripts
# `make test` builds every Bazel target and runs the tests tagged bazel_smoke (list in tests/BUILD) after
# pytest has run them all; `make test BAZEL_FLAGS=` (or `bazel test //...`) runs every test under Bazel.
BAZEL_TARGETS ?= //...
BAZEL_FLAGS ?= --test_tag_filters=bazel_smoke
DEMO_OUT ?= runs/demo
ARGS ?=

.PHONY: help setup setup-test demo test lint pytest bazel-test

help:
	@sed -n '1,9p' Makefile | sed 's/^# \{0,1\}//'

setup:
	@PYTHON="$(PYTHON)" scripts/setup.sh $(APT_PACKAGES)

setup-test:
	@PYTHON="$(PYTHON)" scripts/setup.sh $(APT_PACKAGES) $(APT_TEST_PACKAGES)

demo: setup
	$(PY) -m recipes.synthetic.run_demo --out=$(DEMO_OUT) $(ARGS)

# Lint first so a style error fails fast; then the whole pytest suite; then Bazel.
test: setup-test
	@$(MAKE) --no-print-directory lint pytest bazel-test SKIP_SETUP=1

lint: $(if $(SKIP_SETUP),,setup)
	$(VENV)/bin/ruff check $(LINT_DIRS)

# -p no:cacheprovider and no bytecode: the tree may be read-only. No -n: two cores.
pytest: $(if $(SKIP_SETUP),,setup)
	PYTHONDONTWRITEBYTECODE=1 $(PY) -m pytest -q -p no:cacheprovider tests

bazel-test: $(if $(SKIP_SETUP),,setup-test)
	bazel test $(BAZEL_FLAGS) $(BAZEL_TARGETS)
