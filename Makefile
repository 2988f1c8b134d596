# Two commands from a fresh clone:  make demo  (the chat page)  and  make test  (every test).
# For a workshop: make lab (JupyterLab on the kit's environment, offline) and make results
# (run notebooks 01-05 and write them, figures and all, to docs/results).
# Each creates .venv and installs the kit into it when it is missing or older than pyproject.toml.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test axe install lint lab results clean arm-rehearsal mutation

demo: $(STAMP)
	$(PY) -m research demo $(ARGS)

test: $(STAMP) axe
	$(PY) -m pytest $(PYTEST_ARGS)

# axe-core, the accessibility engine the page's browser tests run, from the npm registry with npm,
# pinned to one version and its sha512 (tests/axe.py), into the kit's cache folder: fetched once.
# Without npm the audit tests are skipped with the command to run (in CI, where CI is set, make fails).
axe: $(STAMP)
	@$(PY) tests/axe.py

install: $(STAMP)

# JupyterLab on the kit's own environment, nothing fetched: no extension manager, no news feed,
# no telemetry; it opens notebooks/ and prints the address to open (localhost only).
lab: $(STAMP)
	$(PY) -m jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 \
	  --LabApp.news_url=None --LabApp.extension_manager=readonly $(ARGS)

# The notebooks run top to bottom with their default parameters and written to docs/results
# (about 15 minutes on two cores); RESULTS_ARGS=--full for the long run (see research.paper.render).
results: $(STAMP)
	$(PY) -m research.paper.render $(RESULTS_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src demo tests notebooks
	$(PY) -m ruff format --check src demo tests notebooks

# First the engine: llama-cpp-python compiled with flags that are safe on this CPU (no AMX on
# x86: llama.cpp issue 20824), into the kit's own cache keyed by those flags, since pip's cache
# would hand back a wheel built with other ones (research.llamacpp.flags). Then the kit and the
# rest of its dependencies, which find the engine installed.
$(STAMP): pyproject.toml src/research/llamacpp/flags.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@PYTHONPATH=src $(PY) -m research.llamacpp.flags install
	@echo "Installing the kit and its dependencies into $(VENV) (log: $(VENV)/install.log)."
	@$(PY) -m pip install -e '.[test]' > $(VENV)/install.log 2>&1 \
	  || { echo "Install failed; the last lines of $(VENV)/install.log:"; tail -n 40 $(VENV)/install.log; exit 1; }
	@touch $@

# Mutation testing of the modules that guard safety and scores (scripts/mutation.py): prints each
# module's killed/total, score and target, lists the survivors and writes docs/results/mutation.md.
# MODULES="page.text jsonl" picks some. Minutes on two cores, so not part of make test or CI.
mutation: $(STAMP)
	$(PY) scripts/mutation.py $(MODULES)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache mutants

# The page rehearsed on ARM (root): an arm64 Debian under qemu, the engine cross-compiled with
# the phone's flags, one answer through research chat and one through the page; the record goes
# to docs/results/arm_rehearsal.{json,md}. About 30-40 minutes the first time (research.measure.arm).
arm-rehearsal: $(STAMP)
	$(PY) -m research.measure.arm $(ARGS)
