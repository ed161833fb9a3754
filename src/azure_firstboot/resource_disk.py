"""The resource (temporary) disk: format it only while it is the pristine
volume Azure provides, mount it on every boot, optionally put a swap file on it.

Not a provisioning step: it runs on every boot on Azure (its own unit,
azure-firstboot-resource-disk.service, off the path to Ready) and records
nothing for report-ready.

    gather()  reads sysfs, the disk's first bytes (and for NTFS its root
              directory), /proc/self/mountinfo and /proc/swaps;
    plan()    pure: facts + configuration -> a list of actions (printable:
              ``azure-firstboot resource-disk --dry-run``);
    apply()   runs them: mkfs.<fs>, mount, mkswap, swapon (argument lists,
              found by path, each bounded in time).

Pristine means, and nothing else is ever formatted:
  * one NTFS volume (the whole disk or its only partition) whose root
    directory holds nothing but the NTFS system files, the
    DATALOSS_WARNING_README.txt Azure puts there (required) and optionally
    "System Volume Information"; the root directory index is read here in
    pure Python (bounded: at most MAX_INDEX_NODES index blocks, every read
    inside the volume); anything it cannot read counts as "not pristine";
  * a disk with no partition table whose first MiB is all zero (an NVMe local
    disk as Azure hands it over).
"""

import os
import struct

from azure_firstboot import log

FILESYSTEMS = ("ext4", "xfs")
WARNING_FILE = "dataloss_warning_readme.txt"
# What Windows may add to an otherwise untouched volume (also allowed by cloud-init).
ALLOWED_EXTRA = ("system volume information",)
NTFS_SYSTEM = ("$attrdef", "$badclus", "$bitmap", "$boot", "$extend", "$logfile", "$mft",
               "$mftmirr", "$secure", "$upcase", "$volume", ".")
SWAP_FILE = "swapfile"
HEAD = 1024 * 1024          # bytes read from the start of the volume
MAX_INDEX_NODES = 64        # index blocks of the NTFS root directory we follow
MAX_NAMES = 4096
SCSI_CONTROLLER0 = "f8b3781a-1e82-4818-a1c3-63d806ec15bb"
NVME_LOCAL_MODELS = ("Microsoft NVMe Direct Disk",)
MKFS_TIMEOUT = 240
MOUNT_TIMEOUT = 60


class Facts(object):
    """What gather() found; plain data, so plan() is a pure function of it."""

    def __init__(self, device=None, source=None, target=None, partitions=0, content=None,
                 detail="", mounts=(), swaps=(), mount_point_busy=None, swap_file_size=None,
                 free_bytes=None, problem=None):
        self.device = device            # the disk (/dev/sdb), None: no resource disk
        self.source = source            # how it was found
        self.target = target            # the volume: the disk or its only partition
        self.partitions = partitions
        self.content = content          # ntfs-pristine, ntfs, blank, ext4, xfs, swap, unknown
        self.detail = detail
        self.mounts = list(mounts)      # mount points where the disk or a partition is mounted
        self.swaps = list(swaps)        # active swap areas (paths) from /proc/swaps
        self.mount_point_busy = mount_point_busy  # what is mounted on mount_point, if not ours
        self.swap_file_size = swap_file_size
        self.free_bytes = free_bytes
        self.problem = problem


# ------------------------------------------------------------------ values

_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MAX_SWAP = 1 << 40


def parse_size(text):
    """Swap size: 0, or a whole number with an optional unit K, M, G, T
    (powers of 1024; "MiB"/"GiB" spellings accepted; no unit: MiB) -> bytes.
    Between 1 MiB and 1 TiB, a multiple of 1 MiB.  ValueError otherwise."""
    low = text.strip().lower()
    for suffix in ("ib", "b"):
        if low.endswith(suffix) and len(low) > len(suffix) and low[-len(suffix) - 1] in _UNITS:
            low = low[:-len(suffix)]
            break
    unit = _UNITS["m"]
    if low and low[-1] in _UNITS:
        unit, low = _UNITS[low[-1]], low[:-1]
    if not low or not set(low) <= set("0123456789") or len(low) > 13:
        raise ValueError("expected 0 or a size such as 2G, 512M or 2048 (MiB)")
    value = int(low) * unit
    if value == 0:
        return 0
    if value < (1 << 20) or value > MAX_SWAP or value % (1 << 20):
        raise ValueError("must be 0 or a whole number of MiB from 1 MiB to 1 TiB")
    return value


FORBIDDEN_MOUNT_POINTS = ("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64",
                          "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp",
                          "/usr", "/var")


def check_path(text, what):
    if (not text.startswith("/") or len(text) > 200 or any(not c.isprintable() or c.isspace()
                                                           for c in text)):
        raise ValueError("expected an absolute path without blanks")
    parts = text.split("/")[1:]
    if text != "/" and (any(p in ("", ".", "..") for p in parts)):
        raise ValueError("expected a normalized path (no //, . or .., no trailing /)")
    return text


def parse_mount_point(text):
    check_path(text, "mount point")
    if text in FORBIDDEN_MOUNT_POINTS or text.startswith(("/usr/", "/etc/", "/proc/", "/sys/", "/dev/", "/boot/")):
        raise ValueError("a system directory; choose e.g. /mnt or /mnt/resource")
    return text


def parse_device(text):
    if text.lower() == "auto":
        return "auto"
    check_path(text, "device")
    if not text.startswith("/dev/"):
        raise ValueError("expected auto or a path under /dev/")
    return text


def parse_filesystem(text):
    low = text.lower()
    if low not in FILESYSTEMS:
        raise ValueError("expected one of %s" % ", ".join(FILESYSTEMS))
    return low


def human(size):
    for unit, name in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB")):
        if size >= unit and size % unit == 0:
            return "%d %s" % (size // unit, name)
    return "%d bytes" % size


# ------------------------------------------------------------------ NTFS

class NotPristine(Exception):
    pass


def _fixup(record, sector=512):
    """Apply the update sequence array of an NTFS FILE/INDX record."""
    usa_offset, usa_count = struct.unpack_from("<HH", record, 4)
    if usa_count < 1 or usa_offset + 2 * usa_count > len(record) or (usa_count - 1) * sector > len(record):
        raise NotPristine("bad update sequence")
    data = bytearray(record)
    usn = data[usa_offset:usa_offset + 2]
    for i in range(1, usa_count):
        end = i * sector
        if data[end - 2:end] != usn:
            raise NotPristine("torn record")
        data[end - 2:end] = data[usa_offset + 2 * i:usa_offset + 2 * i + 2]
    return bytes(data)


def _signed(raw):
    return int.from_bytes(raw, "little", signed=True) if raw else 0


def _runlist(data, offset):
    """NTFS mapping pairs -> [(vcn, lcn or None, length)], bounded."""
    runs, vcn, lcn = [], 0, 0
    while offset < len(data) and len(runs) < 256:
        head = data[offset]
        if head == 0:
            return runs
        nlen, noff = head & 0x0F, head >> 4
        if nlen == 0 or nlen > 8 or noff > 8 or offset + 1 + nlen + noff > len(data):
            raise NotPristine("bad run list")
        length = int.from_bytes(data[offset + 1:offset + 1 + nlen], "little")
        delta = data[offset + 1 + nlen:offset + 1 + nlen + noff]
        if noff:
            lcn += _signed(delta)
            runs.append((vcn, lcn, length))
        else:
            runs.append((vcn, None, length))
        vcn += length
        offset += 1 + nlen + noff
    raise NotPristine("bad run list")


def _entries(node, start, limit):
    """Index entries of one node (header at ``start``): yields (name,
    namespace, mft record number, child vcn or None)."""
    entries_off, total = struct.unpack_from("<II", node, start)
    pos, end = start + entries_off, min(start + total, limit)
    while pos + 16 <= end:
        ref, length, key_len, flags = struct.unpack_from("<QHHH", node, pos)
        if length < 16 or pos + length > end:
            raise NotPristine("bad index entry")
        child = struct.unpack_from("<Q", node, pos + length - 8)[0] if flags & 1 else None
        if not flags & 2:
            if key_len < 0x42 or pos + 16 + key_len > end:
                raise NotPristine("bad file name key")
            key = pos + 16
            name_len, namespace = node[key + 0x40], node[key + 0x41]
            raw = node[key + 0x42:key + 0x42 + 2 * name_len]
            yield raw.decode("utf-16-le", "replace"), namespace, ref & 0xFFFFFFFFFFFF, child
        elif child is not None:
            yield None, None, None, child
        if flags & 2:
            return
        pos += length
    raise NotPristine("index node without a last entry")


def ntfs_root_names(read, size):
    """Names in the root directory of the NTFS volume read by ``read(offset,
    length)`` (``size`` bytes long): [(name, mft record)] without DOS 8.3
    duplicates.  Raises NotPristine when anything does not add up."""
    boot = read(0, 512)
    if len(boot) < 512 or boot[3:11] != b"NTFS    " or boot[510:512] != b"\x55\xaa":
        raise NotPristine("no NTFS boot sector")
    bps = struct.unpack_from("<H", boot, 0x0B)[0]
    spc = boot[0x0D]
    if spc > 0x80:
        spc = 1 << (256 - spc)
    if bps not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1):
        raise NotPristine("odd NTFS geometry")
    cluster = bps * spc

    def record_size(value):
        value = value - 256 if value > 127 else value
        return cluster * value if value > 0 else 1 << -value

    mft_lcn = struct.unpack_from("<Q", boot, 0x30)[0]
    rec_size = record_size(boot[0x40])
    idx_size = record_size(boot[0x44])
    if not 512 <= rec_size <= 65536 or not 512 <= idx_size <= 65536:
        raise NotPristine("odd NTFS record size")
    where = mft_lcn * cluster + 5 * rec_size
    if where + rec_size > size:
        raise NotPristine("MFT outside the volume")
    record = read(where, rec_size)
    if record[:4] != b"FILE":
        raise NotPristine("no root directory record")
    record = _fixup(record, bps if bps <= 512 else 512)
    flags = struct.unpack_from("<H", record, 0x16)[0]
    if flags & 3 != 3:
        raise NotPristine("root directory record not in use")
    pos = struct.unpack_from("<H", record, 0x14)[0]
    root, alloc = None, None
    while pos + 16 <= len(record):
        kind, length = struct.unpack_from("<II", record, pos)
        if kind == 0xFFFFFFFF:
            break
        if length < 16 or pos + length > len(record):
            raise NotPristine("bad attribute")
        if kind == 0x20:
            raise NotPristine("root directory with an attribute list")
        if kind == 0x90:
            voff = struct.unpack_from("<H", record, pos + 0x14)[0]
            root = (pos + voff, pos + length)
        elif kind == 0xA0:
            if record[pos + 8] != 1:
                raise NotPristine("resident index allocation")
            alloc = _runlist(record[:pos + length], pos + struct.unpack_from("<H", record, pos + 0x20)[0])
        pos += length
    if root is None:
        raise NotPristine("no root index")
    names, todo, seen = [], [], set()

    def take(node, start, limit):
        for name, namespace, ref, child in _entries(node, start, limit):
            if child is not None:
                todo.append(child)
            if name is not None and namespace != 2:  # 2: the DOS 8.3 alias of a long name
                names.append((name, ref))
                if len(names) > MAX_NAMES:
                    raise NotPristine("too many names")

    take(record, root[0] + 0x10, root[1])
    while todo:
        vcn = todo.pop()
        if vcn in seen or len(seen) >= MAX_INDEX_NODES:
            raise NotPristine("index too large or looping")
        seen.add(vcn)
        if alloc is None:
            raise NotPristine("index node without an allocation")
        # VCNs count clusters, or 512-byte blocks when an index block is smaller than a cluster
        byte_vcn = vcn * (cluster if idx_size >= cluster else 512)
        offset = None
        for run_vcn, lcn, length in alloc:
            if lcn is not None and run_vcn * cluster <= byte_vcn < (run_vcn + length) * cluster:
                offset = lcn * cluster + byte_vcn - run_vcn * cluster
        if offset is None or offset + idx_size > size:
            raise NotPristine("index block outside the volume")
        node = read(offset, idx_size)
        if node[:4] != b"INDX":
            raise NotPristine("no index block")
        node = _fixup(node, 512)
        take(node, 0x18, len(node))
    return names


def ntfs_verdict(names):
    """(pristine?, why) for the root directory names of an NTFS volume."""
    found = {name.lower() for name, _ in names}
    for name, ref in names:
        low = name.lower()
        if low in NTFS_SYSTEM and ref < 16:
            continue
        if low == WARNING_FILE or low in ALLOWED_EXTRA:
            continue
        return False, "holds %s" % log.printable(name[:80])
    if WARNING_FILE not in found:
        return False, "no DATALOSS_WARNING_README.txt"
    return True, "only DATALOSS_WARNING_README.txt"


# ------------------------------------------------------------------ content

def classify(head, whole_disk):
    """First bytes of a volume -> its content: ext4, xfs, swap, btrfs, ntfs,
    blank (all zero; whole disks only), unknown."""
    if len(head) >= 1082 and head[1080:1082] == b"\x53\xef":
        return "ext4"
    if head[:4] == b"XFSB":
        return "xfs"
    if head[3:11] == b"NTFS    ":
        return "ntfs"
    if head[4086:4096] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return "swap"
    if head[65600:65608] == b"_BHRfS_M":
        return "btrfs"
    if whole_disk and len(head) >= HEAD and not head.strip(b"\0"):
        return "blank"
    return "unknown"


class _Volume(object):
    def __init__(self, path):
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.size = os.lseek(self.fd, 0, os.SEEK_END)

    def read(self, offset, length):
        if offset < 0 or offset + length > self.size:
            raise NotPristine("read outside the volume")
        return os.pread(self.fd, length, offset)

    def close(self):
        os.close(self.fd)


def examine(path, whole_disk):
    """(content, detail) of the volume at ``path``; ntfs-pristine when it is
    Azure's untouched NTFS volume."""
    vol = _Volume(path)
    try:
        head = vol.read(0, min(HEAD, vol.size))
        content = classify(head, whole_disk)
        if content != "ntfs":
            return content, ""
        try:
            pristine, why = ntfs_verdict(ntfs_root_names(vol.read, vol.size))
        except (NotPristine, struct.error, IndexError) as exc:
            return "ntfs", "cannot read its root directory (%s)" % exc
        return ("ntfs-pristine" if pristine else "ntfs"), why
    finally:
        vol.close()


# ------------------------------------------------------------------ finding the disk

def _read(path, limit=256):
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("ascii", "replace").strip()
    except OSError:
        return None


def is_resource_disk(vendor, model, device_id, lun):
    """Azure's resource disk among SCSI disks: Msft Virtual Disk, and either
    the Gen1 storvsc device {00000000-0001-...} or LUN 1 of the Gen2
    controller scsi0 (azure-platform-facts.md)."""
    if (vendor or "").strip() != "Msft" or (model or "").strip() != "Virtual Disk":
        return False
    ident = (device_id or "").strip("{}").lower()
    return ident.startswith("00000000-0001-") or (ident == SCSI_CONTROLLER0 and lun == 1)


def is_local_nvme(model):
    return any((model or "").strip().startswith(m) for m in NVME_LOCAL_MODELS)


def _vmbus_device_id(real, stop):
    """device_id of the VMBus device above sysfs path ``real``."""
    path = real
    for _ in range(16):
        path = os.path.dirname(path)
        if len(path) <= len(stop):
            return None
        if os.path.isfile(os.path.join(path, "device_id")) and os.path.isfile(os.path.join(path, "class_id")):
            return _read(os.path.join(path, "device_id"))
    return None


def find_disk(paths):
    """(disk name such as "sdb", how it was found) or (None, None)."""
    link = os.path.join(paths("/dev/disk/azure"), "resource")  # the link itself, not its target
    if os.path.islink(link):
        target = os.path.basename(os.readlink(link))
        if target and not os.path.exists(paths("/sys/class/block/%s/partition" % target)):
            return target, "/dev/disk/azure/resource"
    block = paths("/sys/class/block")
    try:
        names = sorted(os.listdir(block))[:4096]
    except OSError:
        return None, None
    sysroot = paths("/sys")
    for name in names:
        if not name.startswith("sd") or os.path.exists(os.path.join(block, name, "partition")):
            continue
        dev = os.path.join(block, name, "device")
        real = os.path.realpath(dev)
        scsi = os.path.basename(real).split(":")
        lun = int(scsi[3]) if len(scsi) == 4 and scsi[3].isdigit() else None
        if is_resource_disk(_read(os.path.join(dev, "vendor")), _read(os.path.join(dev, "model")),
                            _vmbus_device_id(real, sysroot), lun):
            return name, "SCSI (VMBus)"
    for name in names:
        if name.startswith("nvme") and not os.path.exists(os.path.join(block, name, "partition")):
            if is_local_nvme(_read(os.path.join(block, name, "device", "model"))):
                return name, "NVMe local disk"
    return None, None


def partitions(paths, name):
    base = paths("/sys/class/block/%s" % name)
    try:
        found = [p for p in os.listdir(base) if p.startswith(name) and
                 os.path.exists(os.path.join(base, p, "partition"))]
    except OSError:
        return []
    return sorted(found)


def _unescape(field):
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mountinfo(text):
    """/proc/self/mountinfo -> [(major:minor, mount point, source)]."""
    out = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 10 or "-" not in fields:
            continue
        sep = fields.index("-")
        out.append((fields[2], _unescape(fields[4]), _unescape(fields[sep + 2]) if sep + 2 < len(fields) else ""))
    return out


def swaps(text):
    return [_unescape(line.split()[0]) for line in text.splitlines()[1:] if line.split()]


def _text(path, limit=1 << 20):
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def _devnum(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not (st.st_mode & 0o170000 == 0o060000):
        return None
    return "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))


def gather(cfg, paths):
    """Everything plan() needs, read from the system (or under --root)."""
    configured = cfg[("resource_disk", "device")]
    mount_point = cfg[("resource_disk", "mount_point")]
    if configured == "auto":
        name, source = find_disk(paths)
        if name is None:
            return Facts()
        device = "/dev/" + name
        parts = ["/dev/" + p for p in partitions(paths, name)]
    else:
        device, source = configured, "configuration"
        real = os.path.realpath(paths(device))
        name = os.path.basename(real)
        parts = ["/dev/" + p for p in partitions(paths, name)] if paths.is_host else []
        if paths.is_host and real != device:
            device = real
        if not os.path.exists(paths(device)):
            return Facts(device=device, source=source, problem="%s does not exist" % device)
    facts = Facts(device=device, source=source, partitions=len(parts))
    facts.target = parts[0] if len(parts) == 1 else device
    mounts = mountinfo(_text(paths("/proc/self/mountinfo")))
    facts.swaps = swaps(_text(paths("/proc/swaps")))
    numbers = {_devnum(paths(d)) for d in [device] + parts} - {None}
    facts.mounts = [mp for num, mp, src in mounts if num in numbers or src in [device] + parts]
    target_num = _devnum(paths(facts.target))
    for num, mp, src in mounts:
        if mp == mount_point and num != target_num and src != facts.target:
            facts.mount_point_busy = src or num
    if any(s in [device] + parts for s in facts.swaps):
        facts.mounts.append("[swap]")
    if len(parts) > 1:
        facts.content, facts.detail = "unknown", "%d partitions" % len(parts)
        return facts
    try:
        facts.content, facts.detail = examine(paths(facts.target), not parts)
    except OSError as exc:
        facts.problem = "cannot read %s: %s" % (facts.target, exc.strerror or exc)
        return facts
    swap_path = paths(os.path.join(mount_point, SWAP_FILE))
    if mount_point in facts.mounts:
        try:
            facts.swap_file_size = os.stat(swap_path).st_size
        except OSError:
            facts.swap_file_size = None
        try:
            st = os.statvfs(paths(mount_point))
            facts.free_bytes = st.f_bavail * st.f_frsize
        except OSError:
            facts.free_bytes = None
    return facts


# ------------------------------------------------------------------ plan

def plan(facts, cfg):
    """Facts + configuration -> (actions, note).  Actions are tuples:
    ("format", volume, fs), ("mkdir", dir), ("mount", volume, dir, fs),
    ("swapfile", path, bytes), ("swapon", path).  ``note`` is the one line
    that says what is (or is not) done and why; pure."""
    mp = cfg[("resource_disk", "mount_point")]
    fs = cfg[("resource_disk", "filesystem")]
    swap = cfg[("resource_disk", "swap_size")]
    if not cfg[("resource_disk", "enabled")]:
        return [], "disabled ([resource_disk] enabled = no)"
    if facts.device is None:
        return [], "no resource disk on this VM; nothing to do"
    if facts.problem:
        return [], "resource disk %s: %s; left alone" % (facts.device, facts.problem)
    actions = []
    target = facts.target
    what = "resource disk %s (%s)" % (facts.device, facts.source)
    if facts.mounts and mp not in facts.mounts:
        return [], "%s is in use (%s); left alone" % (what, ", ".join(facts.mounts))
    if mp in facts.mounts:
        note = "%s already mounted on %s" % (what, mp)
    elif facts.mount_point_busy:
        return [], "%s: %s is already mounted on %s; left alone" % (what, facts.mount_point_busy, mp)
    elif facts.content in ("ntfs-pristine", "blank"):
        why = "blank disk" if facts.content == "blank" else "pristine NTFS, " + facts.detail
        actions += [("format", target, fs), ("mkdir", mp), ("mount", target, mp, fs)]
        note = "%s: %s: formatting %s as %s and mounting it on %s" % (what, why, target, fs, mp)
    elif facts.content in FILESYSTEMS:
        actions += [("mkdir", mp), ("mount", target, mp, facts.content)]
        note = "%s: mounting the existing %s file system of %s on %s" % (what, facts.content, target, mp)
    else:
        detail = facts.content + (": " + facts.detail if facts.detail else "")
        return [], "%s: not pristine (%s); NOT formatted, not mounted" % (what, detail)
    if swap:
        path = os.path.join(mp, SWAP_FILE)
        if path in facts.swaps:
            return actions, note + "; swap %s already active" % path
        if facts.swap_file_size != swap:
            actions.append(("swapfile", path, swap))
        actions.append(("swapon", path))
        note += "; swap file %s of %s" % (path, human(swap))
    return actions, note


def describe(action):
    kind = action[0]
    if kind == "format":
        return "mkfs.%s %s" % (action[2], action[1])
    if kind == "mkdir":
        return "mkdir -p %s" % action[1]
    if kind == "mount":
        return "mount -t %s %s %s" % (action[3], action[1], action[2])
    if kind == "swapfile":
        return "create %s (%s, mode 0600) and mkswap it" % (action[1], human(action[2]))
    return "swapon %s" % action[1]


# ------------------------------------------------------------------ apply

MKFS = {"ext4": ["mkfs.ext4", "-q", "-F", "-L", "resource"],
        "xfs": ["mkfs.xfs", "-q", "-f", "-L", "resource"]}


def apply(actions, paths, run):
    """Carry out the actions; ``run(argv, timeout)`` -> (ok, output).  Under
    --root only what stays inside the root is done (format of a file there);
    mount and swap are reported as skipped.  Returns None or the failure."""
    for action in actions:
        kind = action[0]
        if kind == "format":
            ok, out = run(MKFS[action[2]] + [paths(action[1])], MKFS_TIMEOUT)
            if not ok:
                return "mkfs.%s %s failed: %s" % (action[2], action[1], out)
            log.info("formatted %s as %s" % (action[1], action[2]))
        elif not paths.is_host:
            log.info("--root: not done: %s" % describe(action))
        elif kind == "mkdir":
            if not os.path.isdir(action[1]):
                os.makedirs(action[1], 0o755)
        elif kind == "mount":
            ok, out = run(["mount", "-t", action[3], "-o", "nodev,nosuid", action[1], action[2]],
                          MOUNT_TIMEOUT)
            if not ok:
                return "mount %s on %s failed: %s" % (action[1], action[2], out)
            log.info("mounted %s on %s" % (action[1], action[2]))
        elif kind == "swapfile":
            problem = _make_swap_file(action[1], action[2], run)
            if problem:
                return problem
        elif kind == "swapon":
            ok, out = run(["swapon", action[1]], MOUNT_TIMEOUT)
            if not ok:
                return "swapon %s failed: %s" % (action[1], out)
            log.info("swap on %s" % action[1])
    return None


def _swap_file_size(path):
    """The size of the regular file at ``path`` with a swap signature (ours,
    from an earlier boot), else None (absent, not a regular file, a symbolic
    link, or anything else: someone's data)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o170000 == 0o100000 and st.st_nlink == 1 and \
                os.pread(fd, 10, 4086) == b"SWAPSPACE2":
            return st.st_size
        return None
    finally:
        os.close(fd)


def _make_swap_file(path, size, run):
    try:
        old = _swap_file_size(path)
        if old == size:
            log.info("swap file %s (%s) kept" % (path, human(size)))
            return None
        if old is None and os.path.lexists(path):  # never replace what is not ours
            return "%s exists and is not a swap file; left alone, no swap" % path
        st = os.statvfs(os.path.dirname(path))
        if st.f_bavail * st.f_frsize + (old or 0) < size + (64 << 20):
            return "no room for a %s swap file on %s" % (human(size), os.path.dirname(path))
        if old is not None:  # ours, another size: swap_size changed
            os.unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                     0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
    except OSError as exc:
        return "cannot create the swap file %s: %s" % (path, exc.strerror or exc)
    ok, out = run(["mkswap", path], MOUNT_TIMEOUT)
    if not ok:
        return "mkswap %s failed: %s" % (path, out)
    log.info("swap file %s (%s) created" % (path, human(size)))
    return None


def main(ctx, dry_run):
    """The resource-disk command; exit code."""
    from azure_firstboot import commands

    for problem in ctx.config_problems[:20]:
        log.error(problem)
    if ctx.config_problems:
        _say("resource disk left alone: the configuration is broken")
        return 2
    if not ctx.identity.on_azure and not ctx.config[("provisioning", "assume_azure")]:
        log.info("resource-disk: not on Azure (chassis asset tag %r); nothing to do" % ctx.identity.asset_tag)
        return 0
    facts = gather(ctx.config, ctx.paths)
    actions, note = plan(facts, ctx.config)
    if dry_run:
        print(note)
        for action in actions:
            print("  " + describe(action))
        return 0
    if not actions:
        _say(note)
        return 0
    log.info(note)
    failure = apply(actions, ctx.paths, lambda argv, timeout: commands.run(argv, timeout=timeout))
    if failure:
        log.error(failure)
        log.summary("resource disk FAILED: %s" % failure)
        return 1
    log.summary("resource disk done: " + note)
    return 0


def _say(note):
    """The one line that says what was (not) done: on the console under
    systemd (journal+console), else on standard output."""
    if log._JOURNAL:
        log.summary(note)
    else:
        log.info(note)
