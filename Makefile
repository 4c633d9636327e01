# The two quick-start commands: `make run` and `make test`. Both create their venv on demand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= relay.toml
# The real @segment/analytics-node for tests/clients, installed from package-lock.json.
NODE_CLIENTS := tests/clients/node

.PHONY: run test lint bench bench-full clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "relay needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed

# npm ci: exactly the locked versions, into a fresh node_modules; the stamp re-installs when the
# lock file changes.
$(NODE_CLIENTS)/node_modules/.installed: $(NODE_CLIENTS)/package.json $(NODE_CLIENTS)/package-lock.json
	npm ci --prefix $(NODE_CLIENTS) --no-audit --no-fund
	@touch $@

run: $(VENV)/.installed
	$(BIN)/relay migrate --config $(CONFIG)
	$(BIN)/relay serve --config $(CONFIG)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check relay tests bench
	$(BIN)/ruff format --check relay tests bench
	$(BIN)/mypy

test: lint $(NODE_CLIENTS)/node_modules/.installed
	$(BIN)/pytest

# Ingest benchmark against a bare aiohttp ceiling (needs wrk; installs it with apt if missing).
bench: $(VENV)/.installed
	@command -v wrk >/dev/null || (apt-get install -y -q wrk >/dev/null || sudo apt-get install -y -q wrk)
	$(BIN)/python -m bench.run

# Adds the run on a database pre-filled with 10 million events (takes several minutes).
bench-full: $(VENV)/.installed
	@command -v wrk >/dev/null || (apt-get install -y -q wrk >/dev/null || sudo apt-get install -y -q wrk)
	$(BIN)/python -m bench.run --prefilled 10000000

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache $(NODE_CLIENTS)/node_modules
