# The two commands of the README: `make up` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install system-packages up test test-embedded test-scale check lint bench lock clean

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found (this project needs Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Re-installs whenever the lock changes. Every package is pinned, torch to its 2.13.0 CPU build.
# The ledger's verification code is the standalone verifier package in verifier/ (what an auditor
# installs alone); the service imports it, installed editable so its code is the checkout's.
$(STAMP): requirements.lock verifier/pyproject.toml | $(PY)
	$(PY) -m pip install --disable-pip-version-check --quiet --upgrade "pip==26.0.1"
	$(PY) -m pip install --disable-pip-version-check --quiet --no-deps -r requirements.lock
	$(PY) -m pip install --disable-pip-version-check --quiet --no-deps --editable ./verifier
	$(PY) -m pip check
	@touch $@

install: $(STAMP)

up: install
	$(PY) -m config.up

# On a fresh machine: the virtualenv from the lock, the two system packages (bin/system-packages),
# the house rules (lint), then the whole suite twice, both passes at once (bin/test-both): on the
# embedded default (SQLite, embedded broker) and in scale mode on a real PostgreSQL and Redis that
# bin/scale-services starts on loopback from the lock's wheels (and stops). test-embedded and
# test-scale run one pass each.
test: install system-packages lint
	PY=$(PY) bin/test-both

system-packages:
	@bin/system-packages

test-embedded: install
	$(PY) -m pytest

test-scale: install
	@echo "== scale mode: PostgreSQL + Redis =="
	eval "$$(bin/scale-services start)" && $(PY) -m pytest; status=$$?; bin/scale-services stop; exit $$status

check: install
	$(PY) manage.py check

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

bench: install
	$(PY) -m bench.startup

# Regenerate the full lock from requirements.in (needs the package registry).
lock: | $(PY)
	$(PY) -m pip install --disable-pip-version-check -r requirements.in
	$(PY) -m pip freeze --all --exclude-editable | grep -v -E '^pip==' \
		| sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/' > requirements.lock

clean:
	rm -rf $(VENV) var .pytest_cache
