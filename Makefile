# Two entry points (see README): `make demo` and `make test`.
# Both create .venv on first use; Numba's cache lives in .cache/numba so a
# second run (and CI's test step after its first compile) starts warm.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export NUMBA_CACHE_DIR := $(CURDIR)/.cache/numba
export PYTHONDONTWRITEBYTECODE :=

.PHONY: demo test lint bench clean mosquitto

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

# Tests that need a broker start their own private mosquitto; install it when
# missing and we are root (a fresh Debian machine), otherwise say what to do.
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	  else echo "mosquitto is missing: run 'sudo apt-get install mosquitto'" >&2; exit 1; fi; }

KIOSKS ?= 1

demo: $(VENV)/.installed
	$(BIN)/kesp-sim day --kiosks $(KIOSKS)

test: $(VENV)/.installed-test mosquitto
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .cache build *.egg-info
