# azure-firstboot — build, test and demo entry points.
# `make check` is the whole test suite (CI runs it through .ci/run);
# `make demo` runs the three units against the fabric emulator in a scratch root.

PY        ?= python3
VERSION   := $(shell sed -n 's/^version *= *//p' setup.cfg)
export PYTHONDONTWRITEBYTECODE = 1
# Packaging tools must see Debian's python3, not a pyenv/venv one.
SYSPATH   := /usr/sbin:/usr/bin:/sbin:/bin
CACHE_DIR ?= /var/cache/azure-firstboot-test
export CACHE_DIR

.PHONY: all check test vermin check-version demo bench \
        deb deb-stdeb rpm lint pkg-check vm-check vm-test clean

all: test

## ---- tests -------------------------------------------------------------
check: check-version vermin test pkg-check vm-check

test:
	PYTHONPATH=src $(PY) -m pytest -q -p no:cacheprovider tests/unit

vermin:
	$(PY) -m vermin -q --no-tips --violations -t=3.6- src

check-version:
	@$(PY) tests/check_version.py

## ---- the main job -------------------------------------------------------
demo:
	PYTHONPATH=src $(PY) tests/demo.py

bench:
	@echo "bench: not yet implemented" && exit 1

## ---- packaging (owned by debian/, rpm/, systemd/) ------------------------
deb:
	@echo "deb: not yet implemented" && exit 1

deb-stdeb:
	@echo "deb-stdeb: not yet implemented" && exit 1

rpm:
	@echo "rpm: not yet implemented" && exit 1

lint:
	@echo "lint: not yet implemented" && exit 1

pkg-check:
	@echo "pkg-check: not yet wired"

## ---- VM harness (tests/vm) ----------------------------------------------
vm-check:
	@echo "vm-check: not yet wired"

vm-test:
	@echo "vm-test: not yet implemented" && exit 1

clean:
	rm -rf build dist rpmbuild deb_dist src/*.egg-info .pytest_cache
