"""The resource disk: size/path values, the pure NTFS root-directory reader on
volumes made by ntfs-3g's mkntfs (pristine, with a user file, without the
warning file, a large root directory, damaged copies), finding the disk in a
recorded sysfs tree, the pure plan, and the command end to end under --root on
image files (formatted once, then only mounted; a disk with a user file never
formatted)."""

import hashlib
import os
import random
import shutil
import subprocess
import sys

import pytest

from azure_firstboot import config, resource_disk as rd

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(TOP, "src")
SYSPATH = "/usr/sbin:/usr/bin:/sbin:/bin"
AZURE_TAG = "7783-7084-3265-9085-8269-3286-77\n"
VM_ID = "5c9f1c56-64f7-4d55-9a0b-6c2f0e8b7a31"
HAVE_NTFS = all(shutil.which(t, path=SYSPATH) for t in ("mkntfs", "ntfscp"))
HAVE_EXT4 = shutil.which("mkfs.ext4", path=SYSPATH) is not None
needs_ntfs = pytest.mark.skipif(not HAVE_NTFS, reason="ntfs-3g (mkntfs, ntfscp) not installed")


def _tool(*argv):
    subprocess.run(list(argv), check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                   env=dict(os.environ, PATH=SYSPATH + ":" + os.environ.get("PATH", "")))


def make_ntfs(path, files=("DATALOSS_WARNING_README.txt",), size=4 << 20):
    """An NTFS volume in the file ``path`` holding ``files`` in its root."""
    with open(path, "wb") as f:
        f.truncate(size)
    _tool("mkntfs", "-F", "-Q", "-q", "-L", "Temporary Storage", path)
    src = path + ".src"
    with open(src, "w") as f:
        f.write("WARNING: THIS IS A TEMPORARY DISK.\n")
    for name in files:
        _tool("ntfscp", "-f", path, src, "/" + name)
    os.unlink(src)
    return path


def names_of(path):
    vol = rd._Volume(path)
    try:
        return rd.ntfs_root_names(vol.read, vol.size)
    finally:
        vol.close()


# ------------------------------------------------------------------ values

@pytest.mark.parametrize("text,value", [
    ("0", 0), ("2G", 2 << 30), ("512M", 512 << 20), ("512MiB", 512 << 20), ("2048", 2048 << 20),
    ("1g", 1 << 30), ("1T", 1 << 40), ("1024K", 1 << 20), ("4GB", 4 << 30)])
def test_swap_size_values(text, value):
    assert rd.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1.5G", "2X", "G", "100K", "2T", "0x10", "١٢", "1 G", "99999999999999M"])
def test_swap_size_rejected(text):
    with pytest.raises(ValueError):
        rd.parse_size(text)


def test_configuration_keys_and_errors():
    values, problems = config.parse_all(
        "[resource_disk]\nmount_point = /mnt/resource\nfilesystem = XFS\nswap_size = 2G\ndevice = /dev/sdb\n")
    assert problems == []
    assert values[("resource_disk", "mount_point")] == "/mnt/resource"
    assert values[("resource_disk", "filesystem")] == "xfs"
    assert values[("resource_disk", "swap_size")] == 2 << 30
    assert values[("resource_disk", "device")] == "/dev/sdb"
    for line in ("mount_point = /", "mount_point = /usr/x", "mount_point = mnt", "mount_point = /mnt/../etc",
                 "mount_point = /mnt/a b", "filesystem = ntfs", "swap_size = lots", "device = sdb",
                 "device = /etc/passwd", "enabled = maybe"):
        _, problems = config.parse_all("[resource_disk]\n%s\n" % line)
        assert len(problems) == 1 and "resource_disk." in problems[0], line


# ------------------------------------------------------------------ NTFS

@needs_ntfs
def test_pristine_ntfs_volume(tmp_path):
    path = make_ntfs(str(tmp_path / "disk"))
    names = names_of(path)
    assert "DATALOSS_WARNING_README.txt" in [n for n, _ in names]
    assert "$MFT" in [n for n, _ in names]
    assert rd.ntfs_verdict(names) == (True, "only DATALOSS_WARNING_README.txt")
    assert rd.examine(path, True) == ("ntfs-pristine", "only DATALOSS_WARNING_README.txt")


@needs_ntfs
def test_ntfs_with_a_user_file_or_without_the_warning_is_not_pristine(tmp_path):
    path = make_ntfs(str(tmp_path / "user"), ("DATALOSS_WARNING_README.txt", "important.db"))
    assert rd.examine(path, True) == ("ntfs", "holds important.db")
    path = make_ntfs(str(tmp_path / "empty"), ())
    assert rd.examine(path, True) == ("ntfs", "no DATALOSS_WARNING_README.txt")
    # a long name gets a DOS 8.3 alias in some tools; a name that only differs in case counts
    path = make_ntfs(str(tmp_path / "case"), ("dataloss_warning_readme.txt",))
    assert rd.examine(path, True)[0] == "ntfs-pristine"


@needs_ntfs
def test_large_root_directory_is_read_through_its_index_blocks(tmp_path):
    files = ["DATALOSS_WARNING_README.txt"] + ["file%03d.txt" % i for i in range(60)]
    path = make_ntfs(str(tmp_path / "many"), files)
    found = {n for n, _ in names_of(path)}
    assert set(files) <= found
    assert rd.examine(path, True)[0] == "ntfs"


@needs_ntfs
def test_damaged_ntfs_is_never_pristine_and_never_raises(tmp_path):
    good = make_ntfs(str(tmp_path / "good"))
    with open(good, "rb") as f:
        data = bytearray(f.read())
    vol = rd._Volume(good)
    record_at = None
    try:
        boot = vol.read(0, 512)
    finally:
        vol.close()
    import struct
    cluster = struct.unpack_from("<H", boot, 11)[0] * boot[13]
    record_at = struct.unpack_from("<Q", boot, 0x30)[0] * cluster + 5 * 1024
    rng = random.Random(19)
    bad = str(tmp_path / "bad")
    for i in range(120):
        copy = bytearray(data)
        # flip bytes in the boot sector or the root directory's MFT record
        base = 0 if i % 3 == 0 else record_at
        for _ in range(rng.randint(1, 4)):
            copy[base + rng.randrange(1024 if base else 512)] = rng.randrange(256)
        with open(bad, "wb") as f:
            f.write(copy)
        content, detail = rd.examine(bad, True)
        assert content in ("ntfs", "ntfs-pristine", "unknown", "blank"), content
    # truncated volume: the MFT is past its end
    with open(bad, "wb") as f:
        f.write(data[:8192])
    assert rd.examine(bad, True)[0] == "ntfs"


def test_classify():
    zero = bytes(rd.HEAD)
    assert rd.classify(zero, True) == "blank"
    assert rd.classify(zero, False) == "unknown"  # a blank partition is not Azure's disk
    assert rd.classify(zero[:1080] + b"\x53\xef" + zero[1082:], True) == "ext4"
    assert rd.classify(b"XFSB" + zero[4:], True) == "xfs"
    assert rd.classify(zero[:4086] + b"SWAPSPACE2" + zero[4096:], True) == "swap"
    assert rd.classify(b"\1" + zero[1:], True) == "unknown"
    assert rd.classify(zero[:1000], True) == "unknown"  # too short to tell: not blank


# ------------------------------------------------------------------ finding it

def _sysfs_disk(root, name, devpath, attrs):
    """/sys/devices/<devpath>/block/<name> with the SCSI/NVMe ``attrs`` on its
    device, and the /sys/class/block/<name> link, as the kernel lays them out."""
    real = os.path.join(root, "sys/devices", devpath)
    os.makedirs(os.path.join(real, "block", name), exist_ok=True)
    for key, value in attrs.items():
        with open(os.path.join(real, key), "w") as f:
            f.write(value + "\n")
    os.makedirs(os.path.join(root, "sys/class/block"), exist_ok=True)
    os.symlink(os.path.relpath(os.path.join(real, "block", name), os.path.join(root, "sys/class/block")),
               os.path.join(root, "sys/class/block", name))
    os.symlink(os.path.relpath(real, os.path.join(real, "block", name)), os.path.join(real, "block", name, "device"))


def _vmbus(root, guid, class_id):
    d = os.path.join(root, "sys/devices/LNXSYSTM:00/VMBUS:00", guid)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "device_id"), "w") as f:
        f.write("{%s}\n" % guid)
    with open(os.path.join(d, "class_id"), "w") as f:
        f.write("{ba6163d9-04a1-4d29-b605-72e2ffb1dc7f}\n")
    return "LNXSYSTM:00/VMBUS:00/" + guid


MSFT = {"vendor": "Msft    ", "model": "Virtual Disk    "}


def test_find_disk_gen1_gen2_nvme_and_none(tmp_path):
    from azure_firstboot.state import Paths

    gen1 = str(tmp_path / "gen1")
    os_ctl = _vmbus(gen1, "00000000-0000-8899-0000-000000000000", "")
    res_ctl = _vmbus(gen1, "00000000-0001-8899-0000-000000000000", "")
    _sysfs_disk(gen1, "sda", os_ctl + "/host0/target0:0:0/0:0:0:0", MSFT)
    _sysfs_disk(gen1, "sdb", res_ctl + "/host1/target1:0:1/1:0:1:0", MSFT)
    assert rd.find_disk(Paths(gen1)) == ("sdb", "SCSI (VMBus)")

    gen2 = str(tmp_path / "gen2")
    ctl = _vmbus(gen2, rd.SCSI_CONTROLLER0, "")
    data = _vmbus(gen2, "f8b3781b-1e82-4818-a1c3-63d806ec15bb", "")
    _sysfs_disk(gen2, "sda", ctl + "/host0/target0:0:0/0:0:0:0", MSFT)
    _sysfs_disk(gen2, "sdc", data + "/host1/target1:0:0/1:0:0:1", MSFT)  # data disk LUN 1: not it
    _sysfs_disk(gen2, "sdb", ctl + "/host0/target0:0:0/0:0:0:1", MSFT)
    os.makedirs(os.path.join(gen2, "sys/class/block/sdb1"))
    open(os.path.join(gen2, "sys/class/block/sdb1/partition"), "w").close()
    assert rd.find_disk(Paths(gen2)) == ("sdb", "SCSI (VMBus)")

    nvme = str(tmp_path / "nvme")
    _sysfs_disk(nvme, "nvme0n1", "pci0000:00/0000:00:01.0/nvme/nvme0", {"model": "MSFT NVMe Accelerator v1.0"})
    _sysfs_disk(nvme, "nvme1n1", "pci0000:00/0000:00:02.0/nvme/nvme1", {"model": "Microsoft NVMe Direct Disk v2"})
    assert rd.find_disk(Paths(nvme)) == ("nvme1n1", "NVMe local disk")

    none = str(tmp_path / "none")
    _sysfs_disk(none, "sda", ctl.replace(rd.SCSI_CONTROLLER0, "x") + "/host0/target0:0:0/0:0:0:1",
                {"vendor": "QEMU", "model": "QEMU HARDDISK"})
    assert rd.find_disk(Paths(none)) == (None, None)

    link = str(tmp_path / "link")
    os.makedirs(os.path.join(link, "dev/disk/azure"))
    os.symlink("../../sdd", os.path.join(link, "dev/disk/azure/resource"))
    assert rd.find_disk(Paths(link)) == ("sdd", "/dev/disk/azure/resource")


def test_is_resource_disk():
    assert rd.is_resource_disk("Msft", "Virtual Disk", "{00000000-0001-8899-0000-000000000000}", 0)
    assert not rd.is_resource_disk("Msft", "Virtual Disk", "{00000000-0000-8899-0000-000000000000}", 0)
    assert rd.is_resource_disk("Msft", "Virtual Disk", "{f8b3781a-1e82-4818-a1c3-63d806ec15bb}", 1)
    assert not rd.is_resource_disk("Msft", "Virtual Disk", "{f8b3781a-1e82-4818-a1c3-63d806ec15bb}", 0)
    assert not rd.is_resource_disk("Msft", "Virtual Disk", "{f8b3781b-1e82-4818-a1c3-63d806ec15bb}", 1)
    assert not rd.is_resource_disk("QEMU", "Virtual Disk", "{00000000-0001-8899-0000-000000000000}", 0)
    assert not rd.is_resource_disk(None, None, None, None)


# ------------------------------------------------------------------ plan

CFG = config.defaults()


def cfg(**kw):
    c = dict(CFG)
    for key, value in kw.items():
        c[("resource_disk", key)] = value
    return c


def facts(**kw):
    base = dict(device="/dev/sdb", source="SCSI (VMBus)", target="/dev/sdb1", partitions=1,
                content="ntfs-pristine", detail="only DATALOSS_WARNING_README.txt")
    base.update(kw)
    return rd.Facts(**base)


def test_plan_formats_only_pristine_disks():
    actions, note = rd.plan(facts(), CFG)
    assert actions == [("format", "/dev/sdb1", "ext4"), ("mkdir", "/mnt"), ("mount", "/dev/sdb1", "/mnt", "ext4")]
    assert "pristine NTFS" in note and "formatting /dev/sdb1 as ext4" in note
    actions, _ = rd.plan(facts(device="/dev/nvme0n1", target="/dev/nvme0n1", partitions=0, content="blank"),
                         cfg(filesystem="xfs", mount_point="/mnt/resource"))
    assert actions[0] == ("format", "/dev/nvme0n1", "xfs") and actions[-1][2] == "/mnt/resource"
    # a later boot: the file system we made is only mounted
    actions, note = rd.plan(facts(content="ext4", detail=""), CFG)
    assert actions == [("mkdir", "/mnt"), ("mount", "/dev/sdb1", "/mnt", "ext4")]
    assert "existing ext4" in note
    # an xfs made earlier is mounted as xfs even when the configuration now says ext4
    assert rd.plan(facts(content="xfs"), CFG)[0][-1] == ("mount", "/dev/sdb1", "/mnt", "xfs")
    for content, detail in (("ntfs", "holds important.db"), ("ntfs", "cannot read its root directory (x)"),
                            ("unknown", ""), ("swap", ""), ("btrfs", ""), ("unknown", "2 partitions")):
        actions, note = rd.plan(facts(content=content, detail=detail), CFG)
        assert actions == [] and "NOT formatted" in note and content in note, note


def test_plan_leaves_disks_in_use_alone():
    assert rd.plan(facts(mounts=["/data"]), CFG)[0] == []
    assert rd.plan(facts(mounts=["[swap]"]), CFG)[0] == []
    assert rd.plan(facts(mount_point_busy="/dev/sdc1"), CFG)[0] == []
    actions, note = rd.plan(facts(content="ext4", mounts=["/mnt"]), CFG)
    assert actions == [] and "already mounted" in note


def test_plan_nothing_to_do():
    assert rd.plan(rd.Facts(), CFG) == ([], "no resource disk on this VM; nothing to do")
    assert rd.plan(facts(), cfg(enabled=False))[0] == []
    assert rd.plan(facts(problem="/dev/sdx does not exist"), CFG)[0] == []


def test_plan_swap():
    two = 2 << 30
    actions, note = rd.plan(facts(), cfg(swap_size=two))
    assert actions[-2:] == [("swapfile", "/mnt/swapfile", two), ("swapon", "/mnt/swapfile")]
    assert "swap file /mnt/swapfile of 2 GiB" in note
    # mounted already, the file has the right size: only swapon
    actions, _ = rd.plan(facts(content="ext4", mounts=["/mnt"], swap_file_size=two), cfg(swap_size=two))
    assert actions == [("swapon", "/mnt/swapfile")]
    actions, note = rd.plan(facts(content="ext4", mounts=["/mnt"], swaps=["/mnt/swapfile"]), cfg(swap_size=two))
    assert actions == [] and "already active" in note
    # not pristine: no swap either
    assert rd.plan(facts(content="ntfs"), cfg(swap_size=two))[0] == []
    for a in rd.plan(facts(), cfg(swap_size=two))[0]:
        assert rd.describe(a)


def test_mountinfo_and_swaps_parsing():
    text = ("22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
            "30 22 8:17 / /mnt\\040x rw shared:2 - ext4 /dev/sdb1 rw\n"
            "garbage\n")
    assert rd.mountinfo(text) == [("254:0", "/", "/dev/vda"), ("8:17", "/mnt x", "/dev/sdb1")]
    assert rd.swaps("Filename Type Size Used Priority\n/mnt/swapfile file 1024 0 -2\n") == ["/mnt/swapfile"]


# ------------------------------------------------------------------ end to end under --root

def scratch(root, device_file=None, tag=AZURE_TAG, extra=""):
    for rel, text in (("sys/class/dmi/id/chassis_asset_tag", tag),
                      ("sys/class/dmi/id/product_uuid", VM_ID + "\n"),
                      ("etc/azure-firstboot/azure-firstboot.conf",
                       "[resource_disk]\ndevice = /dev/sdb\n" + extra)):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    os.makedirs(os.path.join(root, "dev"), exist_ok=True)
    return os.path.join(root, "dev/sdb")


def agent(root, *args):
    proc = subprocess.run([sys.executable, "-m", "azure_firstboot", "--root", root, "resource-disk"] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=SRC, PATH=SYSPATH + ":" + os.environ.get("PATH", "")))
    return proc.returncode, proc.stdout, proc.stdout + proc.stderr


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@needs_ntfs
@pytest.mark.skipif(not HAVE_EXT4, reason="mkfs.ext4 not installed")
def test_e2e_formats_pristine_once_then_mounts(tmp_path):
    root = str(tmp_path / "vm")
    disk = scratch(root)
    make_ntfs(disk)
    code, out, err = agent(root, "--dry-run")
    assert code == 0 and "pristine NTFS" in out and "mkfs.ext4 /dev/sdb" in out, (out, err)
    assert rd.examine(disk, True)[0] == "ntfs-pristine"  # --dry-run changed nothing
    code, out, err = agent(root)
    assert code == 0, err
    assert "formatted /dev/sdb as ext4" in err and "--root: not done: mount -t ext4 /dev/sdb /mnt" in err
    assert rd.examine(disk, True)[0] == "ext4"
    # the next boot: the file system is kept, only mounted
    before = digest(disk)
    code, out, err = agent(root)
    assert code == 0 and "mounting the existing ext4 file system" in err and "formatted" not in err, err
    assert digest(disk) == before
    # a redeploy: a fresh pristine disk for the same VM id is formatted again
    os.unlink(disk)
    make_ntfs(disk)
    code, out, err = agent(root)
    assert code == 0 and "formatted /dev/sdb as ext4" in err, err


@needs_ntfs
def test_e2e_never_formats_a_disk_with_data(tmp_path):
    root = str(tmp_path / "vm")
    disk = scratch(root)
    make_ntfs(disk, ("DATALOSS_WARNING_README.txt", "important.db"))
    before = digest(disk)
    code, out, err = agent(root)
    assert code == 0, err
    lines = [l for l in err.splitlines() if "NOT formatted" in l]
    assert len(lines) == 1 and "holds important.db" in lines[0], err
    assert digest(disk) == before
    # random data, no partition table: not formatted either
    with open(disk, "wb") as f:
        f.write(b"\1" * (2 << 20))
    assert agent(root)[0] == 0 and digest(disk) == hashlib.sha256(b"\1" * (2 << 20)).hexdigest()


def test_e2e_blank_disk_nothing_off_azure_and_no_disk(tmp_path):
    root = str(tmp_path / "vm")
    disk = scratch(root, tag="not azure\n")
    with open(disk, "wb") as f:
        f.truncate(8 << 20)
    code, out, err = agent(root)
    assert code == 0 and "not on Azure" in err
    assert not open(disk, "rb").read().strip(b"\0")
    scratch(root)
    code, out, err = agent(root, "--dry-run")
    assert code == 0 and "blank disk" in out
    os.unlink(disk)
    code, out, err = agent(root)
    assert code == 0 and "/dev/sdb does not exist" in err
    # auto: no resource disk in this (empty) sysfs
    scratch(root, extra="")
    with open(os.path.join(root, "etc/azure-firstboot/azure-firstboot.conf"), "w") as f:
        f.write("[resource_disk]\nswap_size = 1G\n")
    code, out, err = agent(root)
    assert code == 0 and "no resource disk on this VM" in err


def test_e2e_broken_configuration_leaves_the_disk_alone(tmp_path):
    root = str(tmp_path / "vm")
    disk = scratch(root, extra="filesystem = ntfs\n")
    with open(disk, "wb") as f:
        f.truncate(4 << 20)
    code, out, err = agent(root)
    assert code == 2 and "resource_disk.filesystem" in err
    assert not open(disk, "rb").read().strip(b"\0")


def test_swap_file_never_replaces_what_is_not_ours(tmp_path):
    from azure_firstboot import resource_disk as rd
    ran = []

    def run(argv, timeout):
        ran.append(argv)
        with open(argv[-1], "r+b") as f:  # what mkswap leaves: the signature
            f.seek(4086)
            f.write(b"SWAPSPACE2")
        return True, ""

    size = 1 << 20
    path = str(tmp_path / "swapfile")
    assert rd._make_swap_file(path, size, run) is None and len(ran) == 1
    assert os.path.getsize(path) == size
    assert rd._make_swap_file(path, size, run) is None and len(ran) == 1      # kept
    assert rd._make_swap_file(path, 2 * size, run) is None and len(ran) == 2  # ours, resized
    assert os.path.getsize(path) == 2 * size
    theirs = str(tmp_path / "data")
    with open(theirs, "wb") as f:
        f.write(b"someone's data")
    problem = rd._make_swap_file(theirs, size, run)
    assert "exists and is not a swap file" in problem and len(ran) == 2
    with open(theirs, "rb") as f:
        assert f.read() == b"someone's data"
    link = str(tmp_path / "link")
    os.symlink(path, link)
    assert "exists and is not a swap file" in rd._make_swap_file(link, 2 * size, run)
