"""Fixtures for the packaging tests (run by "make pkg-check" after the builds).

The Debian 12 chroot with waagent comes from tests/pkg/mkchroot.sh (cached as a
tarball under $CACHE_DIR, keyed by the script's hash); every test unpacks its own
copy, so the cache stays pristine."""

import os
import shutil
import subprocess
import sys

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSPATH = "/usr/sbin:/usr/bin:/sbin:/bin"
PKG = "azure-firstboot"
# The four units that run the agent (ExecStart=/usr/bin/azure-firstboot <step>) ...
AGENT_UNITS = ("azure-firstboot-network-wait.service", "azure-firstboot-hostname.service",
               "azure-firstboot-user.service", "azure-firstboot-report-ready.service")
# ... the one that regenerates SSH host keys removed by "deprovision" (no Python) ...
SSH_KEYGEN_UNIT = "azure-firstboot-ssh-keygen.service"
# ... and the per-boot resource disk unit (agent command "resource-disk", not a step).
RESOURCE_DISK_UNIT = "azure-firstboot-resource-disk.service"
# Every unit the packages ship (six), enable and must never start.
UNITS = AGENT_UNITS + (SSH_KEYGEN_UNIT, RESOURCE_DISK_UNIT)
# [Install] WantedBy= of each unit (network-wait is part of network-online.target)
WANTED_BY = {"azure-firstboot-network-wait.service": "network-online.target"}


def wants_link(unit):
    """Where enabling ``unit`` puts its symlink."""
    return "/etc/systemd/system/%s.wants/%s" % (WANTED_BY.get(unit, "multi-user.target"), unit)
sys.path.insert(0, os.path.join(TOP, "src"))


def version():
    with open(os.path.join(TOP, "setup.cfg"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("version"):
                return line.split("=", 1)[1].strip()
    raise AssertionError("no version in setup.cfg")


def run(argv, check=True, **kw):
    """Run argv with Debian's PATH; return CompletedProcess (text)."""
    env = dict(os.environ, PATH=SYSPATH, LC_ALL="C.UTF-8")
    env.pop("PYTHONPATH", None)
    env.update(kw.pop("env", {}))
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, env=env, **kw)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s" % (" ".join(argv), proc.returncode, proc.stdout))
    return proc


def artifact(path):
    full = os.path.join(TOP, path)
    if not os.path.isfile(full):
        pytest.fail("%s missing: run 'make deb rpm' (make pkg-check does)" % path)
    return full


@pytest.fixture(scope="session")
def deb():
    return artifact("dist/%s_%s_all.deb" % (PKG, version()))


@pytest.fixture(scope="session")
def rpm():
    return artifact("dist/%s-%s-1.noarch.rpm" % (PKG, version()))


@pytest.fixture(scope="session")
def chroot_tarball():
    if os.geteuid() != 0:
        pytest.fail("the chroot tests need root (chroot, dpkg inside the chroot)")
    out = run(["bash", os.path.join(TOP, "tests/pkg/mkchroot.sh")], check=False)
    if out.returncode != 0:
        pytest.fail("mkchroot.sh failed:\n" + out.stdout)
    path = out.stdout.strip().splitlines()[-1]
    assert os.path.isfile(path), out.stdout
    return path


# Logs every call. Unit-file operations (enable/disable/preset/is-enabled/...)
# are done by the real systemctl, offline (--root=/; a "--now" is only logged);
# everything that would talk to the running systemd (start, stop, daemon-reload,
# is-active, ...) is only logged and "succeeds".
FAKE_SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >>/var/log/fake-systemctl.log
offline=no root=no
for arg; do
    case "$arg" in
    --root=*) root=yes ;;
    enable|disable|reenable|preset|preset-all|is-enabled|mask|unmask|list-unit-files) offline=yes ;;
    esac
done
[ $offline = yes ] || exit 0
for arg; do
    shift
    [ "$arg" = --now ] || set -- "$@" "$arg"
done
[ $root = yes ] || set -- --root=/ "$@"
exec /usr/bin/systemctl.distrib "$@"
"""


class Chroot(object):
    """A throw-away copy of the cached bookworm+waagent chroot.

    A fake systemctl (dpkg-divert of the real one) logs every call, and
    /run/systemd/system exists, so maintainer scripts behave as on a live VM
    with systemd running: any start/restart they attempt is recorded."""

    def __init__(self, root):
        self.root = root

    def path(self, p):
        return os.path.join(self.root, p.lstrip("/"))

    def sh(self, script, check=True):
        return run(["chroot", self.root, "/bin/sh", "-ec", script], check=check,
                   env={"DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"})

    def systemctl(self, *args, check=True):
        """The host's systemctl working offline on the chroot's files."""
        return run(["systemctl", "--root=" + self.root] + list(args), check=check)

    def fake_systemd(self):
        self.sh("dpkg-divert --quiet --local --rename --add /usr/bin/systemctl")
        with open(self.path("/usr/bin/systemctl"), "w") as f:
            f.write(FAKE_SYSTEMCTL)
        os.chmod(self.path("/usr/bin/systemctl"), 0o755)
        os.makedirs(self.path("/run/systemd/system"), exist_ok=True)

    def systemctl_log(self):
        try:
            with open(self.path("/var/log/fake-systemctl.log")) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def install(self, deb_path):
        name = os.path.basename(deb_path)
        shutil.copy(deb_path, self.path("/tmp/" + name))
        return self.sh("apt-get install -y --no-install-recommends /tmp/%s" % name)

    def dangling_symlinks(self):
        """Symlinks of ours (name or target mentions the package) that point nowhere.
        (Debian's waagent leaves its own walinuxagent.service link behind when apt
        removes it; that one is waagent's until it is purged.)"""
        out = self.sh("find /etc /lib/systemd /usr/lib/systemd -xtype l 2>/dev/null"
                      " | while read -r l; do echo \"$l -> $(readlink \"$l\")\"; done")
        return set(line for line in out.stdout.splitlines() if PKG in line)

    def wants_links(self):
        """Our units enabled: the links in the .wants directories of their targets."""
        found = []
        for target in sorted(set(WANTED_BY.values()) | {"multi-user.target"}):
            wants = self.path("/etc/systemd/system/%s.wants" % target)
            if os.path.isdir(wants):
                found += [n for n in os.listdir(wants) if n.startswith(PKG)]
        return sorted(found)


@pytest.fixture
def chroot(chroot_tarball, tmp_path):
    root = str(tmp_path / "root")
    os.mkdir(root)
    run(["tar", "-C", root, "--numeric-owner", "-xf", chroot_tarball])
    yield Chroot(root)
    # unpacked copy only; the cached tarball is never written to
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def newer_deb(tmp_path_factory):
    """The same package rebuilt as <version>+test1 in a temporary copy."""
    work = str(tmp_path_factory.mktemp("newer"))
    sdist = artifact("dist/%s-%s.tar.gz" % (PKG, version()))
    run(["tar", "-C", work, "-xzf", sdist])
    src = os.path.join(work, "%s-%s" % (PKG, version()))
    newver = version() + "+test1"
    changelog = os.path.join(src, "debian/changelog")
    with open(changelog, encoding="utf-8") as f:
        old = f.read()
    with open(changelog, "w", encoding="utf-8") as f:
        f.write("%s (%s) unstable; urgency=medium\n\n  * Test upgrade.\n\n"
                " -- Test <test@azure-firstboot.example>  Fri, 27 Nov 2026 12:00:00 +0000\n\n%s"
                % (PKG, newver, old))
    out = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, check=False,
              env={"SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "1795700000")})
    assert out.returncode == 0, out.stdout[-3000:]
    path = os.path.join(work, "%s_%s_all.deb" % (PKG, newver))
    assert os.path.isfile(path), out.stdout[-3000:]
    return path
