# Fastpaca: `make serve` starts one node, `make test` runs every suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= $(or $(FASTPACA_HOST),127.0.0.1)
PORT ?= $(or $(FASTPACA_PORT),4000)
DATA_DIR ?= $(or $(FASTPACA_DATA_DIR),./data)

.PHONY: install browser serve test lint typecheck pytest tstest bench bench-quick clean

TS := sdk-typescript

install: $(VENV)/.installed $(TS)/node_modules/.installed browser

# The inspector's browser tests (tests/ui) drive Debian's chromium through its
# chromedriver: installed here with apt when run as root, or the command to run is said.
BROWSER_PACKAGES := chromium chromium-driver

browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing $(BROWSER_PACKAGES) with apt-get (for tests/ui)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null \
			|| { apt-get update -q >/dev/null && apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null; }; \
	else \
		echo "tests/ui needs chromium and chromedriver: sudo apt-get install $(BROWSER_PACKAGES)" >&2; \
		exit 1; \
	fi

PACKAGES := sdk-python integrations/openai integrations/anthropic integrations/langchain
PACKAGE_SOURCES := sdk-python/src/fastpaca integrations/openai/src/fastpaca_openai \
	integrations/anthropic/src/fastpaca_anthropic integrations/langchain/src/langchain_fastpaca

$(VENV)/.installed: server/pyproject.toml requirements-dev.txt $(addsuffix /pyproject.toml,$(PACKAGES))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -e server $(addprefix -e ,$(PACKAGES))
	$(BIN)/python -m fastpaca_server.tokens --check
	touch $@

# The TypeScript SDK: npm ci (exact lock file), then generate the wire types from
# spec/openapi.yaml, type-check (tsc --strict) and build dist/.
$(TS)/node_modules/.installed: $(TS)/package.json $(TS)/package-lock.json spec/openapi.yaml
	cd $(TS) && npm ci --no-audit --no-fund --loglevel=error && npm run build
	touch $@

serve: $(VENV)/.installed
	$(BIN)/fastpaca-server --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

lint: install
	$(BIN)/ruff check server tests bench examples $(PACKAGES)
	$(BIN)/ruff format --check server tests bench examples $(PACKAGES)

typecheck: install
	$(BIN)/mypy --strict server/src
	$(BIN)/mypy --strict $(PACKAGE_SOURCES)

# Two workers, a test file each at a time (--dist loadfile): most tests wait on real
# server processes; on a 2-core machine the suite takes about two thirds of the time.
pytest: install
	$(BIN)/pytest -n 2 --dist loadfile

# vitest starts its own server from .venv (so it runs after `install`).
tstest: install
	cd $(TS) && npm test

test: lint typecheck pytest tstest

# Benchmarks, never part of `make test` (bench/README.md, docs/benchmarks.md): every figure
# beside its baselines; writes bench/results/latest.json. The harness's own packages (the
# LangChain + PostgreSQL baseline, charts) are installed here, not by `make install`; wrk is
# the system's (bench/run.py installs the Debian package when run as root, or says how).
BENCH_INSTALLED := $(VENV)/.bench-installed

$(BENCH_INSTALLED): bench/requirements.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r bench/requirements.txt
	touch $@

bench: install $(BENCH_INSTALLED)
	$(BIN)/python bench/run.py

bench-quick: install $(BENCH_INSTALLED)
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) $(TS)/node_modules $(TS)/dist
