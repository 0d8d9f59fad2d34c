# Fastpaca: `make serve` starts one node, `make test` runs every suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= $(or $(FASTPACA_HOST),127.0.0.1)
PORT ?= $(or $(FASTPACA_PORT),4000)
DATA_DIR ?= $(or $(FASTPACA_DATA_DIR),./data)

.PHONY: install serve test lint typecheck pytest bench clean

install: $(VENV)/.installed

$(VENV)/.installed: server/pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -e server
	$(BIN)/python -m fastpaca_server.tokens --check
	touch $@

serve: install
	$(BIN)/fastpaca-server --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

lint: install
	$(BIN)/ruff check server tests bench examples
	$(BIN)/ruff format --check server tests bench examples

typecheck: install
	$(BIN)/mypy --strict server/src

pytest: install
	$(BIN)/pytest

test: lint typecheck pytest

bench: install
	$(BIN)/python bench/append_latency.py

clean:
	rm -rf $(VENV)
