# warelay — `make demo` to try it, `make test` to check it. Both set up everything they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install seed-clients demo test lint typecheck unit bench clean lock

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The seeds' Node.js clients the tests run against warelay (axios, tsx), installed from their lock file.
NODE_CLIENTS := tests/seed_clients
NODE_STAMP := $(NODE_CLIENTS)/node_modules/.installed

seed-clients: $(NODE_STAMP)

$(NODE_STAMP): $(NODE_CLIENTS)/package.json $(NODE_CLIENTS)/package-lock.json
	cd $(NODE_CLIENTS) && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

demo: install
	$(BIN)/warelay demo

lint: install
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)

typecheck: install
	$(BIN)/mypy

# The suite runs against SQLite and PostgreSQL: scripts/with-postgres.sh uses TEST_DATABASE_URL when set,
# otherwise installs PostgreSQL (Debian packages) if missing and starts a throwaway cluster on loopback.
unit: install seed-clients
	WARELAY_REQUIRE_POSTGRES=1 scripts/with-postgres.sh $(BIN)/pytest

test: lint typecheck unit

# The message path under load, the agent path one turn at a time, and knowledge retrieval; each writes
# bench/results/*.json.
bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/agent_path.py
	$(BIN)/python bench/retrieval.py

# Re-pin dependencies after changing pyproject.toml (run in a fresh venv with network access).
lock:
	$(BIN)/python -m pip freeze --all --exclude-editable --disable-pip-version-check | grep -v -E "^(warelay|pip)==" > requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache $(NODE_CLIENTS)/node_modules
