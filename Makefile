# Two entry points (see README): `make demo` and `make test`.
# Both create .venv on first use; Numba's cache lives in .cache/numba so a
# second run (and CI's test step after its first compile) starts warm.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export NUMBA_CACHE_DIR := $(CURDIR)/.cache/numba
export PYTHONDONTWRITEBYTECODE :=

.PHONY: demo test lint bench clean mosquitto fonts

# Debian ships venv and the DejaVu font (used to render slips) as separate
# packages; install them when missing and we are root, otherwise say what to do.
$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	  else echo "python3-venv is missing: run 'sudo apt-get install python3-venv'" >&2; exit 1; fi; \
	  $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip

fonts:
	@[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >/dev/null; \
	  else echo "fonts-dejavu-core is missing: run 'sudo apt-get install fonts-dejavu-core'" >&2; exit 1; fi; }

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

demo: $(VENV)/.installed fonts
	$(BIN)/kesp-sim day --kiosks $(KIOSKS)

test: $(VENV)/.installed-test mosquitto fonts
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .cache build *.egg-info
