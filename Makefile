# blocknas: `make test` and `make search` do all set-up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/default.yaml
N ?= 2
PORT ?= 5000
HOST ?= 127.0.0.1

.PHONY: install data test lint docs search ablate workers dashboard

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest -q -n 2

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The config's dataset, if it is in none of the standard places: Debian's package via apt-get
# when root, else torchvision's download (short connect timeout). Says which it did.
data: install
	$(PY) scripts/get_data.py --config $(CONFIG)

# The docs site (mkdocs.yml, docs/): reference pages generated from the code; a broken link fails.
docs: install
	$(VENV)/bin/mkdocs build --strict -d site

search: data
	$(PY) scripts/search.py --config $(CONFIG)

ablate: install
	$(PY) scripts/get_data.py --config $(or $(ABLATION),configs/ablations/seed_blocks.yaml)
	$(PY) scripts/ablate.py --config $(or $(ABLATION),configs/ablations/seed_blocks.yaml)

workers: data
	$(VENV)/bin/blocknas workers -n $(N) --config $(CONFIG)

dashboard: install
	$(VENV)/bin/blocknas dashboard --config $(CONFIG) --port $(PORT) --host $(HOST)
