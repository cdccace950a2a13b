# blocknas: `make test` and `make search` do all set-up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/default.yaml
N ?= 2
PORT ?= 5000
HOST ?= 127.0.0.1

.PHONY: install data test test-min lint docs search ablate workers dashboard

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest -q -n 2

# The declared minimums of the pure-Python pins (pyproject.toml's optuna, mlflow, timm) on a fast
# subset of tests. A second venv sees the main one's site-packages after its own (a .pth line), so
# torch/torchvision are reused, not installed twice, and pip installs only what the minimums change.
VENV_MIN ?= .venv-min
MIN_PINNED := optuna mlflow timm
MIN_TESTS := tests/search/study/test_search.py tests/blocks/test_blocknet.py tests/search/training/test_reuse.py
PURELIB := import sysconfig; print(sysconfig.get_paths()["purelib"])
MIN_SELECT := end_to_end or over_budget or test_blocknet or logged_to_mlflow or through_timm
test-min: install
	rm -rf $(VENV_MIN)
	python3 -m venv $(VENV_MIN)
	echo "import site; site.addsitedir('$$($(PY) -c '$(PURELIB)')')" > "$$($(VENV_MIN)/bin/python -c '$(PURELIB)')/zz_main_venv.pth"
	$(VENV_MIN)/bin/python -m pip install --quiet -e '.[dev]' $$($(PY) scripts/min_pins.py $(MIN_PINNED))
	$(VENV_MIN)/bin/python scripts/min_pins.py --check $(MIN_PINNED)
	$(VENV_MIN)/bin/python -m pytest -q -p no:cacheprovider $(MIN_TESTS) -k '$(MIN_SELECT)'

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
