# The two commands a newcomer needs: `make demo` and `make test`. Both start from nothing:
# they create the virtualenv, install the package, and (for tests) the system packages.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
APT    := $(shell command -v apt-get 2>/dev/null)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint unit e2e browser bench system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.py
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/wechat-gateway demo

# System packages the end-to-end tests drive for real: a headless Chromium, nginx and Redis.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing="$$missing fonts-noto-cjk fonts-noto-color-emoji"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if [ -n "$(APT)" ]; then \
	    echo "installing:$$missing"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing"; exit 1; fi; \
	fi

lint: $(VENV)/.installed-test
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/mypy

# The test lanes, as laid out under tests/: unit (in-process, seconds), e2e (real processes
# and sockets: gunicorn, upstreams, nginx) and browser (a headless Chromium).
unit: $(VENV)/.installed-test
	$(BIN)/pytest -q tests/unit

e2e: system-deps $(VENV)/.installed-test
	$(BIN)/pytest -q tests/e2e

browser: system-deps $(VENV)/.installed-test
	$(BIN)/pytest -q tests/browser

# Lint and every lane: the fast one first, then the rest of tests/ in one run.
test: system-deps $(VENV)/.installed-test lint unit
	$(BIN)/pytest -q --ignore=tests/unit

bench: $(VENV)/.installed-test
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
