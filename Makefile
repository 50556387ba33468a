# Two commands matter: `make serve` and `make test`. Both create .venv and install what is
# missing first, from uv.lock (exactly what CI tested); stamps make a second run skip them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
# uv sync: the locked set, failing loudly if uv.lock no longer matches pyproject.toml;
# --inexact keeps what another target added (the embedded backend, say).
SYNC := $(UV) sync --locked --inexact --python $(PY)
# The native llama.cpp build crashes on some CPUs (AMX path): build portable AVX2.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
# Debian packages the tests drive: a real browser, a real Redis, a real proxy and a real
# PostgreSQL (the chat threads on a shared database).
SYSTEM_PACKAGES := chromium redis-server nginx postgresql

.PHONY: install install-dev install-local install-system install-js serve test lint lock compat compat-lowest compat-highest notebook soak bench clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.stamp-app: pyproject.toml uv.lock | $(UV)
	$(SYNC) --extra ui
	touch $@

$(VENV)/.stamp-dev: pyproject.toml uv.lock $(VENV)/.stamp-app
	$(SYNC) --extra ui --extra dev
	touch $@

# llama-cpp-python compiles from source (3 to 6.5 minutes on 2 cores; uv caches the wheel).
$(VENV)/.stamp-local: pyproject.toml uv.lock | $(UV)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(SYNC) --extra ui --extra local
	touch $@

$(VENV)/.stamp-system:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing) >/dev/null \
	      || echo "could not install$$missing: the tests that need them will skip"; \
	  else echo "no root/apt-get: tests needing$$missing will skip"; fi; \
	fi
	touch $@

# The JavaScript clients the tests drive (openai, the AI SDK, esbuild for the browser
# page), exactly as tests/js/package-lock.json pins them; without node the tests skip.
JS := tests/js
$(JS)/node_modules/.stamp: $(JS)/package.json $(JS)/package-lock.json
	@if command -v npm >/dev/null; then \
	  cd $(JS) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.stamp; \
	else echo "no node/npm: the JavaScript client tests will skip"; fi

install: $(VENV)/.stamp-app
install-local: $(VENV)/.stamp-local
install-dev: $(VENV)/.stamp-dev $(VENV)/.stamp-local $(VENV)/.stamp-system
install-system: $(VENV)/.stamp-system
install-js: $(JS)/node_modules/.stamp

# The embedded model is built only when it will serve (no MARITACA_API_KEY, or
# MARITACA_BACKEND=local: `backend` says local, or none while it is not installed);
# host and port come from MARITACA_CHAINS_HOST/_PORT or .env.
serve: install
	@if [ "$$($(PY) -m maritaca_chains backend 2>/dev/null)" != maritaca ]; then \
	  $(MAKE) --no-print-directory install-local; fi
	$(PY) server.py

test: install-dev install-js
	$(PY) -m ruff check maritaca maritaca_chains chains server.py tests bench
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory compat

lint: install-dev
	$(PY) -m ruff check maritaca maritaca_chains chains server.py tests bench
	$(PY) -m mypy

# After changing dependencies in pyproject.toml: re-resolve and commit uv.lock.
lock: | $(UV)
	$(UV) lock

# Are pyproject.toml's ranges true? The project's wheel (no extras) in two venvs resolved
# fresh from PyPI, not from uv.lock: every direct dependency at the lowest version its range
# allows, then everything at the highest; the smoke set in tests/compat runs in each.
compat: compat-lowest compat-highest

compat-lowest: RESOLUTION := lowest-direct
compat-highest: RESOLUTION := highest
compat-lowest compat-highest: | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) .venv-$@
	$(UV) pip compile --quiet --no-header --resolution $(RESOLUTION) \
	  --python .venv-$@/bin/python pyproject.toml tests/compat/requirements.in \
	  -o .venv-$@/requirements.txt
	$(UV) pip sync --quiet --python .venv-$@/bin/python .venv-$@/requirements.txt
	$(UV) pip install --quiet --no-deps --reinstall-package maritaca-chains \
	  --python .venv-$@/bin/python .
	.venv-$@/bin/pytest tests/compat

notebook: install-dev
	$(VENV)/bin/jupyter lab notebooks/

soak: install-dev
	$(PY) -m pytest -m slow --soak $(PYTEST_ARGS)

bench: install-dev
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .venv-compat-lowest .venv-compat-highest .pytest_cache .mypy_cache .ruff_cache
