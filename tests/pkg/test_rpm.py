"""The .rpm, inspected with rpm -qp, then installed into the Debian chroot with
"rpm --root" (scriptlets run there) to check preset-enable and disable-on-erase."""

import os
import re

from conftest import PKG, UNITS, run, wants_link

RPM_FILES = ["/usr/lib/systemd/system/" + u for u in UNITS] + [
    "/usr/lib/systemd/system-preset/90-azure-firstboot.preset",
    "/usr/lib/systemd/system-generators/azure-firstboot-generator",
    "/usr/lib/udev/rules.d/81-azure-firstboot-disk.rules",
    "/usr/lib/udev/rules.d/81-azure-firstboot-sriov.rules",
    "/usr/lib/udev/rules.d/99-azure-firstboot-product-uuid.rules",
    "/usr/lib/systemd/network/01-azure-firstboot-unmanaged-sriov.network",
    "/etc/azure-firstboot/azure-firstboot.conf",
    "/usr/share/man/man8/azure-firstboot.8.gz",
    "/usr/bin/azure-firstboot",
    "/usr/share/azure-firstboot/azure_firstboot/cli.py",
]


def query(rpm, *args):
    return run(["rpm", "-qp"] + list(args) + [rpm]).stdout


def test_rpm_contents_relationships_scriptlets(rpm):
    files = query(rpm, "-l").split()
    for path in RPM_FILES:
        assert path in files, path
    flags = dict(line.rsplit(" ", 1) for line in
                 query(rpm, "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]").splitlines())
    assert flags["/etc/azure-firstboot/azure-firstboot.conf"] == "cn"   # %config(noreplace)

    assert query(rpm, "--conflicts").split() == ["WALinuxAgent"]
    assert query(rpm, "--recommends").split() == ["azure-vm-utils"]
    requires = query(rpm, "--requires").splitlines()
    assert "python3" in requires and "/usr/bin/python3" in requires
    versioned = [r for r in requires if re.search(r"python\(abi\)|python3\.\d|python3 *[<>=]", r)]
    assert versioned == [], versioned
    assert [r for r in requires if r.startswith("systemd")] != []   # %systemd_requires

    scripts = query(rpm, "--scripts")
    sections = dict(re.findall(r"^(\w+) scriptlet \(using /bin/sh\):\n(.*?)(?=^\w+ scriptlet|\Z)",
                               scripts, re.S | re.M))
    assert set(sections) == {"postinstall", "preuninstall", "postuninstall"}, scripts
    for unit in UNITS:
        assert unit in sections["postinstall"] and unit in sections["preuninstall"]
    assert "preset" in sections["postinstall"] and "-eq 1" in sections["postinstall"]
    assert "disable" in sections["preuninstall"] and "-eq 0" in sections["preuninstall"]
    # first-boot oneshots are never (re)started by a package transaction
    assert not re.search(r"\b(start|restart|try-restart)\b", scripts), scripts


def test_rpm_install_presets_units_erase_disables(chroot, rpm):
    ch = chroot
    ch.fake_systemd()
    run(["rpm", "--root=" + ch.root, "--initdb"])
    out = run(["rpm", "--root=" + ch.root, "-ivh", "--nodeps", rpm])
    assert "error" not in out.stdout.lower(), out.stdout
    for unit in UNITS:
        assert os.path.islink(ch.path(wants_link(unit))), unit
    log = ch.systemctl_log()
    assert any(" preset " in line for line in log), log
    assert not [line for line in log if re.search(r"\b(start|restart)\b", line)], log
    help_out = run(["chroot", ch.root, "/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "azure-firstboot", "--help"])
    assert "usage: azure-firstboot" in help_out.stdout

    run(["rpm", "--root=" + ch.root, "-e", "--nodeps", PKG])
    assert ch.wants_links() == []
    assert ch.dangling_symlinks() == set()
