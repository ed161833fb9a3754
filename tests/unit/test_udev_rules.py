"""The udev rules in udev/ (disk names, accelerated-networking VFs, product_uuid)
run by the real udev rule engine against Azure's devices.

Each case builds a sysfs tree of Azure devices in umockdev's format (the paths,
attributes and drivers an Azure VM shows: VMBus device_id of the storage
controllers, SCSI H:C:T:L addresses, vendor "Msft"/model "Virtual Disk", the
NVMe model strings, a VF bonded to hv_netvsc with IFF_SLAVE in its flags; see
docs/distro-integration.md for where each fact comes from), then runs
`udevadm test --action=add` on each device under `umockdev-run` (so udev reads
the fake /sys), in a private mount namespace whose /run, /dev and rules
directories are tmpfs: the machine's own udev database, /dev and rules are
never touched. The symlinks udev made are read from that private /dev.

What the stand-ins replace: Debian 12's real 60-persistent-storage.rules runs
(it sets ID_MODEL/ID_SERIAL_SHORT of NVMe disks from sysfs), but its scsi_id
call needs a SCSI INQUIRY that a fake sysfs cannot answer, so a one-line
stand-in sets what scsi_id reports for a SCSI disk (ID_VENDOR, ID_MODEL with
spaces as "_", ID_SERIAL). ifupdown's hotplug rule is its one line (the RUN the
VF rule drops). azure-vm-utils' rules are not in the repository: a stand-in sets
the properties its rules set (AZURE_DISK_TYPE, AZURE_UNMANAGED_SRIOV), which is
all ours look at to step aside.
"""
import os
import shutil
import subprocess

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(TOP, "udev")
SYS_RULES = "/lib/udev/rules.d"

pytestmark = pytest.mark.skipif(
    not (shutil.which("umockdev-run") and shutil.which("udevadm") and shutil.which("unshare")),
    reason="needs umockdev-run, udevadm and unshare (.ci/apt-packages: umockdev, udev)")

VMBUS = "/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00"
SCSI_CTRL = "f8b3781%s-1e82-4818-a1c3-63d806ec15bb"   # %s: a, b, c, d = SCSI controller 0..3
GEN1_OS = "00000000-0000-8899-0000-000000000000"
GEN1_RESOURCE = "00000000-0001-8899-0000-000000000000"

# scsi_id's answer for a SCSI disk (stand-in, see the module docstring)
STANDIN_SCSI_ID = (
    'SUBSYSTEM=="block", KERNEL=="sd*[!0-9]|sr*", SUBSYSTEMS=="scsi", ATTRS{vendor}=="?*", '
    'OPTIONS="string_escape=replace", ENV{ID_VENDOR}="$attr{vendor}", ENV{ID_MODEL}="$attr{model}", '
    'ENV{ID_SERIAL}="$attr{vendor}_$attr{model}_%k", ENV{ID_BUS}="scsi"\n')
# Debian's ifupdown: /lib/udev/rules.d/80-ifupdown.rules
STANDIN_IFUPDOWN = 'SUBSYSTEM=="net", ACTION=="add|remove", RUN+="ifupdown-hotplug"\n'
# what azure-vm-utils' 80-azure-disk.rules / 10-azure-unmanaged-sriov.rules set
STANDIN_VM_UTILS_DISK = (
    'SUBSYSTEM=="block", ENV{ID_VENDOR}=="Msft", ENV{ID_MODEL}=="Virtual_Disk", '
    'ENV{AZURE_DISK_TYPE}="data", ENV{AZURE_DISK_LUN}="0"\n'
    'ENV{AZURE_DISK_TYPE}=="data", ENV{DEVTYPE}=="disk", SYMLINK+="disk/azure/data/by-lun/0"\n'
    'ENV{AZURE_DISK_TYPE}=="data", ENV{DEVTYPE}=="partition", SYMLINK+="disk/azure/data/by-lun/0-part%n"\n')
STANDIN_VM_UTILS_SRIOV = (
    'SUBSYSTEM=="net", DRIVERS=="mlx5_core", ENV{AZURE_UNMANAGED_SRIOV}="1", '
    'ENV{ID_NET_MANAGED_BY}="unmanaged", ENV{NM_UNMANAGED}="1"\n')


class Tree:
    """A sysfs tree in umockdev's text format (P: path, E: property, A: attribute, L: link)."""

    def __init__(self):
        self.devs = {}

    def dev(self, path, props=(), attrs=(), driver=None):
        d = self.devs.setdefault(path, {"E": {}, "A": {}, "L": {}})
        d["E"].update(props)
        d["A"].update(attrs)
        if driver:
            bus = d["E"].get("SUBSYSTEM", "platform")
            d["E"]["DRIVER"] = driver
            d["L"]["driver"] = "../" * path.count("/") + "bus/%s/drivers/%s" % (bus, driver)
        return path

    def text(self):
        out = []
        for path in sorted(self.devs, key=len, reverse=True):
            d = self.devs[path]
            out.append("P: %s" % path)
            out += ["E: %s=%s" % kv for kv in d["E"].items()]
            out += ["A: %s=%s" % kv for kv in d["A"].items()]
            out += ["L: %s=%s" % kv for kv in d["L"].items()]
            out.append("")
        return "\n".join(out)

    # --- Azure's devices -----------------------------------------------------
    def vmbus(self, guid, driver, class_id):
        return self.dev("%s/%s" % (VMBUS, guid), {"SUBSYSTEM": "vmbus"},
                        {"device_id": "{%s}" % guid, "class_id": "{%s}" % class_id}, driver)

    def scsi_disk(self, guid, host, lun, name, vendor="Msft    ", model="Virtual Disk    ",
                  partitions=(), minor=0, target=0, kind="disk"):
        """A disk behind a storvsc controller: VMBus device, host, target, H:C:T:L, block."""
        ctrl = self.vmbus(guid, "hv_storvsc", "ba6163d9-04a1-4d29-b605-72e2ffb1dc7f")
        h = self.dev("%s/host%d" % (ctrl, host), {"SUBSYSTEM": "scsi", "DEVTYPE": "scsi_host"})
        t = self.dev("%s/target%d:0:%d" % (h, host, target),
                     {"SUBSYSTEM": "scsi", "DEVTYPE": "scsi_target"})
        s = self.dev("%s/%d:0:%d:%d" % (t, host, target, lun),
                     {"SUBSYSTEM": "scsi", "DEVTYPE": "scsi_device"},
                     {"vendor": vendor, "model": model, "type": "0" if kind == "disk" else "5"},
                     "sd" if kind == "disk" else "sr")
        return self.block(s, name, 8 if kind == "disk" else 11, minor, partitions)

    def block(self, parent, name, major, minor, partitions=(), attrs=()):
        disk = self.dev("%s/block/%s" % (parent, name),
                        {"SUBSYSTEM": "block", "DEVTYPE": "disk", "DEVNAME": "/dev/" + name,
                         "MAJOR": str(major), "MINOR": str(minor)},
                        dict(attrs, size="2097152"))
        paths = [disk]
        for n in partitions:
            pname = name + ("p%d" % n if name[-1].isdigit() else str(n))
            paths.append(self.dev("%s/%s" % (disk, pname),
                                  {"SUBSYSTEM": "block", "DEVTYPE": "partition", "PARTN": str(n),
                                   "DEVNAME": "/dev/" + pname, "MAJOR": str(major),
                                   "MINOR": str(minor + n)}, {"partition": str(n)}))
        return paths

    def nvme(self, guid, domain, ctrl, model, serial, namespaces, major=259):
        """NVMe controller behind Hyper-V's virtual PCI bus; namespaces: {nsid: partitions}."""
        bus = self.vmbus(guid, "hv_pci", "44c4f61d-4444-4400-9d52-802e27ede19f")
        pci = self.dev("%s/pci%s:00/%s:00:00.0" % (bus, domain, domain),
                       {"SUBSYSTEM": "pci"}, {"vendor": "0x1414"}, "nvme")
        c = self.dev("%s/nvme/nvme%d" % (pci, ctrl), {"SUBSYSTEM": "nvme"},
                     {"model": model + " " * (40 - len(model)), "serial": serial + "    ",
                      "firmware_rev": "v1.00000"})
        paths, minor = [], ctrl * 16
        for nsid, parts in sorted(namespaces.items()):
            paths += self.block(c, "nvme%dn%d" % (ctrl, nsid), major, minor, parts,
                                {"nsid": str(nsid), "wwid": "nvme.1414-%s-%d" % (serial, nsid)})
            minor += len(parts) + 1
        return paths

    def nic(self, parent, name, ifindex, flags, mac="00:0d:3a:12:34:56"):
        return self.dev("%s/net/%s" % (parent, name),
                        {"SUBSYSTEM": "net", "INTERFACE": name, "IFINDEX": str(ifindex)},
                        {"address": mac, "flags": flags, "type": "1"})

    def netvsc(self, name="eth0", flags="0x1003"):
        dev = self.vmbus("000d3a12-3456-0000-0000-000000000000", "hv_netvsc",
                         "f8615163-df3e-46c5-913f-f2d2f965ed0e")
        return self.nic(dev, name, 2, flags)

    def vf(self, driver, name="eth1", flags="0x1803", domain="3b4a"):
        bus = self.vmbus("3b4a4e3c-1f6e-4d89-a1e5-0d3e6d2c9a71", "hv_pci",
                         "44c4f61d-4444-4400-9d52-802e27ede19f")
        pci = self.dev("%s/pci%s:00/%s:00:02.0" % (bus, domain, domain),
                       {"SUBSYSTEM": "pci"}, {"vendor": "0x15b3"}, driver)
        return self.nic(pci, name, 3, flags)


SANDBOX = r"""
set -e
T=$1; shift
mount -t tmpfs tmpfs /run
mkdir -p /run/udev "$T/dev.orig" "$T/udev.orig"
mount --bind /dev "$T/dev.orig"
mount -t tmpfs tmpfs /dev
touch /dev/null
mount --bind "$T/dev.orig/null" /dev/null
[ ! -d /etc/udev/rules.d ] || mount -t tmpfs tmpfs /etc/udev/rules.d
# /lib/udev: the system's helpers (scsi_id, ...) + only the rules of this case
mount --bind /lib/udev "$T/udev.orig"
mount -t tmpfs tmpfs /lib/udev
for f in "$T"/udev.orig/*; do ln -s "$f" /lib/udev/; done
rm /lib/udev/rules.d
ln -s "$T/rules" /lib/udev/rules.d
[ ! -e "$T/ifupdown" ] || touch /lib/udev/ifupdown-hotplug
[ /usr/lib/udev -ef /lib/udev ] || mount --bind /lib/udev /usr/lib/udev
for d in "$@"; do
    echo "@@@ $d"
    umockdev-run -d "$T/tree.umockdev" -- udevadm test --action=add "$d" 2>&1
done
echo "@@@ links"
find /dev/disk -type l -printf '%p %l\n' 2>/dev/null || true
"""


def run_udev(tmp_path, tree, devices, extra_rules=(), ifupdown=False, system=("60-persistent-storage.rules",)):
    """udevadm test on each device (in this order: a partition after its disk, whose
    database entry it imports). Returns ({sysname: {"props": {}, "run": [], "log": str}},
    {link: target name})."""
    rules = tmp_path / "rules"
    rules.mkdir()
    for f in os.listdir(RULES):
        shutil.copy(os.path.join(RULES, f), str(rules))
    for f in system:
        shutil.copy(os.path.join(SYS_RULES, f), str(rules))
    rules.joinpath("59-standin-scsi-id.rules").write_text(STANDIN_SCSI_ID)
    for name, text in extra_rules:
        rules.joinpath(name).write_text(text)
    if ifupdown:
        rules.joinpath("80-ifupdown.rules").write_text(STANDIN_IFUPDOWN)
        tmp_path.joinpath("ifupdown").write_text("")
    tmp_path.joinpath("tree.umockdev").write_text(tree.text())
    sys_paths = ["/sys" + d for d in devices]
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", SANDBOX,
                        "sandbox", str(tmp_path)] + sys_paths,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
                       env=dict(os.environ, LC_ALL="C"))
    out = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        if "unshare failed" in out or "Operation not permitted" in out:
            pytest.skip("cannot make a mount namespace here: " + out.strip()[-200:])
        raise AssertionError("sandbox failed (%d):\n%s" % (p.returncode, out[-3000:]))
    results, links = {}, {}
    for chunk in out.split("@@@ ")[1:]:
        head, _, body = chunk.partition("\n")
        if head == "links":
            for line in body.splitlines():
                link, _, target = line.partition(" ")
                links[link] = os.path.basename(target)
            continue
        # a rule file that udev cannot parse is a failure, whatever it then did
        for line in body.splitlines():
            if "azure-firstboot" in line and ("Invalid" in line or "rror" in line):
                raise AssertionError("udev rejects our rules: " + line)
        props, run = {}, []
        tail = body.split("some values may be different", 1)[-1]
        for line in tail.splitlines():
            if line.startswith("run: "):
                run.append(line[5:].strip("'"))
            elif "=" in line:
                k, _, v = line.partition("=")
                props[k] = v
        results[os.path.basename(head)] = {"props": props, "run": run, "log": body}
    return results, links


def azure_links(links):
    return {k[len("/dev/disk/azure/"):]: v for k, v in links.items()
            if k.startswith("/dev/disk/azure/")}


# --- disks ---------------------------------------------------------------------

def test_gen2_scsi_os_resource_data_dvd(tmp_path):
    t = Tree()
    devs = (t.scsi_disk(SCSI_CTRL % "a", 0, 0, "sda", partitions=(1, 14, 15), minor=0)
            + t.scsi_disk(SCSI_CTRL % "a", 0, 1, "sdb", partitions=(1,), minor=16)
            + t.scsi_disk(SCSI_CTRL % "a", 0, 2, "sr0", vendor="Msft    ",
                          model="Virtual DVD-ROM ", kind="cd", minor=0)
            + t.scsi_disk(SCSI_CTRL % "b", 1, 0, "sdc", partitions=(1,), minor=32)
            + t.scsi_disk(SCSI_CTRL % "b", 1, 12, "sdd", minor=48)
            + t.scsi_disk(SCSI_CTRL % "c", 2, 63, "sde", minor=64))
    res, links = run_udev(tmp_path, t, devs)
    assert azure_links(links) == {
        "os": "sda", "os-part1": "sda1", "os-part14": "sda14", "os-part15": "sda15",
        "root": "sda", "root-part1": "sda1", "root-part14": "sda14", "root-part15": "sda15",
        "resource": "sdb", "resource-part1": "sdb1",
        "data/by-lun/0": "sdc", "data/by-lun/0-part1": "sdc1", "scsi1/lun0": "sdc",
        "scsi1/lun0-part1": "sdc1",
        "data/by-lun/12": "sdd", "scsi1/lun12": "sdd",
        "data/by-lun/63": "sde", "scsi2/lun63": "sde",
    }
    assert res["sdc"]["props"]["AZURE_DISK_TYPE"] == "data"
    assert res["sdc"]["props"]["AZURE_DISK_LUN"] == "0"
    assert res["sda"]["props"]["AZURE_DISK_TYPE"] == "os"
    assert "AZURE_DISK_TYPE" not in res["sr0"]["props"]


def test_gen1_ide_os_and_resource(tmp_path):
    t = Tree()
    devs = (t.scsi_disk(GEN1_OS, 0, 0, "sda", partitions=(1,), minor=0)
            + t.scsi_disk(GEN1_RESOURCE, 1, 0, "sdb", partitions=(1,), minor=16, target=1)
            + t.scsi_disk(SCSI_CTRL % "b", 3, 0, "sdc", minor=32))
    _, links = run_udev(tmp_path, t, devs)
    assert azure_links(links) == {
        "os": "sda", "os-part1": "sda1", "root": "sda", "root-part1": "sda1",
        "resource": "sdb", "resource-part1": "sdb1",
        "data/by-lun/0": "sdc", "scsi1/lun0": "sdc"}


def test_nvme_remote_and_local(tmp_path):
    t = Tree()
    devs = (t.nvme("c05b0000-1111-2222-3333-444444444444", "c05b", 0, "MSFT NVMe Accelerator v1.0",
                   "SN: 000001", {1: (1, 15), 2: (), 5: (1,)})
            + t.nvme("9a8b0000-1111-2222-3333-444444444444", "9a8b", 1,
                     "Microsoft NVMe Direct Disk v2", "ABCDEF0123456789", {1: ()})
            + t.nvme("9a8c0000-1111-2222-3333-444444444444", "9a8c", 2,
                     "Microsoft NVMe Direct Disk", "0123456789ABCDEF", {1: (1,)}))
    res, links = run_udev(tmp_path, t, devs)
    assert azure_links(links) == {
        "os": "nvme0n1", "os-part1": "nvme0n1p1", "os-part15": "nvme0n1p15",
        "data/by-lun/0": "nvme0n2", "data/by-lun/3": "nvme0n5",
        "data/by-lun/3-part1": "nvme0n5p1",
        "local/by-serial/ABCDEF0123456789": "nvme1n1",
        "local/by-serial/0123456789ABCDEF": "nvme2n1",
        "local/by-serial/0123456789ABCDEF-part1": "nvme2n1p1",
    }
    assert res["nvme0n5"]["props"]["AZURE_DISK_LUN"] == "3"


def test_other_disks_get_no_azure_name(tmp_path):
    """A Msft Virtual Disk without Azure's VMBus controller above it (QEMU, a
    Hyper-V host's own disk on an unknown controller), another vendor's disk on
    Azure's data controller, another NVMe model: no /dev/disk/azure name."""
    t = Tree()
    qemu = t.dev("/devices/pci0000:00/0000:00:04.0/virtio1/host2/target2:0:0/2:0:0:1",
                 {"SUBSYSTEM": "scsi", "DEVTYPE": "scsi_device"},
                 {"vendor": "Msft    ", "model": "Virtual Disk    ", "type": "0"}, "sd")
    devs = (t.block(qemu, "sda", 8, 0)
            + t.scsi_disk("12345678-0000-0000-0000-000000000000", 3, 0, "sdb", minor=16)
            + t.scsi_disk(SCSI_CTRL % "b", 1, 0, "sdc", vendor="QEMU    ",
                          model="QEMU HARDDISK   ", minor=32)
            + t.nvme("c05b0000-1111-2222-3333-444444444444", "c05b", 0, "QEMU NVMe Ctrl",
                     "deadbeef", {1: ()}))
    res, links = run_udev(tmp_path, t, devs)
    assert res["sda"]["props"]["ID_MODEL"] == "Virtual_Disk"   # the match was tried
    assert azure_links(links) == {}


def test_steps_aside_for_azure_vm_utils(tmp_path):
    """azure-vm-utils' rules (80-azure-disk.rules) ran before ours and classified the
    disk: ours add nothing, not even waagent's scsi1/lunN name."""
    t = Tree()
    devs = t.scsi_disk(SCSI_CTRL % "b", 1, 0, "sdc", partitions=(1,), minor=32)
    res, links = run_udev(tmp_path, t, devs,
                          extra_rules=[("80-azure-disk.rules", STANDIN_VM_UTILS_DISK)])
    assert azure_links(links) == {"data/by-lun/0": "sdc", "data/by-lun/0-part1": "sdc1"}
    assert "AZURE_FIRSTBOOT_WA_NAME" not in res["sdc"]["props"]
    assert "AZURE_FIRSTBOOT_WA_NAME" not in res["sdc1"]["props"]


def test_disk_rules_sort_after_persistent_storage_and_azure_vm_utils():
    names = os.listdir(RULES)
    disk = [n for n in names if "disk" in n]
    assert disk and all("80-azure-disk.rules" < n for n in disk)
    assert all("60-persistent-storage.rules" < n for n in disk)


# --- accelerated networking --------------------------------------------------------

@pytest.mark.parametrize("driver", ["mlx4_core", "mlx5_core", "mana"])
def test_vf_is_unmanaged_everywhere(tmp_path, driver):
    t = Tree()
    devs = [t.netvsc(), t.vf(driver)]
    res, _ = run_udev(tmp_path, t, devs, ifupdown=True)
    vf, syn = res["eth1"], res["eth0"]
    assert vf["props"].get("ID_NET_MANAGED_BY") == "unmanaged"          # networkd >= 255
    assert vf["props"].get("AZURE_FIRSTBOOT_UNMANAGED_SRIOV") == "1"    # our .network (older networkd)
    assert vf["props"].get("NM_UNMANAGED") == "1"                       # NetworkManager
    assert "ifupdown-hotplug" not in vf["run"]                          # ifupdown's allow-hotplug
    # the synthetic NIC, same MAC address, is left to the network stack
    for k in ("ID_NET_MANAGED_BY", "NM_UNMANAGED", "AZURE_FIRSTBOOT_UNMANAGED_SRIOV"):
        assert k not in syn["props"]
    assert "ifupdown-hotplug" in syn["run"]


def test_vf_not_bonded_or_other_driver_is_left_alone(tmp_path):
    """Without IFF_SLAVE (hv_netvsc has not taken it: no transparent bond) or with
    another driver, the device is an ordinary NIC."""
    t = Tree()
    devs = [t.vf("mlx5_core", "eth1", flags="0x1003"),
            t.nic(t.dev("/devices/pci0000:00/0000:00:03.0", {"SUBSYSTEM": "pci"}, {}, "virtio-pci"),
                  "eth2", 4, "0x1803")]
    res, _ = run_udev(tmp_path, t, devs, ifupdown=True)
    for name in ("eth1", "eth2"):
        assert "AZURE_FIRSTBOOT_SRIOV_VF" not in res[name]["props"]
        assert "NM_UNMANAGED" not in res[name]["props"]
        assert "ifupdown-hotplug" in res[name]["run"]


def test_vf_without_ifupdown_keeps_its_runs(tmp_path):
    t = Tree()
    res, _ = run_udev(tmp_path, t, [t.vf("mlx5_core")], ifupdown=False)
    assert res["eth1"]["props"].get("NM_UNMANAGED") == "1"
    assert "/bin/true" not in res["eth1"]["run"]


def test_vf_with_azure_vm_utils(tmp_path):
    """azure-vm-utils marked the VF (10-azure-unmanaged-sriov.rules): ours add no
    mark of their own (its 01-azure-unmanaged-sriov.network applies, ours does not
    match), only keep ifupdown's hotplug off the VF, which azure-vm-utils does not."""
    t = Tree()
    res, _ = run_udev(tmp_path, t, [t.vf("mlx5_core")], ifupdown=True,
                      extra_rules=[("10-azure-unmanaged-sriov.rules", STANDIN_VM_UTILS_SRIOV)])
    props = res["eth1"]["props"]
    assert props["AZURE_UNMANAGED_SRIOV"] == "1"
    assert "AZURE_FIRSTBOOT_UNMANAGED_SRIOV" not in props
    assert "ifupdown-hotplug" not in res["eth1"]["run"]


def test_networkd_file_matches_what_the_rule_sets():
    net = os.path.join(TOP, "network", "01-azure-firstboot-unmanaged-sriov.network")
    with open(net) as f:
        lines = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    assert lines == ["[Match]", "Property=AZURE_FIRSTBOOT_UNMANAGED_SRIOV=1",
                     "[Link]", "Unmanaged=yes"]
    with open(os.path.join(RULES, "81-azure-firstboot-sriov.rules")) as f:
        assert 'ENV{AZURE_FIRSTBOOT_UNMANAGED_SRIOV}="1"' in f.read()
    # before the image's own files (examples/network: 09-azure-*.network) and
    # azure-vm-utils' 01-azure-unmanaged-sriov.network sorts differently but
    # matches another property
    assert os.path.basename(net) < "09-azure-primary.network"


def test_sriov_rules_sort_after_ifupdown():
    assert "80-ifupdown.rules" < "81-azure-firstboot-sriov.rules"
    assert os.path.exists(os.path.join(RULES, "81-azure-firstboot-sriov.rules"))


# --- product_uuid -------------------------------------------------------------------

@pytest.mark.parametrize("vendor,product,expected", [
    ("Microsoft Corporation", "Virtual Machine", True),
    ("QEMU", "Standard PC (Q35 + ICH9, 2009)", False),
    ("Microsoft Corporation", "Surface Laptop", False),
])
def test_product_uuid_readable_on_azure(tmp_path, vendor, product, expected):
    t = Tree()
    dmi = t.dev("/devices/virtual/dmi/id", {"SUBSYSTEM": "dmi"},
                {"sys_vendor": vendor, "product_name": product,
                 "product_uuid": "7fa8c3a5-1b2c-4d3e-9f00-0123456789ab"})
    res, _ = run_udev(tmp_path, t, [dmi])
    chmod = "/bin/chmod 0444 /sys/devices/virtual/dmi/id/product_uuid"
    assert (chmod in res["id"]["run"]) == expected


def test_udevadm_verify_where_available():
    """systemd >= 254 has `udevadm verify` (Debian 13); Debian 12's 252 does not
    (there every rules test above fails on a line udev rejects)."""
    p = subprocess.run(["udevadm", "verify", "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    if p.returncode != 0:
        pytest.skip("udevadm verify: not in this systemd")
    files = sorted(os.path.join(RULES, f) for f in os.listdir(RULES))
    p = subprocess.run(["udevadm", "verify", "--resolve-names=never"] + files,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.returncode == 0, p.stdout.decode()
