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

.PHONY: demo test install lint lab results clean

demo: $(STAMP)
	$(PY) -m research demo $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

install: $(STAMP)

# JupyterLab on the kit's own environment, nothing fetched: no extension manager, no news feed,
# no telemetry; it opens notebooks/ and prints the address to open (localhost only).
lab: $(STAMP)
	$(PY) -m jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 \
	  --LabApp.news_url=None --LabApp.extension_manager=readonly $(ARGS)

# The notebooks run top to bottom with their default parameters and written to docs/results
# (about 15 minutes on two cores); RESULTS_ARGS=--full for the long run (see research.results).
results: $(STAMP)
	$(PY) -m research.results $(RESULTS_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src demo tests notebooks
	$(PY) -m ruff format --check src demo tests notebooks

# pip -v prints every compiler step of llama.cpp; show one line in ten of them, keep all in the log.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@echo "Installing the kit into $(VENV) (log: $(VENV)/install.log)."
	@echo "The first install compiles llama.cpp inside llama-cpp-python: about ten minutes on two cores."
	@$(PY) -m pip install -v -e '.[test]' 2>&1 | tee $(VENV)/install.log | awk ' \
	  /^ *\[[0-9]+\/[0-9]+\] / { match($$0, /\[[0-9]+\/[0-9]+\]/); s = substr($$0, RSTART + 1, RLENGTH - 2); \
	    split(s, n, "/"); if (n[1] % 10 == 0 || n[1] == n[2]) { print "  compiling llama.cpp: step " s; fflush() } next } \
	  /^(Collecting|Building wheel|Successfully|ERROR|error:)/ { print "  " $$0; fflush() }' \
	  || { echo "Install failed; the last lines of $(VENV)/install.log:"; tail -n 40 $(VENV)/install.log; exit 1; }
	@touch $@

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
