# Two entry points (see README): `make demo` and `make test`.
# Both create .venv on first use; Numba's cache lives in .cache/numba so a
# second run (and CI's test step after its first compile) starts warm.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export NUMBA_CACHE_DIR := $(CURDIR)/.cache/numba
export PYTHONDONTWRITEBYTECODE :=

.PHONY: demo test lint bench clean mosquitto fonts image-test

# $(call apt_install,PACKAGE): install a missing Debian package when we are root
# (a fresh machine), otherwise say what to do and fail.
apt_install = if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
  else echo "$(1) is missing: run 'sudo apt-get install $(1)'" >&2; exit 1; fi

# Debian ships venv and the DejaVu font (used to render slips) as separate packages.
$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
	  $(call apt_install,python3-venv); $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip

fonts:
	@[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || { $(call apt_install,fonts-dejavu-core); }

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

# Tests that need a broker start their own private mosquitto.
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || { $(call apt_install,mosquitto); }

KIOSKS ?= 1

demo: $(VENV)/.installed fonts
	$(BIN)/kesp-sim day --kiosks $(KIOSKS)

test: $(VENV)/.installed-test mosquitto fonts
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

# The kiosk image, slow (not in CI): the arm64 root filesystem built here from
# the locked wheels (qemu-user), booted with systemd-nspawn, its Numba cache
# proven warm for a Pi 4, FVC2002 scores bit for bit against x86, and the
# amd64 image test. KESP_ARM64_ROOTFS=DIR reuses a root filesystem already
# built with images/build-rootfs.sh. Needs root, mmdebstrap, qemu-user-static.
image-test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m slow -v -p no:cacheprovider tests/images tests/provisioning/test_image.py

bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .cache build *.egg-info
