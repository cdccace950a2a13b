# blocknas: `make test` and `make search` do all set-up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/default.yaml
N ?= 2
PORT ?= 5000
HOST ?= 127.0.0.1

.PHONY: install test lint search ablate workers dashboard

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

search: install
	$(PY) scripts/search.py --config $(CONFIG)

ablate: install
	$(PY) scripts/ablate.py --config $(or $(ABLATION),configs/ablations/seed_blocks.yaml)

workers: install
	$(VENV)/bin/blocknas workers -n $(N) --config $(CONFIG)

dashboard: install
	$(VENV)/bin/blocknas dashboard --config $(CONFIG) --port $(PORT) --host $(HOST)
