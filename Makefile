# Kaohe — `make help` lists every target.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help install run demo test test-fast browser bench chaos lint clean

help: ## List every target with its purpose
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Kaohe needs Python 3.11 (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@# the code runs from this checkout: a .pth puts it on the venv's path (no build step)
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "kaohe.pth").write_text("$(CURDIR)\n")'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned dependencies
	@true

run: $(STAMP) ## Start everything on embedded defaults (SQLite under ./var, local broker); Ctrl-C stops
	$(PY) -m services.kit.run

demo: $(STAMP) ## Send live demo events to a running `make run` (RATE=events/s, default 50) to watch the dashboard move
	$(PY) -m services.demo --live --rate $(or $(RATE),50)

test: $(STAMP) browser ## Run the whole test suite (SQLite, and PostgreSQL where reachable; real broker; chromium), TEST_WORKERS processes (2)
	$(PY) -m pytest -n $(or $(TEST_WORKERS),2)

browser: ## Install Debian's chromium (and CJK fonts) for the dashboard test, where apt-get can
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-noto-cjk >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-noto-cjk >/dev/null 2>&1; }; }; } || \
	  echo "chromium could not be installed: the dashboard browser test will be skipped"

bench: $(STAMP) ## Every figure of issue 7 next to same-run baselines, one table, bench/results.json (QUICK=1: under 2 min)
	$(PY) -m bench $(if $(QUICK),--quick,)

chaos: $(STAMP) ## Every fault-injection scenario in its full form (e.g. 20 SIGKILLs of each worker during 50,000 events); docs/reliability.md
	KAOHE_CHAOS=1 $(PY) -m pytest tests/scoring/test_crash.py tests/test_scale_out.py tests/test_fuzz.py tests/chaos -v

lint: $(STAMP) ## Check the import layering (services never import each other) and ruff's rules (pyproject.toml)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .

clean: ## Remove the virtual environment and local data (./var)
	rm -rf $(VENV) var .pytest_cache
