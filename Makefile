# dashbridge — everything a fresh Debian/Ubuntu machine needs, from two commands:
#   make demo    the headline story on the simulator
#   make test    the whole suite
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the project needs: a real dbus-daemon for every test, busctl for debugging,
# systemd-analyze for the unit checks, ofonod for the real-oFono tier, chromium for the virtual
# head unit's tests (tests/hmi: headless, driven over the DevTools protocol); bluetoothd and a C
# compiler for the real-bluetoothd tier (tests/realbluez: its LD_PRELOAD shim is built from C).
DEB_PACKAGES := dbus-daemon dbus-bin systemd ofono chromium bluez gcc libc6-dev
DEB_COMMANDS := dbus-daemon busctl systemd-analyze ofonod chromium bluetoothd cc
# (sysdeps looks for each command on the PATH, in /usr/sbin, and in /usr/libexec/bluetooth, where
# Debian installs bluetoothd.)
SHIM := tests/realbluez/libmgmtshim.so

.PHONY: all deps venv sysdeps demo test lint bench clean

all: test

sysdeps:
	@missing=""; \
	for c in $(DEB_COMMANDS); do \
	  command -v $$c >/dev/null 2>&1 || [ -x /usr/sbin/$$c ] || [ -x /usr/libexec/bluetooth/$$c ] || missing="$$missing $$c"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES) >/dev/null; \
	  else \
	    echo "missing:$$missing — install the Debian packages: sudo apt-get install $(DEB_PACKAGES)" >&2; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml sim/pyproject.toml VERSION
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# the daemon (dashbridge) and the simulator (dashbridge-sim, sim/), both from this checkout:
	@# edits take effect at once, and imports are dashbridge.* as in an installed wheel
	$(BIN)/python -m pip install -q -e '.[dev]' -e ./sim --config-settings editable_mode=compat
	@# byte-compile as a package install would (start-up time is measured against this)
	$(BIN)/python -m compileall -q daemon profiles simulator dashbridge >/dev/null
	@touch $(STAMP)

venv: $(STAMP)
deps: sysdeps venv

demo: deps
	$(BIN)/dashbridge-sim demo

# The real-bluetoothd tier's shim (tests build it too when it is missing or older than shim.c).
$(SHIM): tests/realbluez/shim.c | sysdeps
	cc -shared -fPIC -O2 -Wall -o $@ $< -ldl

test: deps $(SHIM)
	$(BIN)/python -m pytest -q tests

lint: venv
	$(BIN)/ruff check dashbridge/__init__.py daemon profiles simulator tests bench
	$(BIN)/mypy -p dashbridge
	$(BIN)/lint-imports

bench: deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
