"""The .deb in a Debian 12 chroot that already runs Debian's waagent."""

import os
import re
import shutil
import stat

import pytest

from conftest import AGENT_UNITS, PKG, RESOURCE_DISK_UNIT, SSH_KEYGEN_UNIT, UNITS, run, version, wants_link

START = re.compile(r"\b(start|restart|try-restart|reload-or-restart|try-reload-or-restart|reload)\b")


def started_units(log):
    """Lines of the fake systemctl log that would have started one of our units."""
    return [line for line in log if PKG in line and START.search(line)]


def assert_enabled(ch, units=UNITS):
    for unit in units:
        link = ch.path(wants_link(unit))
        assert os.path.islink(link), "%s not enabled (no symlink)" % unit
        assert os.readlink(link) == "/lib/systemd/system/" + unit
        assert os.path.isfile(ch.path("/lib/systemd/system/" + unit))
        assert ch.systemctl("is-enabled", unit).stdout.strip() == "enabled"


def test_install_replaces_waagent_enables_units_starts_nothing(chroot, deb):
    ch = chroot
    assert ch.sh("dpkg-query -W -f='${db:Status-Abbrev}' waagent").stdout.startswith("ii")
    ch.fake_systemd()

    out = ch.install(deb).stdout
    assert "Removing waagent" in out, out

    status = ch.sh("dpkg-query -W -f='${db:Status-Abbrev} ${Version}' %s waagent" % PKG,
                   check=False).stdout
    assert "ii  " + version() in status, status
    assert ch.sh("dpkg-query -W -f='${db:Status-Abbrev}' waagent").stdout.strip() in ("rc", "un")
    assert not os.path.exists(ch.path("/usr/sbin/waagent"))

    assert_enabled(ch)
    assert ch.wants_links() == sorted(UNITS)

    # The scripts did talk to the (fake, "running") systemd, but started nothing of ours.
    log = ch.systemctl_log()
    assert any("daemon-reload" in line for line in log) or any("walinuxagent" in line for line in log), log
    assert started_units(log) == [], log
    for path in ("/run/azure-firstboot", "/var/lib/azure-firstboot"):
        assert not os.path.exists(ch.path(path)), path + " exists: something ran"

    # Config is a conffile; the man page and preset are installed.
    conffiles = ch.sh("dpkg-query -W -f='${Conffiles}' %s" % PKG).stdout
    assert "/etc/azure-firstboot/azure-firstboot.conf" in conffiles
    assert os.path.isfile(ch.path("/usr/share/man/man8/azure-firstboot.8.gz"))
    assert os.path.isfile(ch.path("/lib/systemd/system-preset/90-azure-firstboot.preset"))
    # waagent's udev rules went with it; ours (Azure's disk names, VFs unmanaged,
    # product_uuid) are there, and the networkd file for the VFs
    assert not os.path.exists(ch.path("/lib/udev/rules.d/66-azure-storage.rules"))
    for rules in ("81-azure-firstboot-disk.rules", "81-azure-firstboot-sriov.rules",
                  "99-azure-firstboot-product-uuid.rules"):
        assert os.path.isfile(ch.path("/lib/udev/rules.d/" + rules)), rules
    assert os.path.isfile(ch.path("/lib/systemd/network/01-azure-firstboot-unmanaged-sriov.network"))
    assert ch.dangling_symlinks() == set()


def test_cli_runs_with_debian_python3_only_units_verify(chroot, deb):
    ch = chroot
    ch.install(deb)
    # no pip in the image, nothing under /usr/local: only Debian's python3
    assert ch.sh("python3 -m pip --version", check=False).returncode != 0
    assert ch.sh("find /usr/local/lib -name '*.py' | wc -l").stdout.strip() == "0"
    out = run(["chroot", ch.root, "/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "azure-firstboot", "--help"])
    assert "usage: azure-firstboot" in out.stdout
    assert "network-wait" in out.stdout and "report-ready" in out.stdout
    where = ch.sh("python3 -c 'import azure_firstboot as m; print(m.__file__)'").stdout.strip()
    assert where == "/usr/lib/python3/dist-packages/azure_firstboot/__init__.py"
    # Debian's python3 in isolated mode, and the lean launcher (no "re" import)
    with open(ch.path("/usr/bin/azure-firstboot")) as f:
        launcher = f.read()
    assert launcher.startswith("#!/usr/bin/python3 -IS\n") and "import re" not in launcher
    # bad usage: one line, exit 2, no traceback
    bad = run(["chroot", ch.root, "azure-firstboot", "no-such-command"], check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stdout

    # the installed units against the image's real systemd units: silent (the ssh-keygen
    # unit needs /usr/bin/ssh-keygen, absent here: test_ssh_keygen_unit_... verifies it)
    paths = [ch.path("/lib/systemd/system/" + u) for u in AGENT_UNITS + (RESOURCE_DISK_UNIT,)]
    out = run(["systemd-analyze", "verify", "--man=no", "--root=" + ch.root] + paths, check=False)
    assert out.returncode == 0 and out.stdout == "", out.stdout


def test_remove_leaves_no_dangling_symlinks_purge_cleans_up(chroot, deb):
    ch = chroot
    ch.fake_systemd()
    ch.install(deb)
    assert ch.wants_links() == sorted(UNITS)
    # what the units would leave behind after a boot
    os.makedirs(ch.path("/var/lib/azure-firstboot"))
    with open(ch.path("/var/lib/azure-firstboot/provisioned"), "w") as f:
        f.write("vm_id=x\n")

    ch.sh("dpkg -r %s" % PKG)
    assert ch.wants_links() == []
    assert ch.dangling_symlinks() == set()
    for unit in UNITS:
        assert not os.path.exists(ch.path("/lib/systemd/system/" + unit))
    assert os.path.isfile(ch.path("/etc/azure-firstboot/azure-firstboot.conf"))  # conffile kept until purge
    assert os.path.isfile(ch.path("/var/lib/azure-firstboot/provisioned"))  # state kept until purge
    assert started_units(ch.systemctl_log()) == []

    ch.sh("dpkg -P %s" % PKG)
    assert not os.path.exists(ch.path("/etc/azure-firstboot"))
    assert not os.path.exists(ch.path("/var/lib/azure-firstboot"))
    state = ch.path("/var/lib/systemd/deb-systemd-helper-enabled")
    leftovers = [n for _, _, files in os.walk(state) for n in files if PKG in n]
    assert leftovers == []
    assert ch.dangling_symlinks() == set()


def test_reinstall_after_remove_restores_enablement_keeps_admin_disable(chroot, deb):
    ch = chroot
    ch.fake_systemd()
    ch.install(deb)
    ch.systemctl("disable", "azure-firstboot-hostname.service")
    ch.sh("dpkg -r %s" % PKG)
    assert ch.wants_links() == [] and ch.dangling_symlinks() == set()
    ch.install(deb)
    assert_enabled(ch, [u for u in UNITS if "hostname" not in u])
    assert ch.systemctl("is-enabled", "azure-firstboot-hostname.service", check=False).stdout.strip() == "disabled"
    assert started_units(ch.systemctl_log()) == []


def test_admin_disable_survives_upgrade(chroot, deb, newer_deb):
    ch = chroot
    ch.fake_systemd()
    ch.install(deb)
    ch.systemctl("disable", "azure-firstboot-hostname.service")
    assert ch.systemctl("is-enabled", "azure-firstboot-hostname.service", check=False).stdout.strip() == "disabled"

    ch.install(newer_deb)
    assert ch.sh("dpkg-query -W -f='${Version}' %s" % PKG).stdout == version() + "+test1"
    assert ch.systemctl("is-enabled", "azure-firstboot-hostname.service", check=False).stdout.strip() == "disabled"
    assert not os.path.lexists(ch.path("/etc/systemd/system/multi-user.target.wants/"
                                       "azure-firstboot-hostname.service"))
    assert_enabled(ch, [u for u in UNITS if "hostname" not in u])
    assert started_units(ch.systemctl_log()) == [], ch.systemctl_log()


def keygen_condition(ch):
    """The image's own systemd evaluates the installed unit's conditions: (ok, output)."""
    out = ch.sh("systemd-analyze condition --unit=%s" % SSH_KEYGEN_UNIT, check=False)
    assert "Conditions succeeded." in out.stdout or "Conditions failed." in out.stdout, out.stdout
    return out.returncode == 0, out.stdout


def host_keys(ch):
    d = ch.path("/etc/ssh")
    return {n: os.lstat(os.path.join(d, n)) for n in sorted(os.listdir(d)) if n.startswith("ssh_host_")}


def test_ssh_keygen_unit_recreates_deleted_host_keys(chroot, deb):
    """deprovision --ssh-host-keys, then what the unit does on the next boot: its
    conditions (evaluated by the image's systemd-analyze) and its ExecStart, run in the
    image. This image has no openssh: the host's ssh-keygen is copied in (same release)."""
    ch = chroot
    ch.install(deb)
    unit_file = ch.path("/lib/systemd/system/" + SSH_KEYGEN_UNIT)
    with open(unit_file) as f:
        execstart = [l.split("=", 1)[1].strip() for l in f if l.startswith("ExecStart=")]
    assert execstart == ["/usr/bin/ssh-keygen -A"]

    # an image without ssh-keygen/sshd: skipped, nothing started
    ok, out = keygen_condition(ch)
    assert not ok and re.search(r"ConditionPathExists=/usr/(bin/ssh-keygen|sbin/sshd) failed", out), out

    if not os.path.isfile("/usr/bin/ssh-keygen"):
        pytest.fail("/usr/bin/ssh-keygen missing on the host: apt-get install openssh-client")
    shutil.copy2("/usr/bin/ssh-keygen", ch.path("/usr/bin/ssh-keygen"))
    # stand-in for openssh-server's sshd (the condition only checks that it exists)
    with open(ch.path("/usr/sbin/sshd"), "w") as f:
        f.write("#!/bin/sh\nexit 1\n")
    os.chmod(ch.path("/usr/sbin/sshd"), 0o755)
    os.makedirs(ch.path("/etc/ssh"), exist_ok=True)
    with open(ch.path("/etc/ssh/sshd_config"), "w") as f:
        f.write("# test\n")
    # with ssh-keygen present the unit verifies silently in the image too
    out = run(["systemd-analyze", "verify", "--man=no", "--root=" + ch.root, unit_file], check=False)
    assert out.returncode == 0 and out.stdout == "", out.stdout

    # no host key (fresh image): the unit runs, and ExecStart creates every default type
    ok, out = keygen_condition(ch)
    assert ok, out
    ch.sh(execstart[0])
    first = host_keys(ch)
    assert sorted(first) == sorted("ssh_host_%s_key%s" % (t, s) for t in ("rsa", "ecdsa", "ed25519")
                                   for s in ("", ".pub")), sorted(first)
    for name, st in first.items():
        assert stat.S_ISREG(st.st_mode) and st.st_uid == 0 and st.st_gid == 0, name
        assert stat.S_IMODE(st.st_mode) == (0o644 if name.endswith(".pub") else 0o600), (name, oct(st.st_mode))
    with open(ch.path("/etc/ssh/ssh_host_ed25519_key.pub")) as f:
        pub1 = f.read()
    # keys present (every later boot): skipped
    ok, out = keygen_condition(ch)
    assert not ok and "ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key failed" in out, out

    # image capture: the agent's deprovision removes them all, keeps the config
    ch.sh("azure-firstboot deprovision --ssh-host-keys")
    assert host_keys(ch) == {}
    assert os.path.isfile(ch.path("/etc/ssh/sshd_config"))
    ok, out = keygen_condition(ch)
    assert ok, out

    # next boot: new keys, the unit is then skipped again
    ch.sh(execstart[0])
    assert sorted(host_keys(ch)) == sorted(first)
    with open(ch.path("/etc/ssh/ssh_host_ed25519_key.pub")) as f:
        assert f.read() != pub1
    assert not keygen_condition(ch)[0]
