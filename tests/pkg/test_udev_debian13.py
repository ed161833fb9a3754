"""The udev rules in udev/ against Debian 13 (trixie): systemd 257's `udevadm verify`,
and the real rules of Debian 13's azure-vm-utils package next to ours.

Both run in (or take files from) the VM harness's cached Debian 13 base with
azure-vm-utils installed (tests/vm/harness.py base_image: built by debootstrap on
first use, ~2-5 min, then cached under CACHE_DIR and shared with vm-check scenario a2).

- `udevadm verify --resolve-names=never` (systemd 257, the chrooted trixie binary) on
  our three rule files: syntax, semantics and style (no --no-style), strictly.
- "Same links, none doubled": the umockdev harness of tests/unit/test_udev_rules.py
  (recorded Azure sysfs: VMBus SCSI controllers, NVMe, a bonded mlx5 VF) runs
  azure-vm-utils' own 80-azure-disk.rules and 10-azure-unmanaged-sriov.rules alone,
  then with ours added: the /dev/disk/azure links (names and targets) and the VF's
  marks are the same. The rule engine is the host's udevadm (Debian 12's 252), the
  rule files are Debian 13's.
"""
import glob
import os
import subprocess
import sys

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, "tests", "vm"))
sys.path.insert(0, os.path.join(TOP, "tests", "unit"))
import harness  # noqa: E402
import test_udev_rules as tu  # noqa: E402

RULES = os.path.join(TOP, "udev")
OURS = sorted(os.listdir(RULES))
VM_UTILS_RULES = ("10-azure-unmanaged-sriov.rules", "80-azure-disk.rules")


@pytest.fixture(scope="module")
def trixie():
    """The root of the cached Debian 13 base with azure-vm-utils (built if missing)."""
    if not os.path.exists(harness.cache_root()):
        os.makedirs(harness.cache_root())
    return harness.base_image("trixie", harness.base_extra("trixie", packages=("azure-vm-utils",))).root


def test_udevadm_verify_systemd_257(trixie):
    """Our rule files, read by Debian 13's udevadm (bind-mounted into the base's /mnt
    in a private mount namespace: the cached tree is not written)."""
    script = ('set -e; mount --bind "$1" "$2/mnt"; '
              'chroot "$2" /usr/bin/env -i PATH=/usr/bin:/usr/sbin LC_ALL=C udevadm --version; '
              'cd "$1"; chroot "$2" /usr/bin/env -i PATH=/usr/bin:/usr/sbin LC_ALL=C '
              'udevadm verify --resolve-names=never ' + " ".join("/mnt/" + f for f in OURS))
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                        "verify", RULES, trixie],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, out
    version = int(out.split()[0])
    assert version >= 257, out
    # one "... passed" summary per file, no issue found
    for f in OURS:
        assert "/mnt/%s: udev rules check failed" % f not in out, out
    assert "%d udev rules files have been checked" % len(OURS) in out, out
    counts = dict(l.split(":") for l in out.replace(" ", "").splitlines() if ":" in l)
    assert counts.get("Success") == str(len(OURS)) and counts.get("Fail") == "0", out


def _vm_utils(trixie):
    files = []
    for name in VM_UTILS_RULES:
        path = os.path.join(trixie, "usr/lib/udev/rules.d", name)
        with open(path, encoding="utf-8") as f:
            files.append((name, f.read()))
    return files


# udev runs a rule's PROGRAM with a clean environment (no umockdev LD_PRELOAD), and
# azure-vm-utils' PROGRAM reads /sys itself (readlink .../device): in the sandbox's
# private mount namespace, umockdev's fake sysfs is bind-mounted on /sys too (for
# one device at a time: umockdev-run removes its tree when it ends).
UMOCKDEV_LINE = 'umockdev-run -d "$T/tree.umockdev" -- udevadm test --action=add "$d" 2>&1'
SYS_TOO = ('umockdev-run -d "$T/tree.umockdev" -- sh -c \'env -u LD_PRELOAD mount --bind '
           '"$UMOCKDEV_DIR/sys" /sys || exit 1; udevadm test --action=add "$1"; rc=$?; '
           'env -u LD_PRELOAD umount /sys; exit $rc\' sh "$d" 2>&1')
assert UMOCKDEV_LINE in tu.SANDBOX


def _run(tmp_path, tree, devices, extra_rules, ours=True):
    """tests/unit's run_udev with the fake /sys for programs too; ours=False: without
    our rule files (azure-vm-utils' rules alone)."""
    real = tu.RULES, tu.SANDBOX
    if not ours:
        empty = tmp_path.parent / "no-rules"
        empty.mkdir()
        tu.RULES = str(empty)
    tu.SANDBOX = tu.SANDBOX.replace(UMOCKDEV_LINE, SYS_TOO)
    try:
        return tu.run_udev(tmp_path, tree, devices, extra_rules=extra_rules)
    finally:
        tu.RULES, tu.SANDBOX = real


def _azure_tree():
    t = tu.Tree()
    devs = (t.scsi_disk(tu.SCSI_CTRL % "a", 0, 0, "sda", partitions=(1, 15), minor=0)
            + t.scsi_disk(tu.SCSI_CTRL % "a", 0, 1, "sdb", partitions=(1,), minor=16)
            + t.scsi_disk(tu.SCSI_CTRL % "b", 1, 0, "sdc", partitions=(1,), minor=32)
            + t.scsi_disk(tu.SCSI_CTRL % "b", 1, 5, "sdd", minor=48))
    devs += t.nvme("7a2c1e4b-0000-4a7e-9d6f-1c2b3a4d5e6f", "c05b", 0,
                   "Microsoft NVMe Direct Disk v2", "4A5B6C7D8E9F", {1: (1,)})
    t.netvsc()
    devs.append(t.vf("mlx5_core"))
    # the block device's "device" link to its SCSI device, as in the kernel's sysfs
    # (azure-vm-utils reads the LUN from it with readlink; ours use the SCSI address)
    for path, d in t.devs.items():
        if d["E"].get("DEVTYPE") == "disk" and "/block/sd" in path:
            d["L"]["device"] = "../../../" + path.split("/block/")[0].rsplit("/", 1)[1]
    return t, devs


def test_same_links_with_azure_vm_utils(trixie, tmp_path):
    """azure-vm-utils' own rules alone, then with ours: the same /dev/disk/azure links
    to the same devices, no link of ours added (waagent's root/scsi1/lunN names are
    absent where azure-vm-utils named the disk), the VF marked the same way."""
    vm_utils = _vm_utils(trixie)
    (tmp_path / "theirs").mkdir()
    (tmp_path / "both").mkdir()
    t, devs = _azure_tree()
    alone, links_alone = _run(tmp_path / "theirs", t, devs, vm_utils, ours=False)
    t, devs = _azure_tree()
    both, links_both = _run(tmp_path / "both", t, devs, vm_utils)
    theirs = tu.azure_links(links_alone)
    # azure-vm-utils really named the SCSI disks (else this test proves nothing)
    assert theirs.get("os") == "sda" and theirs.get("resource") == "sdb", theirs
    assert theirs.get("data/by-lun/0") == "sdc" and theirs.get("data/by-lun/5") == "sdd", theirs
    assert tu.azure_links(links_both) == theirs
    assert not [n for n in tu.azure_links(links_both) if n == "root" or n.startswith("scsi")]
    for name in ("sda", "sdc", "sdc1"):
        assert both[name]["props"].get("AZURE_DISK_TYPE") == alone[name]["props"].get("AZURE_DISK_TYPE")
        assert "AZURE_FIRSTBOOT_WA_NAME" not in both[name]["props"], name
        # each link once in the device's DEVLINKS
        links = both[name]["props"].get("DEVLINKS", "").split()
        assert len(links) == len(set(links)), links
    vf_alone, vf_both = alone["eth1"]["props"], both["eth1"]["props"]
    assert vf_alone.get("AZURE_UNMANAGED_SRIOV") == "1", vf_alone
    for k in ("ID_NET_MANAGED_BY", "NM_UNMANAGED", "AZURE_UNMANAGED_SRIOV"):
        assert vf_both.get(k) == vf_alone.get(k), k
    assert "AZURE_FIRSTBOOT_UNMANAGED_SRIOV" not in vf_both
