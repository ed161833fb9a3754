"""azure-firstboot check: a good image tree passes; each problem alone fails it
with one line naming the check (the CLI as a real process under --root); the
example network configurations of examples/network/ pass for every stack; the
netplan reader; deprovision's refusal, sudoers removal and build-user messages."""

import json
import os
import subprocess
import sys

import pytest

import image_tree
from azure_firstboot import check

TOP = image_tree.TOP


def env(**extra):
    e = dict(os.environ, PYTHONPATH=os.path.join(TOP, "src"))
    e.pop("SUDO_USER", None)
    e.update(extra)
    return e


def run(root, *args):
    return subprocess.run([sys.executable, "-m", "azure_firstboot", "--root", root] + list(args),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env(), timeout=60, universal_newlines=True)


def image(tmp_path, extra=None):
    return image_tree.good_image(str(tmp_path / "root"), extra)


def test_good_image_is_ready(tmp_path):
    root = image(tmp_path)
    proc = run(root, "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "ready to capture: no problems found in %s\n" % os.path.realpath(root)
    doc = json.loads(run(root, "check", "--json").stdout)
    assert doc == {"ready": True, "root": os.path.realpath(root), "problems": []}


EX = image_tree.example
NM_ENABLED = {"etc/systemd/system/multi-user.target.wants/systemd-networkd.service": None,
              "etc/systemd/network/09-azure-primary.network": None,
              "etc/systemd/network/09-azure-secondary.network": None,
              "etc/systemd/system/multi-user.target.wants/NetworkManager.service":
                  ("->", "/lib/systemd/system/NetworkManager.service")}
NM_GOOD = dict(NM_ENABLED, **{
    "etc/NetworkManager/system-connections/azure-primary.nmconnection":
        EX("NetworkManager/azure-primary.nmconnection"),
    "etc/NetworkManager/system-connections/azure-secondary.nmconnection":
        EX("NetworkManager/azure-secondary.nmconnection")})
IFUPDOWN_ENABLED = {"etc/systemd/system/multi-user.target.wants/systemd-networkd.service": None,
                    "etc/systemd/network/09-azure-primary.network": None,
                    "etc/systemd/network/09-azure-secondary.network": None,
                    "sbin/ifup": "", "etc/network/interfaces": "source /etc/network/interfaces.d/*\n",
                    "etc/systemd/system/multi-user.target.wants/networking.service":
                        ("->", "/lib/systemd/system/networking.service")}
IFUPDOWN_GOOD = dict(IFUPDOWN_ENABLED, **{"etc/network/interfaces.d/azure": EX("ifupdown/azure")})
NETPLAN_GOOD = {"etc/systemd/network/09-azure-primary.network": None,
                "etc/systemd/network/09-azure-secondary.network": None,
                "usr/sbin/netplan": "", "etc/netplan/90-azure.yaml": EX("netplan/90-azure.yaml")}


@pytest.mark.parametrize("extra", [NM_GOOD, IFUPDOWN_GOOD, NETPLAN_GOOD,
                                   {"usr/bin/cloud-init": "", "etc/cloud/cloud-init.disabled": ""},
                                   {"usr/sbin/waagent": ""},   # installed, not enabled: disabled
                                   {"etc/ssh/sshd_config": "Include /etc/ssh/sshd_config.d/*.conf\n"
                                                           "Match User x\nPasswordAuthentication yes\n"}],
                         ids=["NetworkManager", "ifupdown", "netplan", "cloud-init-disabled", "waagent-disabled",
                              "sshd-match-after-include"])
def test_other_good_images(tmp_path, extra):
    proc = run(image(tmp_path, extra), "check")
    assert proc.returncode == 0, proc.stdout


CLOUD_INIT_NETPLAN = """\
# This file is generated from information provided by the datasource.
network:
    ethernets:
        eth0:
            dhcp4: true
            dhcp4-overrides:
                route-metric: 100
            match:
                driver: hv_netvsc
                macaddress: 00:0d:3a:12:34:56
            set-name: eth0
    version: 2
"""
BROKEN = {
    "config": ({"etc/azure-firstboot/azure-firstboot.conf": "[imds]\ntimeout = soon\n"},
               "bad value for imds.timeout"),
    "units": ({"etc/systemd/system/multi-user.target.wants/azure-firstboot-user.service": None},
              "azure-firstboot-user.service not enabled"),
    "units-masked": ({"etc/systemd/system/azure-firstboot-report-ready.service": ("->", "/dev/null")},
                     "azure-firstboot-report-ready.service not enabled"),
    "agents": ({"usr/sbin/waagent": "", "etc/systemd/system/multi-user.target.wants/walinuxagent.service":
                ("->", "/lib/systemd/system/walinuxagent.service")},
               "waagent is still installed (/usr/sbin/waagent) and enabled"),
    "agents-cloud-init": ({"usr/bin/cloud-init": ""}, "cloud-init is still installed"),
    "agents-leftover": ({"etc/systemd/system/multi-user.target.wants/walinuxagent.service":
                         ("->", "/lib/systemd/system/walinuxagent.service")},
                        "waagent is not installed but still enabled"),
    "network-none": ({"etc/systemd/network/09-azure-primary.network": None},
                     "no DHCP configuration for the Azure NIC (driver hv_netvsc) in systemd-networkd"),
    "network-no-stack": ({"etc/systemd/system/multi-user.target.wants/systemd-networkd.service": None},
                         "no network configuration system found"),
    "network-by-name": ({"etc/systemd/network/05-eth.network": "[Match]\nName=eth*\n[Network]\nDHCP=yes\n"},
                        "does not match it by driver"),
    "network-no-dhcp": ({"etc/systemd/network/09-azure-primary.network":
                         "[Match]\nDriver=hv_netvsc\n[Network]\nAddress=10.0.0.4/24\n"}, "has no DHCP=yes"),
    "network-mac": ({"etc/systemd/network/50-cloud-init-eth0.network":
                     "[Match]\nMACAddress=00:0d:3a:12:34:56\n[Network]\nDHCP=ipv4\n"}, "matches a MAC address"),
    "network-netplan-mac": ({"etc/netplan/50-cloud-init.yaml": CLOUD_INIT_NETPLAN},
                            "ethernets.eth0 matches MAC address 00:0d:3a:12:34:56"),
    "network-nm-mac": (dict(NM_GOOD, **{"etc/NetworkManager/system-connections/cloud-init-eth0.nmconnection":
                                        "[connection]\ntype=ethernet\n[ethernet]\nmac-address=00:0D:3A:12:34:56\n"}),
                       "is bound to MAC address 00:0D:3A:12:34:56"),
    "network-nm-none": (NM_ENABLED, "no DHCP configuration for the Azure NIC (driver hv_netvsc) in NetworkManager"),
    "network-ifupdown-static": (dict(IFUPDOWN_ENABLED, **{"etc/network/interfaces.d/eth0":
                                                          "auto eth0\niface eth0 inet static\n"}),
                                "in ifupdown"),
    "network-ifcfg-mac": ({"etc/sysconfig/network-scripts/ifcfg-eth0": "DEVICE=eth0\nHWADDR=00:0d:3a:12:34:56\n"},
                          "is bound to MAC address 00:0d:3a:12:34:56"),
    "network-udev-mac": ({"etc/udev/rules.d/70-persistent-net.rules":
                          'SUBSYSTEM=="net", ATTR{address}=="00:0d:3a:12:34:56", NAME="eth0"\n'},
                         "persistent net rules"),
    "leases": ({"var/lib/dhcp/dhclient.eth0.leases": "lease {}\n"}, "DHCP lease(s) left in the image"),
    "leases-networkd": ({"run/systemd/netif/leases/2": "ADDRESS=10.0.0.4\n"}, "/run/systemd/netif/leases/2"),
    "sshd-no-include": ({"etc/ssh/sshd_config": "PasswordAuthentication no\n"}, "has no 'Include"),
    "sshd-order": ({"etc/ssh/sshd_config": "PasswordAuthentication no\nInclude /etc/ssh/sshd_config.d/*.conf\n"},
                   "sshd_config:1 sets 'PasswordAuthentication no' and is read before"),
    "sshd-dropin": ({"etc/ssh/sshd_config.d/10-hardening.conf": "PasswordAuthentication no\n"},
                    "10-hardening.conf:1 sets 'PasswordAuthentication no' and is read before"),
    "machine-id": ({"etc/machine-id": "0123456789abcdef0123456789abcdef\n"}, "/etc/machine-id is not empty"),
    "machine-id-dbus": ({"var/lib/dbus/machine-id": "0123456789abcdef0123456789abcdef\n"},
                        "/var/lib/dbus/machine-id"),
    "host-keys": ({"etc/ssh/ssh_host_ed25519_key": "k"}, "SSH host keys in the image (ssh_host_ed25519_key)"),
    "state": ({"var/lib/azure-firstboot/provisioned": "vm_id=x\n"}, "azure-firstboot state left"),
    "sudoers-cloud-init": ({"etc/sudoers.d/90-cloud-init-users": "builder ALL=(ALL) NOPASSWD:ALL\n"},
                           "/etc/sudoers.d/90-cloud-init-users is left"),
    "sudoers-waagent": ({"etc/sudoers.d/waagent": "builder ALL=(ALL) NOPASSWD: ALL\n"},
                        "/etc/sudoers.d/waagent is left"),
    "build-user": ({"etc/passwd": "root:x:0:0:root:/root:/bin/bash\nbuilder:x:1000:1000::/home/builder:/bin/sh\n",
                    "home/builder/.ssh/authorized_keys": "ssh-ed25519 AAAA x\n"},
                   "account builder (UID 1000) has SSH keys"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_problem_alone_fails_with_one_line(tmp_path, name):
    extra, expected = BROKEN[name]
    root = image(tmp_path, extra)
    proc = run(root, "check")
    assert proc.returncode == 1, proc.stdout
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(name.split("-")[0] if not name.startswith(("host-keys", "machine-id", "build-user"))
                               else "-".join(name.split("-")[:2]) + ":"), lines
    assert expected in lines[0], lines
    assert proc.stderr == "" or "Traceback" not in proc.stderr
    doc = json.loads(run(root, "check", "--json").stdout)
    assert doc["ready"] is False and len(doc["problems"]) == 1 and doc["problems"][0]["problem"] in lines[0]


def test_check_changes_nothing(tmp_path):
    root = image(tmp_path, {"etc/machine-id": "x\n", "var/lib/dhcp/a.leases": "l"})
    before = sorted((d, sorted(f)) for d, _, f in os.walk(root))
    run(root, "check")
    assert sorted((d, sorted(f)) for d, _, f in os.walk(root)) == before
    assert open(os.path.join(root, "etc/machine-id")).read() == "x\n"


def test_usage_errors_point_to_the_commands_help(tmp_path):
    proc = run(image(tmp_path), "check", "--bogus")
    assert proc.returncode == 2
    assert "unknown option --bogus for check" in proc.stderr
    assert "Try 'azure-firstboot check --help'." in proc.stderr
    top = run(image(tmp_path), "--bogus")
    assert "Try 'azure-firstboot --help'." in top.stderr
    help_ = run(image(tmp_path), "check", "--help")
    assert help_.returncode == 0 and "usage: azure-firstboot [--root DIR] check [--json]" in help_.stdout


# ---------------------------------------------------------------- pure parts

def test_yaml_reader_reads_netplan_files():
    doc = check.yaml_load(EX("netplan/90-azure.yaml"))
    eth = doc["network"]["ethernets"]
    assert eth["azure-primary"]["match"] == {"driver": "hv_netvsc", "name": "eth0"}
    assert eth["azure-secondary"]["dhcp4-overrides"]["use-dns"] == "false"
    assert check.yaml_load(CLOUD_INIT_NETPLAN)["network"]["ethernets"]["eth0"]["match"]["macaddress"] \
        == "00:0d:3a:12:34:56"
    doc = check.yaml_load("network:\n  ethernets:\n    e:\n      match: {driver: x}\n") if False else None
    listing = check.yaml_load("a:\n  - x\n  - name: y\n    v: 'q # not a comment'\n  - [1, 2]\nb: c # comment\n")
    assert listing == {"a": ["x", {"name": "y", "v": "q # not a comment"}, ["1", "2"]], "b": "c"}
    with pytest.raises(check.YamlError):
        check.yaml_load("a: 1\n   b: 2\n")


@pytest.mark.parametrize("match, expected", [
    ({"Driver": "hv_netvsc"}, True), ({"Name": "eth0", "Driver": "hv_*"}, True),
    ({"Name": "!eth0", "Driver": "hv_netvsc"}, False), ({"Name": "eth*"}, True),
    ({"Driver": "mlx5_core mana"}, False), ({"MACAddress": "00:0d:3a:00:00:01"}, False),
    ({"Type": "wlan"}, False), ({"Virtualization": "container"}, False), ({}, True)])
def test_networkd_match(match, expected):
    assert check.networkd_matches(match) is expected


def test_problems_of_an_empty_snapshot_name_every_missing_piece():
    found = dict(check.problems(check.Snapshot()))
    assert set(found) == {"units", "network"}


# ------------------------------------------------------------- deprovision

def test_deprovision_refuses_a_broken_configuration(tmp_path):
    root = image(tmp_path, {"etc/azure-firstboot/azure-firstboot.conf": "[imds]\ntimeout = soon\n",
                            "etc/machine-id": "0123\n", "etc/sudoers.d/waagent": "x\n"})
    proc = run(root, "deprovision", "--yes")
    assert proc.returncode == 1
    assert "the configuration is broken" in proc.stderr and "nothing changed" in proc.stderr
    assert open(os.path.join(root, "etc/machine-id")).read() == "0123\n"
    assert os.path.exists(os.path.join(root, "etc/sudoers.d/waagent"))
    forced = run(root, "deprovision", "--force")
    assert forced.returncode == 0, forced.stderr
    assert open(os.path.join(root, "etc/machine-id")).read() == ""
    assert not os.path.exists(os.path.join(root, "etc/sudoers.d/waagent"))


def test_deprovision_removes_other_agents_sudoers_files(tmp_path):
    root = image(tmp_path, {"etc/sudoers.d/waagent": "b ALL=(ALL) NOPASSWD: ALL\n",
                            "etc/sudoers.d/90-cloud-init-users": "b ALL=(ALL) NOPASSWD:ALL\n"})
    proc = run(root, "deprovision", "--yes")
    assert proc.returncode == 0, proc.stderr
    for name in ("waagent", "90-cloud-init-users"):
        assert not os.path.exists(os.path.join(root, "etc/sudoers.d", name))
    assert os.path.exists(os.path.join(root, "etc/sudoers.d/README"))
    assert run(root, "check").returncode == 0


def test_deprovision_warns_about_what_it_does_not_fix_and_what_is_left(tmp_path):
    root = image(tmp_path, {"etc/systemd/network/09-azure-primary.network": None,
                            "etc/passwd": "root:x:0:0::/root:/bin/sh\nbuilder:x:1000:1000::/home/builder:/bin/sh\n",
                            "home/builder/.ssh/authorized_keys": "ssh-ed25519 AAAA x\n"})
    proc = run(root, "deprovision", "--user", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "warning: deprovision: no DHCP configuration for the Azure NIC" in proc.stderr
    assert "build user not looked for under --root" in proc.stderr
    assert "warning: deprovision: still: account builder (UID 1000) has SSH keys" in proc.stderr


class HostPaths(object):
    def __init__(self, root):
        self.root, self.is_host = root, True

    def __call__(self, path):
        return os.path.join(self.root, path.lstrip("/"))


@pytest.mark.parametrize("sudo_user, found, why", [
    ("packer", [("packer", "/home/packer")], None),
    ("", [], "SUDO_USER is not set"),
    ("root", [], "SUDO_USER is root"),
    ("_apt", [], "not an ordinary account"),
    ("ghost", [], "not in /etc/passwd"),
])
def test_build_user_says_which_or_why_not(tmp_path, monkeypatch, sudo_user, found, why):
    from azure_firstboot import admin
    from azure_firstboot.state import Paths

    image_tree.write(str(tmp_path), {"etc/passwd": "root:x:0:0::/root:/bin/sh\n_apt:x:42:65534::/x:/bin/false\n"
                                                   "packer:x:1000:1000::/home/packer:/bin/sh\n",
                                     "etc/login.defs": ""})
    monkeypatch.setenv("SUDO_USER", sudo_user)
    got, reason = admin.build_user(HostPaths(str(tmp_path)), [])
    assert got == found
    assert (reason is None) if why is None else (why in reason)
    assert "under --root" in admin.build_user(Paths(str(tmp_path)), [])[1]


def test_root_is_a_boundary(tmp_path):
    """A directory of the tree symlinked out of it (absolute and relative) is read as a
    chroot would: the good network files outside are not the image's."""
    outside = tmp_path / "outside"
    image_tree.write(str(outside), {"09-azure-primary.network": EX("systemd-networkd/09-azure-primary.network")})
    root = image(tmp_path, {"etc/systemd/network/09-azure-primary.network": None,
                            "etc/systemd/network/09-azure-secondary.network": None})
    os.symlink(str(outside), os.path.join(root, "etc/systemd/network"))
    proc = run(root, "check")
    assert proc.returncode == 1 and "network: no DHCP configuration" in proc.stdout
    os.unlink(os.path.join(root, "etc/systemd/network"))
    os.symlink(os.path.relpath(str(outside), os.path.join(root, "etc/systemd")),
               os.path.join(root, "etc/systemd/network"))
    assert "network: no DHCP configuration" in run(root, "check").stdout


def test_units_are_the_presets_when_the_tree_has_it(tmp_path):
    with open(os.path.join(TOP, "systemd", "90-azure-firstboot.preset")) as f:
        preset = f.read()
    wanted = [l.split()[1] for l in preset.splitlines() if l.startswith("enable ")]
    extra = [u for u in wanted if u not in image_tree.UNITS]
    root = image(tmp_path, {"usr/lib/systemd/system-preset/90-azure-firstboot.preset": preset})
    proc = run(root, "check")
    if not extra:
        assert proc.returncode == 0, proc.stdout
        return
    assert proc.returncode == 1 and proc.stdout.startswith("units: %s not enabled" % ", ".join(extra))
    links = {"etc/systemd/system/multi-user.target.wants/" + u: ("->", "/lib/systemd/system/" + u) for u in extra}
    image_tree.write(root, links)
    assert run(root, "check").returncode == 0
