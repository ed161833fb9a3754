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

.PHONY: all check test vermin check-version demo bench bench-smoke \
        sdist deb deb-stdeb rpm lint pkg-check vm-check vm-test clean

all: test

## ---- tests -------------------------------------------------------------
check: check-version vermin test pkg-check vm-check bench-smoke

test:
	PYTHONPATH=src $(PY) -m pytest -q -p no:cacheprovider tests/unit

vermin:
	vermin -q --no-tips --violations -t=3.6- --eval-annotations src && echo "vermin: src/ runs on Python 3.6"

check-version:
	@$(PY) tests/check_version.py

## ---- the main job -------------------------------------------------------
demo:
	PYTHONPATH=src tests/netns-run $(PY) tests/demo.py

# Side-by-side boot -> first SSH login as the admin and boot -> Ready (ours, the seed's
# sample, waagent, cloud-init, + ours-nopoll: ours without the SSH polling, the control
# that the polling does not slow the guest; 5 interleaved boots each under QEMU/TCG,
# ~30 min) + host micro-benchmark: writes bench/results.json,
# prints the table and rewrites the generated table in docs/benchmarks.md (bench/run.py).
BENCH_RUNS     ?= 5
BENCH_VARIANTS ?= ours,sample,waagent,cloud-init,ours-nopoll
bench: deb
	$(PY) bench/run.py --runs $(BENCH_RUNS) --variants $(BENCH_VARIANTS) --docs

# One boot of ours + one micro run; checks every figure is measured (for make check).
bench-smoke: deb
	$(PY) bench/run.py --smoke

## ---- packaging (owned by debian/, rpm/, systemd/) ------------------------
# Every build runs on a staged copy (tests/pkg/stage.sh: the checkout as git sees
# it) under build/, so nothing is written into the checkout or its parent.
PKG       := azure-firstboot
# Reproducible builds: all timestamps come from the last commit unless set.
# (evaluated once: others may commit while a build runs)
ifeq ($(origin SOURCE_DATE_EPOCH),undefined)
SOURCE_DATE_EPOCH := $(shell git log -1 --format=%ct 2>/dev/null || echo 1)
endif
export SOURCE_DATE_EPOCH
PKGENV    := env PATH=$(SYSPATH) LC_ALL=C.UTF-8 TZ=UTC
SDIST     := dist/$(PKG)-$(VERSION).tar.gz
DEB       := dist/$(PKG)_$(VERSION)_all.deb
RPM       := dist/$(PKG)-$(VERSION)-1.noarch.rpm
UNITS     := $(sort $(wildcard systemd/*.service))
# Debian's rpm lacks the systemd/python macros: load the shim only there.
RPM_HOST_ARGS = $(if $(shell rpm --eval '%{?_unitdir}' 2>/dev/null),,--nodeps --load rpm/macros.debian-host)
RPM_REPRO = --define "use_source_date_epoch_as_buildtime 1" \
            --define "clamp_mtime_to_source_date_epoch 1" --define "_buildhost reproducible"

# STAGE=no reuses the existing $(SDIST) (tests/pkg/repro.sh rebuilds from it).
STAGE     ?= yes
sdist:
	$(if $(filter no,$(STAGE)),test -f $(SDIST),tests/pkg/stage.sh $(SDIST) $(PKG)-$(VERSION))

deb: sdist
	rm -rf build/deb && mkdir -p build/deb
	tar -C build/deb -xzf $(SDIST)
	cd build/deb/$(PKG)-$(VERSION) && $(PKGENV) dpkg-buildpackage -us -uc >../build.log 2>&1 \
	    || { tail -30 ../build.log; exit 1; }
	cp build/deb/$(PKG)_$(VERSION)_all.deb $(DEB)
	cp build/deb/$(PKG)_$(VERSION).dsc build/deb/$(PKG)_$(VERSION).tar.xz dist/
	@echo "built $(DEB)"

deb-stdeb: sdist
	rm -rf build/stdeb dist/stdeb && mkdir -p build/stdeb dist/stdeb
	tar -C build/stdeb -xzf $(SDIST)
	cd build/stdeb/$(PKG)-$(VERSION) && $(PKGENV) python3 setup.py --command-packages=stdeb.command \
	    sdist_dsc --compat 13 bdist_deb >../build.log 2>&1 || { tail -30 ../build.log; exit 1; }
	cp build/stdeb/$(PKG)-$(VERSION)/deb_dist/*.deb dist/stdeb/
	@echo "built $$(ls dist/stdeb/*.deb)"

rpm: sdist
	rm -rf build/rpmbuild && mkdir -p build/rpmbuild
	$(PKGENV) rpmbuild -bb $(RPM_HOST_ARGS) $(RPM_REPRO) --define "_topdir $(CURDIR)/build/rpmbuild" \
	    --define "_sourcedir $(CURDIR)/dist" rpm/$(PKG).spec >build/rpm-build.log 2>&1 \
	    || { tail -30 build/rpm-build.log; exit 1; }
	@# %{?dist} may be set (Fedora/RHEL build hosts): take the one file rpmbuild made
	set -- build/rpmbuild/RPMS/noarch/$(PKG)-$(VERSION)-1*.noarch.rpm; \
	    [ $$# -eq 1 ] && [ -f "$$1" ] || { echo "rpm: expected one built package, found: $$*"; exit 1; }; \
	    cp "$$1" $(RPM)
	@echo "built $(RPM)"

# lintian/rpmlint on the built packages, systemd-analyze verify (must print
# nothing) and the security exposure of each unit, printed for every unit; one gate
# for all of them (the user unit too: it reads the provisioning medium without
# mounting it, so it needs neither CAP_SYS_ADMIN nor @mount).
# The resource-disk unit's gate is its own: it mounts the resource disk and a swap
# file for the whole system, so it runs as real root with CAP_SYS_ADMIN and no mount
# namespace (ProtectSystem=, PrivateTmp=, PrivateDevices=, ProtectKernel*= would each
# keep its mount private), writes sd/blkext block devices (mkfs); no network at all.
SECURITY_GATE = 2.5
SECURITY_GATE_RESOURCE_DISK = 4.0
lint:
	@test -f $(DEB) -a -f $(RPM) || { echo "lint: run 'make deb rpm' first"; exit 1; }
	$(PKGENV) lintian --fail-on error,warning --tag-display-limit 0 $(DEB) dist/$(PKG)_$(VERSION).dsc
	$(PKGENV) rpmlint -c rpm/rpmlint.toml -r rpm/$(PKG).rpmlintrc rpm/$(PKG).spec $(RPM)
	@# verify the installed units in a root holding the .deb plus the host's
	@# systemd units: ExecStart= and Documentation=man: are checked too.
	@rm -rf build/lint-root && mkdir -p build/lint-root && dpkg-deb -x $(DEB) build/lint-root
	@cp -an /lib/systemd/system/. build/lint-root/lib/systemd/system/
	@# ssh-keygen comes with any image that has sshd (the ssh-keygen unit's ExecStart)
	@install -D -m 0755 /dev/null build/lint-root/usr/bin/ssh-keygen
	@out=$$(MANPATH=$(CURDIR)/build/lint-root/usr/share/man $(PKGENV) systemd-analyze verify \
	    --root=$(CURDIR)/build/lint-root $(addprefix $(CURDIR)/build/lint-root/lib/,$(UNITS)) 2>&1); \
	  if [ -n "$$out" ]; then echo "$$out"; echo "systemd-analyze verify: not silent"; exit 1; fi; \
	  echo "systemd-analyze verify: clean"
	@fail=0; for u in $(UNITS); do \
	  score=$$($(PKGENV) systemd-analyze security --offline=true $$u 2>&1 | sed -n 's/.*Overall exposure level for \([^:]*\): \([0-9.]*\).*/\2/p'); \
	  gate=$(SECURITY_GATE); case $$u in *-resource-disk.service) gate=$(SECURITY_GATE_RESOURCE_DISK);; esac; \
	  echo "security $$(basename $$u): $$score (gate $$gate)"; \
	  [ -n "$$score" ] && awk "BEGIN{exit !($$score <= $$gate)}" || fail=1; \
	done; [ $$fail = 0 ] || { echo "security: exposure above the gate"; exit 1; }

# Everything the packaging promises, in one target (called by "make check").
pkg-check: deb deb-stdeb rpm lint
	tests/pkg/repro.sh $(SDIST) -- $(DEB) $(RPM) dist/stdeb/$(PKG)_$(VERSION)-1_all.deb
	$(PY) -m pytest -q -p no:cacheprovider tests/pkg

## ---- VM harness (tests/vm) ----------------------------------------------
# Scenario matrix: real QEMU/TCG boots of a Debian 12 image with our .deb (tests/vm/vmcheck.py).
vm-check: deb
	$(PY) tests/vm/vmcheck.py --deb $(DEB)

# Boot your own image against the fabric emulator:
#   make vm-test IMAGE=disk.qcow2 [KERNEL=vmlinuz INITRD=initrd.img APPEND='root=/dev/vda1 console=ttyS0'] [VMTEST_ARGS=--reboot]
vm-test:
	@test -n "$(IMAGE)" || { echo "usage: make vm-test IMAGE=disk.(qcow2|raw|vhd) [KERNEL=... INITRD=... APPEND=...] [VMTEST_ARGS='--reboot ...']"; exit 2; }
	$(PY) tests/vm/vmtest.py --image "$(IMAGE)" $(if $(KERNEL),--kernel "$(KERNEL)") \
	    $(if $(INITRD),--initrd "$(INITRD)") $(if $(APPEND),--append "$(APPEND)") $(VMTEST_ARGS)

clean:
	rm -rf build dist rpmbuild deb_dist src/*.egg-info .pytest_cache
