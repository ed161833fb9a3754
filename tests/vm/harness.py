"""QEMU boot harness for azure-firstboot (reusable library: tests/vm, bench).

Pieces, each usable on its own:

* ``base_image()``   -- debootstrap Debian 12 root tree, cached under $CACHE_DIR/vm keyed
                        by a hash of build-base.sh + base-packages (cold ~2 min, then free).
* ``build_image()``  -- a bootable raw ext4 disk + kernel + initrd from the base tree plus
                        a variant (networkd | ifupdown), the test instrumentation
                        (vm-report.service), our .deb installed with dpkg in a chroot and
                        ``azure-firstboot deprovision`` run in it, exactly as an image
                        builder would. Cached keyed by all of its inputs (~15 s cold).
* ``Fabric``         -- one fabric emulator process (tests/fabric_emulator.py) per boot,
                        optionally inside a network namespace.
* ``boot()``         -- one QEMU/TCG boot of an image on a per-boot qcow2 overlay, with the
                        real Azure addresses led to the emulator by guestfwd, SMBIOS VM id
                        and asset tag, a pcap of the NIC, a serial log, the guest's JSON
                        report (written by vm-report to a second raw disk) and a hard timeout.
* ``dhcp_packets()`` -- DHCP packets (type, option 12 host name) parsed from a pcap.
* ``health_posts()``, ``accepted_ready()``, ``timeline()`` -- results from the emulator's
                        records: boot -> first DHCP ACK -> accepted Ready (seconds from QEMU
                        start; the emulator's record times are offset by ``Fabric.t0_wall``,
                        taken when its ready file appears, so at most ~50 ms late), and the
                        time each of our units spent (from the guest report).
* ``Netns``          -- a network namespace with a tap device and dnsmasq (DHCP option 245).

Networking facts (QEMU 7.2, checked on this machine):
* ``guestfwd`` addresses must lie inside ``net=`` (else "Conflicting/invalid host:port in
  guest forwarding rule"), so ``net=168.0.0.0/7`` covers 168.63.129.16 and 169.254.169.254.
* Two plain ``guestfwd=tcp:IP:80-tcp:HOST:PORT`` rules collide (both create the chardev
  "guestfwd.tcp.80": "Could not open guest forwarding device"), and a tcp: target is one
  connection opened at QEMU start; ``-cmd:socat - TCP:127.0.0.1:PORT`` starts one socat per
  guest connection, which is what HTTP needs.
* With ``restrict=on`` QEMU's DHCP offers no router. The lease's /7 netmask alone makes both
  addresses on-link; the base image also carries on-link host routes (networkd [Route]
  Scope=link) so it does not depend on the subnet size.
"""

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuidlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EMULATOR = os.path.join(REPO, "tests", "fabric_emulator.py")
ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
WIRESERVER_IP = "168.63.129.16"
IMDS_IP = "169.254.169.254"
UNITS = ("azure-firstboot-network-wait.service", "azure-firstboot-hostname.service",
         "azure-firstboot-user.service",
         "azure-firstboot-report-ready.service")
# Bump when the image layer recipe in build_image() changes (part of its cache key).
LAYER_VERSION = "4"
DEFAULT_APPEND = "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1"
SYSPATH = "/usr/sbin:/usr/bin:/sbin:/bin"

_log_lock = threading.Lock()


def log(msg):
    with _log_lock:
        sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
        sys.stderr.flush()


def cache_root():
    d = os.path.join(os.environ.get("CACHE_DIR") or "/var/cache/azure-firstboot-test", "vm")
    os.makedirs(d, exist_ok=True)
    return d


def _hash(*parts):
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, str):
            p = p.encode()
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def _file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _run(cmd, logf=None, check=True, env=None, **kw):
    """Run a command (argv list, never a shell string); output to logf or captured."""
    e = dict(os.environ, PATH=SYSPATH + ":" + os.environ.get("PATH", ""), LC_ALL="C",
             DEBIAN_FRONTEND="noninteractive")
    if env:
        e.update(env)
    if logf is not None:
        logf.write("$ %s\n" % " ".join(cmd))
        logf.flush()
        p = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=e, **kw)
    else:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=e, **kw)
    if check and p.returncode != 0:
        out = getattr(p, "stdout", None)
        raise RuntimeError("command failed (%d): %s%s" % (
            p.returncode, " ".join(cmd),
            ("\n" + out.decode("utf-8", "replace")[-3000:]) if out else
            (" (see %s)" % logf.name if logf is not None else "")))
    return p


@contextlib.contextmanager
def _locked(name):
    path = os.path.join(cache_root(), name + ".lock")
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def host_mirror():
    """The Debian mirror configured on this host (first bookworm, non-security URI)."""
    if os.environ.get("VM_MIRROR"):
        return os.environ["VM_MIRROR"]
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            text = open(path).read()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and "bookworm" in suites.group(1).split() \
                    and "security" not in uris.group(1):
                return uris.group(1).rstrip("/")
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in lines:
            f = line.split("#")[0].split()
            if len(f) >= 3 and f[0] == "deb":
                uri_i = 2 if f[1].startswith("[") else 1
                if len(f) > uri_i + 1 and f[uri_i + 1] == "bookworm":
                    return f[uri_i].rstrip("/")
    return "http://deb.debian.org/debian"


# --------------------------------------------------------------------------- images

class Base(object):
    def __init__(self, key, path):
        self.key = key
        self.path = path
        self.root = os.path.join(path, "root")


def base_key(suite="bookworm", extra=()):
    parts = [_file_bytes(os.path.join(HERE, "build-base.sh")),
             _file_bytes(os.path.join(HERE, "base-packages")), suite]
    if extra:
        parts.append(",".join(sorted(extra)))
    return _hash(*parts)


def base_extra(suite="bookworm", variant="networkd", packages=()):
    """Packages a base gets on top of base-packages: network-manager for the
    NetworkManager variant; GRUB's EFI images in the Debian 13 base (its UEFI disk);
    ``packages`` (e.g. azure-vm-utils for scenario a2 and tests/pkg/test_udev_debian13.py).
    Bases are shared by every image built on them (one debootstrap each)."""
    extra = list(packages)
    if variant == "nm":
        extra.append("network-manager")
    if variant == "selinux":  # Debian's SELinux: the reference policy, enforcing (scenario se1)
        extra += ["selinux-basics", "selinux-policy-default"]
    if suite == "trixie":
        extra.append("grub-efi-amd64-bin")
    return tuple(extra)


def base_image(suite="bookworm", extra=()):
    """The cached debootstrap tree (built on first use; ~1.5-2 min)."""
    key = base_key(suite, extra)
    path = os.path.join(cache_root(), "base-" + key)
    if os.path.exists(os.path.join(path, "done")):
        return _base_used(Base(key, path))
    with _locked("base-" + key):
        if os.path.exists(os.path.join(path, "done")):
            return _base_used(Base(key, path))
        tmp = path + ".tmp"
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
        mirror = host_mirror()
        log("building base image %s (debootstrap %s%s from %s) ..." % (
            key, suite, " + " + ",".join(extra) if extra else "", mirror))
        t0 = time.time()
        with open(os.path.join(tmp, "build.log"), "w") as lf:
            for attempt in (1, 2):  # one retry: a mirror hiccup should not fail CI
                try:
                    _run(["bash", os.path.join(HERE, "build-base.sh"), tmp, mirror, suite,
                          ",".join(extra)], logf=lf)
                    break
                except RuntimeError:
                    if attempt == 2:
                        raise
                    log("base image build failed, retrying once (see %s)" % lf.name)
                    shutil.rmtree(os.path.join(tmp, "root"), ignore_errors=True)
        with open(os.path.join(tmp, "done"), "w") as f:
            f.write("%.1f\n" % (time.time() - t0))
        if os.path.exists(path):
            shutil.rmtree(path)
        os.rename(tmp, path)
        log("base image built in %.0f s" % (time.time() - t0))
        # old bases are dead weight (~650 MB each); keep those used in the last 2 h,
        # a concurrent run (bench) may still copy one
        for old in glob.glob(os.path.join(cache_root(), "base-*")):
            if old == path or old.endswith(".lock") or old.endswith(".tmp"):
                continue
            try:
                age = time.time() - max(os.path.getmtime(os.path.join(old, n))
                                        for n in ("done", "used") if
                                        os.path.exists(os.path.join(old, n)))
            except (OSError, ValueError):
                age = 1e9
            if age > 7200:
                shutil.rmtree(old, ignore_errors=True)
    return _base_used(Base(key, path))


def _base_used(base):
    with open(os.path.join(base.path, "used"), "w") as f:
        f.write("%d\n" % time.time())
    return base


class Image(object):
    """A bootable disk (raw or qcow2) with optional kernel/initrd for direct boot."""

    def __init__(self, disk, kernel=None, initrd=None, fmt=None, append=DEFAULT_APPEND,
                 instrumented=True, name="image"):
        self.disk = os.path.abspath(disk)
        self.kernel = kernel
        self.initrd = initrd
        self.fmt = fmt or _disk_format(disk)
        self.append = append
        self.instrumented = instrumented  # has vm-report.service (powers off by itself)
        self.name = name

    def __repr__(self):
        return "Image(%s)" % self.disk


def _disk_format(path):
    """qemu-img's idea of the format (raw, qcow2, vpc = Azure's fixed VHD, vmdk, ...)."""
    p = subprocess.run(["qemu-img", "info", "--output=json", path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise RuntimeError("qemu-img info %s: %s" % (path, p.stdout.decode(errors="replace")))
    fmt = json.loads(p.stdout.decode())["format"]
    if fmt == "raw":
        # a fixed VHD (what Azure takes) is raw data + a 512-byte footer; qemu-img probes
        # only the start, so it says raw: look for the footer's cookie
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 512))
            if f.read(8) == b"conectix":
                fmt = "vpc"
    return fmt


def find_deb():
    """dist/azure-firstboot_<ver>_all.deb, the newest one (None if not built)."""
    debs = sorted(glob.glob(os.path.join(REPO, "dist", "azure-firstboot_*_all.deb")),
                  key=os.path.getmtime)
    return debs[-1] if debs else None


def _chroot(root, argv, lf, check=True):
    return _run(["chroot", root, "/usr/bin/env", "-i", "PATH=" + SYSPATH, "LC_ALL=C",
                 "DEBIAN_FRONTEND=noninteractive", "HOME=/root"] + list(argv),
                logf=lf, check=check)


DEPROVISION_ARGS = ("--machine-id", "--ssh-host-keys", "--hostname")


def build_image(variant="networkd", deb=None, deprovision=DEPROVISION_ARGS,
                customize=None, tag="", layout="whole", instrument=True, suite="bookworm",
                key_files=(), packages=()):
    """Bootable image = base tree + variant + vm-report + deb (dpkg -i) + deprovision.

    variant: "networkd" (systemd-networkd DHCP), "ifupdown" (ifupdown + ISC dhclient) or
    "nm" (NetworkManager with its internal DHCP client).
    suite: "bookworm" (Debian 12) or "trixie" (Debian 13).
    deb: path of the .deb to install (None: image without the agent).
    deprovision: argv after ``azure-firstboot deprovision`` (None: skip).
    customize: optional callable(root, logfile) run last (bench variants); pass a
    distinct ``tag`` with it, as the callable is not part of the cache key.
    key_files: files whose bytes are part of the cache key (what customize uses).
    packages: more Debian packages in the base (a base of their own; its key is in ours).
    layout: "whole" (ext4 on the whole disk, booted with -kernel/-initrd, root=/dev/vda)
    or "mbr-grub" (MBR partition + GRUB in the MBR gap, boots through the BIOS like an
    image builder's image; root=/dev/vda1) or "gpt-efi" (GPT, an EFI system partition
    with GRUB's EFI image at the removable-media path, ext4 root; boots through UEFI
    firmware (OVMF); root=/dev/vda2; needs a base with grub-efi-amd64-bin: trixie).
    instrument: install vm-report.service (the VM then reports and powers off by itself).
    """
    base = base_image(suite, base_extra(suite, variant, packages))
    guest = [_file_bytes(os.path.join(HERE, "guest", n)) for n in sorted(os.listdir(
        os.path.join(HERE, "guest")))]
    key = _hash(base.key, LAYER_VERSION, variant, _file_bytes(deb) if deb else "nodeb",
                json.dumps(list(deprovision) if deprovision is not None else None),
                tag, _file_bytes(os.path.abspath(__file__)), layout, str(instrument), suite,
                *(guest + [_file_bytes(f) for f in key_files]))
    if layout in ("mbr-grub", "gpt-efi"):
        tag = (tag + "-" if tag else "") + {"mbr-grub": "grub", "gpt-efi": "efi"}[layout]
    if suite != "bookworm":
        tag = suite + ("-" + tag if tag else "")
    name = "img-%s-%s" % (variant + ("-" + tag if tag else ""), key)
    path = os.path.join(cache_root(), name)
    img = Image(os.path.join(path, "disk.raw"), os.path.join(path, "vmlinuz"),
                os.path.join(path, "initrd.img"), fmt="raw", name=name, instrumented=instrument)
    if layout in ("mbr-grub", "gpt-efi"):
        img.kernel = img.initrd = None
    if os.path.exists(os.path.join(path, "done")):
        return _used(img)
    with _locked(name):
        if os.path.exists(os.path.join(path, "done")):
            return _used(img)
        t0 = time.time()
        tmp = path + ".tmp"
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
        root = os.path.join(tmp, "root")
        with open(os.path.join(tmp, "build.log"), "w") as lf:
            _run(["cp", "-a", "--reflink=auto", base.root, root], logf=lf)
            _variant(root, variant, lf)
            if layout == "whole":  # GRUB only where it boots the disk
                _chroot(root, ["dpkg", "--purge", "grub-efi-amd64-unsigned",
                               "grub-efi-amd64-bin", "grub-pc-bin", "grub-common"], lf)
            if instrument:  # test-only: report + power off
                _instrument(root, lf)
            if deb:
                # exactly what an image builder does: dpkg -i in the image's chroot
                dst = os.path.join(root, "tmp", os.path.basename(deb))
                shutil.copy(deb, dst)
                _chroot(root, ["dpkg", "-i", "/tmp/" + os.path.basename(deb)], lf)
                os.unlink(dst)
                if deprovision is not None:
                    _chroot(root, ["azure-firstboot", "deprovision"] + list(deprovision), lf)
            if customize:
                customize(root, lf)
            if variant == "selinux":
                _selinux_label(root, lf)
            try:
                with open(os.path.join(root, "etc/hostname")) as f:
                    etc_hostname = f.read().strip()
            except OSError:
                etc_hostname = ""
            with open(os.path.join(tmp, "etc_hostname"), "w") as f:
                f.write(etc_hostname + "\n")
            # kernel + initrd out of the image for -kernel/-initrd boot
            for link, out in (("vmlinuz", "vmlinuz"), ("initrd.img", "initrd.img")):
                src = os.path.join(root, link)
                target = os.readlink(src) if os.path.islink(src) else src
                if not os.path.isabs(target):
                    target = os.path.join(root, target)
                else:
                    target = os.path.join(root, target.lstrip("/"))
                shutil.copy(target, os.path.join(tmp, out))
            if layout == "mbr-grub":
                _mbr_grub_disk(root, os.path.join(tmp, "disk.raw"), lf)
            elif layout == "gpt-efi":
                _gpt_efi_disk(root, os.path.join(tmp, "disk.raw"), lf)
            else:
                _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", root,
                      os.path.join(tmp, "disk.raw"), "2G"], logf=lf)
        shutil.rmtree(root)
        with open(os.path.join(tmp, "done"), "w") as f:
            f.write("%.1f\n" % (time.time() - t0))
        if os.path.exists(path):
            shutil.rmtree(path)
        os.rename(tmp, path)
        log("image %s built in %.1f s" % (name, time.time() - t0))
    return _used(img)


def _instrument(root, lf):
    shutil.copy(os.path.join(HERE, "guest", "vm-report"),
                os.path.join(root, "usr/local/sbin/vm-report"))
    os.chmod(os.path.join(root, "usr/local/sbin/vm-report"), 0o755)
    shutil.copy(os.path.join(HERE, "guest", "vm-report.service"),
                os.path.join(root, "etc/systemd/system/vm-report.service"))
    _chroot(root, ["systemctl", "enable", "vm-report.service"], lf)
    # A KVP pool directory as hv_kvp_daemon would create it on Hyper-V (QEMU has no
    # KVP): report-ready then writes its PROVISIONING_REPORT record, vm-report reads it.
    os.makedirs(os.path.join(root, "var/lib/hyperv"), mode=0o755, exist_ok=True)


DISK_SIZE = 2 << 30
PART_START = 1 << 20


def _mbr_grub_disk(root, disk, lf):
    """A BIOS-bootable disk without loop devices or mounts: MBR with one partition at
    1 MiB, ext4 made by mkfs.ext4 -d, GRUB's boot.img in the MBR and its core.img
    (grub-mkimage in the image's chroot) in the gap before the partition."""
    kver = os.path.basename(os.readlink(os.path.join(root, "vmlinuz"))).split("-", 1)[1]
    with open(os.path.join(root, "etc/fstab"), "w") as f:
        f.write("/dev/vda1 / ext4 rw,relatime 0 1\n")
    os.makedirs(os.path.join(root, "boot/grub"), exist_ok=True)
    with open(os.path.join(root, "boot/grub/grub.cfg"), "w") as f:
        f.write("serial --unit=0 --speed=115200\nterminal_input serial\n"
                "terminal_output serial\nset timeout=0\n"
                "linux /boot/vmlinuz-%s root=/dev/vda1 rw console=ttyS0 net.ifnames=0 "
                "panic=-1\ninitrd /boot/initrd.img-%s\nboot\n" % (kver, kver))
    _chroot(root, ["grub-mkimage", "-O", "i386-pc", "-o", "/tmp/core.img",
                   "-p", "(hd0,msdos1)/boot/grub", "biosdisk", "part_msdos", "ext2",
                   "normal", "linux", "serial", "terminal"], lf)
    core = _file_bytes(os.path.join(root, "tmp/core.img"))
    os.unlink(os.path.join(root, "tmp/core.img"))
    boot_img = _file_bytes(os.path.join(root, "usr/lib/grub/i386-pc/boot.img"))
    if len(core) > PART_START - 512:
        raise RuntimeError("GRUB core.img (%d bytes) does not fit before the partition"
                           % len(core))
    part = disk + ".part"
    _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", root, part,
          "%dK" % ((DISK_SIZE - PART_START) // 1024)], logf=lf)
    with open(disk, "wb") as f:
        f.truncate(DISK_SIZE)
    _run(["dd", "if=" + part, "of=" + disk, "bs=1M", "seek=%d" % (PART_START >> 20),
          "conv=notrunc,sparse", "status=none"], logf=lf)
    os.unlink(part)
    nsect = (DISK_SIZE - PART_START) // 512
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff",
                        PART_START // 512, nsect)
    with open(disk, "r+b") as f:
        f.write(boot_img[:440])
        f.seek(446)
        f.write(entry + b"\0" * 48 + b"\x55\xaa")
        f.seek(512)
        f.write(core)


ESP_SIZE = 32 << 20
ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
LINUX_FS_TYPE = "0fc63daf-8483-4772-8e79-3d69d8477de4"


def _gpt(disk_size, parts):
    """(primary, backup) GPT bytes for parts [(type_uuid, first_lba, last_lba, name)]:
    protective MBR + header + entries at LBA 0-33, entries + header in the last 33."""
    import zlib
    lbas = disk_size // 512
    entries = b""
    for type_uuid, first, last, name in parts:
        entries += struct.pack("<16s16sQQQ72s", uuidlib.UUID(type_uuid).bytes_le,
                               uuidlib.uuid4().bytes_le, first, last, 0,
                               name.encode("utf-16-le"))
    entries = entries.ljust(128 * 128, b"\0")
    disk_guid = uuidlib.uuid4().bytes_le

    def header(current, backup, entries_lba):
        h = struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, current, backup,
                        34, lbas - 34, disk_guid, entries_lba, 128, 128,
                        zlib.crc32(entries) & 0xffffffff)
        h = h[:16] + struct.pack("<I", zlib.crc32(h) & 0xffffffff) + h[20:]
        return h.ljust(512, b"\0")

    mbr = bytearray(512)
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\0\x02\0", 0xEE, b"\xfe\xff\xff", 1,
                               min(lbas - 1, 0xffffffff))
    mbr[510:512] = b"\x55\xaa"
    primary = bytes(mbr) + header(1, lbas - 1, 2) + entries
    backup = entries + header(lbas - 1, 1, lbas - 33)
    return primary, backup


def _gpt_efi_disk(root, disk, lf):
    """A UEFI-bootable disk without loop devices or mounts, as an image builder makes
    for Azure's generation 2 VMs: GPT, an EFI system partition (FAT, mkfs.vfat + mtools)
    holding GRUB's EFI image (grub-mkimage in the image's chroot) at the removable-media
    path EFI/BOOT/BOOTX64.EFI, and the ext4 root (mkfs.ext4 -d) as partition 2."""
    kver = os.path.basename(os.readlink(os.path.join(root, "vmlinuz"))).split("-", 1)[1]
    with open(os.path.join(root, "etc/fstab"), "w") as f:
        f.write("/dev/vda2 / ext4 rw,relatime 0 1\n")
    os.makedirs(os.path.join(root, "boot/grub"), exist_ok=True)
    with open(os.path.join(root, "boot/grub/grub.cfg"), "w") as f:
        f.write("serial --unit=0 --speed=115200\nterminal_input serial\n"
                "terminal_output serial\nset timeout=0\n"
                "linux /boot/vmlinuz-%s root=/dev/vda2 rw console=ttyS0 net.ifnames=0 "
                "panic=-1\ninitrd /boot/initrd.img-%s\nboot\n" % (kver, kver))
    _chroot(root, ["grub-mkimage", "-O", "x86_64-efi", "-o", "/tmp/BOOTX64.EFI",
                   "-p", "(hd0,gpt2)/boot/grub", "part_gpt", "ext2", "fat", "normal",
                   "linux", "serial", "terminal", "efi_gop", "all_video"], lf)
    efi = os.path.join(root, "tmp/BOOTX64.EFI")
    esp = disk + ".esp"
    _run(["mkfs.vfat", "-C", "-n", "ESP", esp, str(ESP_SIZE // 1024)], logf=lf)
    _run(["mmd", "-i", esp, "::/EFI", "::/EFI/BOOT"], logf=lf)
    _run(["mcopy", "-i", esp, efi, "::/EFI/BOOT/BOOTX64.EFI"], logf=lf)
    os.unlink(efi)
    root_start = PART_START + ESP_SIZE
    root_size = DISK_SIZE - root_start - (1 << 20)
    part = disk + ".part"
    _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", root, part,
          "%dK" % (root_size // 1024)], logf=lf)
    with open(disk, "wb") as f:
        f.truncate(DISK_SIZE)
    for src, off in ((esp, PART_START), (part, root_start)):
        _run(["dd", "if=" + src, "of=" + disk, "bs=1M", "seek=%d" % (off >> 20),
              "conv=notrunc,sparse", "status=none"], logf=lf)
        os.unlink(src)
    primary, backup = _gpt(DISK_SIZE, [
        (ESP_TYPE, PART_START // 512, root_start // 512 - 1, "EFI system partition"),
        (LINUX_FS_TYPE, root_start // 512, (root_start + root_size) // 512 - 1, "root")])
    with open(disk, "r+b") as f:
        f.write(primary)
        f.seek(DISK_SIZE - len(backup))
        f.write(backup)


def image_hostname(img):
    """The image's /etc/hostname as built ("" when deprovision removed it)."""
    try:
        with open(os.path.join(os.path.dirname(img.disk), "etc_hostname")) as f:
            return f.read().strip()
    except OSError:
        return None


def _used(img):
    with open(os.path.join(os.path.dirname(img.disk), "used"), "w") as f:
        f.write("%d\n" % time.time())
    return img


def _variant(root, variant, lf):
    if variant in ("networkd", "selinux"):
        _chroot(root, ["dpkg", "--purge", "ifupdown", "isc-dhcp-client", "isc-dhcp-common"], lf)
        if variant == "selinux":  # boot it with SELINUX_APPEND; labelled last (_selinux_label)
            with open(os.path.join(root, "etc/selinux/config"), "w") as f:
                f.write("SELINUX=enforcing\nSELINUXTYPE=default\n")
    elif variant == "ifupdown":
        _chroot(root, ["systemctl", "disable", "systemd-networkd.service",
                       "systemd-networkd.socket", "systemd-networkd-wait-online.service"], lf)
        os.unlink(os.path.join(root, "etc/systemd/network/10-eth.network"))
        with open(os.path.join(root, "etc/network/interfaces.d/eth0"), "w") as f:
            f.write("auto eth0\niface eth0 inet dhcp\n")
        _chroot(root, ["systemctl", "enable", "networking.service"], lf)
    elif variant == "nm":
        # NetworkManager (internal DHCP client, its default) makes "Wired connection 1"
        # for eth0 by itself; its wait-online unit holds network-online.target
        _chroot(root, ["dpkg", "--purge", "ifupdown", "isc-dhcp-client", "isc-dhcp-common"], lf)
        _chroot(root, ["systemctl", "disable", "systemd-networkd.service",
                       "systemd-networkd.socket", "systemd-networkd-wait-online.service"], lf)
        os.unlink(os.path.join(root, "etc/systemd/network/10-eth.network"))
        _chroot(root, ["systemctl", "enable", "NetworkManager.service",
                       "NetworkManager-wait-online.service"], lf)
    else:
        raise ValueError("unknown variant %r" % variant)


# The kernel command line of the SELinux variant: Debian's kernel has SELinux built in
# but AppArmor as its default major LSM.
SELINUX_APPEND = "security=selinux selinux=1 enforcing=1"


def _selinux_label(root, lf):
    """Label the whole tree as the policy says, at build time (what the first boot's
    autorelabel would do, without its extra boot): setfiles in the chroot writes
    security.selinux xattrs, which mkfs.ext4 -d copies into the file system."""
    fc = "/etc/selinux/default/contexts/files/file_contexts"
    # setfiles sets each label through /proc/self/fd: /proc in the chroot, mounted in a
    # mount namespace of this one command (gone with it, nothing on the host)
    _run(["unshare", "--mount-proc=" + os.path.join(root, "proc"), "chroot", root,
          "/usr/bin/env", "-i", "PATH=" + SYSPATH, "LC_ALL=C",
          "setfiles", "-F", "-e", "/proc", "-e", "/sys", "-e", "/dev", fc, "/"], logf=lf)
    for stale in (".autorelabel",):
        try:
            os.unlink(os.path.join(root, stale))
        except FileNotFoundError:
            pass


def prune_images(keep, max_age=3600):
    """Remove untagged cached images (img-<variant>-<key>, ~700 MB each; every new .deb
    makes new ones) not in keep and unused for max_age seconds (a concurrent run may
    still boot an older one). Tagged images (bench variants) are their owner's business."""
    keep = set(os.path.dirname(i.disk) for i in keep)
    for d in glob.glob(os.path.join(cache_root(), "img-*")):
        if d in keep or not re.match(r"img-(networkd|ifupdown|nm|selinux)(-trixie)?(-grub|-efi|-azdev-[0-9a-f]{8}|-generalize)?-[0-9a-f]{16}$",
                                     os.path.basename(d)):
            continue
        try:
            age = time.time() - os.path.getmtime(os.path.join(d, "used"))
        except OSError:
            age = max_age + 1
        if age > max_age:
            shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- fabric

class Fabric(object):
    """One fabric emulator process. Use as a context manager or start()/stop()."""

    def __init__(self, workdir, scenario=None, name="fabric", wireserver="127.0.0.1:0",
                 imds="127.0.0.1:0", netns=None):
        self.workdir = workdir
        self.scenario = dict(scenario or {})
        self.name = name
        self.wireserver_bind = wireserver
        self.imds_bind = imds
        self.netns = netns
        self.proc = None
        self.rec = os.path.join(workdir, name + ".records.jsonl")
        self.ready_file = os.path.join(workdir, name + ".ready.json")
        self.logpath = os.path.join(workdir, name + ".log")
        self.ready = None
        self.ws_port = self.imds_port = None
        self.t0_wall = None

    def start(self, timeout=20):
        if not os.path.exists(EMULATOR):
            raise RuntimeError("fabric emulator %s not found" % EMULATOR)
        scen = os.path.join(self.workdir, self.name + ".scenario.json")
        with open(scen, "w") as f:
            json.dump(self.scenario, f, indent=1)
        for p in (self.rec, self.ready_file):
            if os.path.exists(p):
                os.unlink(p)
        argv = [sys.executable, EMULATOR, "--wireserver", self.wireserver_bind,
                "--imds", self.imds_bind, "--scenario", "@" + scen, "--record", self.rec,
                "--ready-file", self.ready_file]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns] + argv
        self._logf = open(self.logpath, "w")
        self.proc = subprocess.Popen(argv, stdout=self._logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("fabric emulator exited %s: %s" % (
                    self.proc.returncode, open(self.logpath).read()[-2000:]))
            try:
                with open(self.ready_file) as f:
                    self.ready = json.load(f)
                break
            except (OSError, ValueError):
                time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError("fabric emulator not ready after %ss" % timeout)
        # the emulator's record times ("t") count from its start, just before the ready file
        self.t0_wall = time.time()
        self.ws_port = _port_of(self.ready, "wireserver")
        self.imds_port = _port_of(self.ready, "imds")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_logf", None):
            self._logf.close()
            self._logf = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def records(self):
        out = []
        try:
            with open(self.rec) as f:
                for line in f:
                    line = line.strip()
                    if line:
                        try:
                            out.append(json.loads(line))
                        except ValueError:
                            pass
        except OSError:
            pass
        return out


def _port_of(ready, service):
    """Port of a service from the emulator's ready file (tolerant of its exact shape)."""
    v = ready.get(service) if isinstance(ready, dict) else None
    if isinstance(v, dict):
        v = v.get("port") or v.get("address") or v.get("addr")
    if isinstance(v, (list, tuple)):
        return int(v[1])
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        return int(v.rsplit(":", 1)[1].rstrip("/").split("/")[0]) if ":" in v else int(v)
    raise RuntimeError("no %s address in ready file: %r" % (service, ready))


# --------------------------------------------------------------------------- boot

class BootResult(object):
    def __init__(self, **kw):
        self.__dict__.update(kw)

    def serial(self):
        try:
            with open(self.serial_log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def serial_tail(self, n=60):
        return "\n".join(self.serial().splitlines()[-n:])


def new_overlay(image, path):
    """A qcow2 overlay over the image (the image itself is never written)."""
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", image.fmt, "-b", image.disk, path])
    return path


def copy_overlay(src, dst):
    """Snapshot of a booted overlay (for reboot/clone scenarios run side by side)."""
    shutil.copyfile(src, dst)
    return dst


def qemu_argv(image, overlay, vm_id, serial_log, pcap=None, report_disk=None,
              ws_port=None, imds_port=None, asset_tag=ASSET_TAG, machine=None, smp=None,
              mem=1024, tap=None, mac="52:54:00:12:34:56", append=None, disk_if="virtio",
              firmware=None, extra=(), hostfwd=None, cdrom=None, net_opts=""):
    """hostfwd: host port on 127.0.0.1 forwarded to the guest's port 22 (user-mode
    networking; restrict=on still holds for the guest's own traffic).
    cdrom: a raw image attached as a CD-ROM drive (/dev/sr0), read-only.
    net_opts: more options of the user-mode netdev (",ipv4=on,ipv6=on")."""
    machine = machine or os.environ.get("VM_MACHINE", "q35")
    smp = smp or int(os.environ.get("VM_SMP", "1"))
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-machine", machine, "-m", str(mem),
            "-smp", str(smp), "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", "file:" + serial_log, "-monitor", "none",
            "-drive", "file=%s,if=%s,format=qcow2,cache=unsafe,discard=unmap" % (overlay, disk_if)]
    if firmware:
        argv += ["-bios", firmware]
    if report_disk:
        argv += ["-drive", "file=%s,if=virtio,format=raw,cache=writethrough" % report_disk]
    if image.kernel:
        argv += ["-kernel", image.kernel]
        if image.initrd:
            argv += ["-initrd", image.initrd]
        argv += ["-append", append or image.append]
    if tap:
        # vnet_hdr=off: else filter-dump writes the virtio-net header in front of every frame
        argv += ["-netdev", "tap,id=n0,ifname=%s,script=no,downscript=no,vnet_hdr=off" % tap]
    else:
        nd = "user,id=n0,restrict=on,net=168.0.0.0/7"
        if ws_port:
            nd += ",guestfwd=tcp:%s:80-cmd:socat - TCP:127.0.0.1:%d" % (WIRESERVER_IP, ws_port)
        if imds_port:
            nd += ",guestfwd=tcp:%s:80-cmd:socat - TCP:127.0.0.1:%d" % (IMDS_IP, imds_port)
        if hostfwd:
            nd += ",hostfwd=tcp:127.0.0.1:%d-:22" % hostfwd
        argv += ["-netdev", nd + net_opts]
    argv += ["-device", "virtio-net-pci,netdev=n0,mac=%s" % mac]
    if pcap:
        argv += ["-object", "filter-dump,id=f0,netdev=n0,file=%s" % pcap]
    if cdrom:
        argv += ["-drive", "file=%s,if=none,id=cd0,media=cdrom,readonly=on,format=raw" % cdrom,
                 "-device", "ide-cd,drive=cd0,bus=ide.0"]
    argv += ["-smbios", "type=1,uuid=%s" % vm_id]
    if asset_tag:
        argv += ["-smbios", "type=3,asset=%s" % asset_tag]
    return argv + list(extra)


REPORT_DISK_SIZE = 4 << 20


def serial_log_path(workdir, name):
    """Where boot() has QEMU write the guest's serial console (also read while it runs)."""
    return os.path.join(workdir, name + ".serial.log")


def boot(image, workdir, name, vm_id, fabric=None, overlay=None, asset_tag=ASSET_TAG,
         timeout=300, netns=None, tap=None, stop_when=None, poll=0.5, powerdown_wait=60,
         **qemu_kw):
    """Boot once; returns a BootResult after the guest powered off or the hard timeout.

    overlay: existing qcow2 overlay to boot again (reboot/clone); a new one otherwise.
    stop_when: optional callable(fabric) -> bool, checked while the VM runs; when it
    becomes true the VM is stopped (for images without vm-report, e.g. make vm-test).
    """
    os.makedirs(workdir, exist_ok=True)
    if overlay is None:
        overlay = new_overlay(image, os.path.join(workdir, name + ".qcow2"))
    serial_log = serial_log_path(workdir, name)
    pcap = os.path.join(workdir, name + ".pcap")
    report_disk = os.path.join(workdir, name + ".report.raw") if image.instrumented else None
    if report_disk:
        with open(report_disk, "wb") as f:
            f.truncate(REPORT_DISK_SIZE)
    argv = qemu_argv(image, overlay, vm_id, serial_log, pcap=pcap, report_disk=report_disk,
                     ws_port=fabric.ws_port if fabric and not tap else None,
                     imds_port=fabric.imds_port if fabric and not tap else None,
                     asset_tag=asset_tag, tap=tap, **qemu_kw)
    qmpdir = tempfile.mkdtemp(prefix="afbvm-")  # short path: unix socket names are limited
    qmp = os.path.join(qmpdir, "qmp")
    argv += ["-qmp", "unix:%s,server=on,wait=off" % qmp]
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    with open(os.path.join(workdir, name + ".qemu.argv"), "w") as f:
        f.write(json.dumps(argv) + "\n")
    qlog = open(os.path.join(workdir, name + ".qemu.log"), "w")
    t0 = time.time()
    proc = subprocess.Popen(argv, stdout=qlog, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    how = "poweroff"
    # With a CD-ROM: its tray as QEMU sees it (query-block) at the first poll, whether it
    # was seen open before the first Ready the emulator accepted, and at the first poll
    # after that Ready
    tray = {"first": None, "open_before_ready": False, "at_ready": None} \
        if qemu_kw.get("cdrom") else None
    try:
        while True:
            try:
                proc.wait(poll)
                break
            except subprocess.TimeoutExpired:
                pass
            if tray is not None and fabric is not None and tray["at_ready"] is None:
                ready = bool(accepted_ready(fabric.records()))
                state = _cdrom_state(qmp)
                if ready:
                    tray["at_ready"] = state
                elif state is not None:
                    tray["first"] = tray["first"] or state
                    tray["open_before_ready"] |= state["tray_open"] or not state["inserted"]
            if time.time() - t0 > timeout:
                how = "timeout"
                break
            if stop_when is not None and stop_when(fabric):
                how = "stopped"
                # graceful: ACPI power button, so the guest flushes its disk (reboot tests)
                _qmp(qmp, "system_powerdown")
                try:
                    proc.wait(powerdown_wait)
                except subprocess.TimeoutExpired:
                    pass
                break
    finally:
        if proc.poll() is None:
            _kill_group(proc)
        qlog.close()
        shutil.rmtree(qmpdir, ignore_errors=True)
    t1 = time.time()
    report = read_report(report_disk) if report_disk else None
    if how == "poweroff" and report is None and image.instrumented:
        how = "exit-without-report"  # crashed, rebooted (-no-reboot) or powered off early
    return BootResult(name=name, t_start=t0, t_end=t1, duration=t1 - t0, how=how,
                      rc=proc.returncode, overlay=overlay, serial_log=serial_log, pcap=pcap,
                      report=report, vm_id=vm_id, workdir=workdir, tray=tray)


def _qmp_return(path, command):
    """The "return" of one QMP command (events in between skipped), or None."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(path)
        try:
            f = s.makefile("rwb")
            f.readline()  # greeting
            answer = None
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                while True:
                    line = f.readline()
                    if not line:
                        return None
                    msg = json.loads(line.decode("utf-8", "replace"))
                    if "return" in msg or "error" in msg:
                        answer = msg.get("return")
                        break
            return answer
        finally:
            s.close()
    except (OSError, ValueError):
        return None


def _cdrom_state(qmp):
    """{"tray_open": bool, "inserted": bool} of the CD-ROM drive cd0, or None."""
    for dev in _qmp_return(qmp, "query-block") or []:
        if dev.get("device") == "cd0" or (dev.get("qdev") or "").endswith("cd0"):
            return {"tray_open": bool(dev.get("tray_open")), "inserted": "inserted" in dev}
    return None


def _qmp(path, command):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(path)
        f = s.makefile("rwb")
        f.readline()  # greeting
        for cmd in ("qmp_capabilities", command):
            f.write(json.dumps({"execute": cmd}).encode() + b"\n")
            f.flush()
            f.readline()
        s.close()
        return True
    except (OSError, ValueError):
        return False


def _kill_group(proc):
    # QEMU runs in its own session (start_new_session): its group holds QEMU and the
    # socat children of guestfwd, nothing else of ours.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(5)
            return
        except subprocess.TimeoutExpired:
            continue


def read_report(path):
    try:
        with open(path, "rb") as f:
            data = f.read(REPORT_DISK_SIZE)
    except OSError:
        return None
    m = re.match(rb"VMREPORT (\d+)\n", data)
    if not m:
        return None
    body = data[m.end():m.end() + int(m.group(1))]
    try:
        return json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return None


# --------------------------------------------------------------------------- results

def _parse_health(body):
    if REPO + "/tests" not in sys.path:
        sys.path.insert(0, os.path.join(REPO, "tests"))
    from fabric_emulator import parse_health
    return parse_health(body)


def health_posts(records):
    """Health POSTs from emulator records, each with "report" (parsed, or None) added."""
    out = []
    for r in records:
        if r.get("service") == "wireserver" and r.get("method") == "POST" \
                and "comp=health" in r.get("path", ""):
            try:
                rep = _parse_health(r.get("body", ""))
            except Exception:
                rep = None
            out.append(dict(r, report=rep))
    return out


def accepted_ready(records):
    """Health POSTs with State Ready that the emulator accepted (200)."""
    return [p for p in health_posts(records)
            if p["status"] == 200 and p["report"] and p["report"]["state"] == "Ready"]


def timeline(boot, records, fabric_t0):
    """Seconds from QEMU start: first DHCP ACK (pcap, host clock), first accepted Ready;
    and from the guest report: time each of our units spent (start -> active/exit)."""
    out = {"boot_to_dhcp_s": None, "boot_to_ready_s": None, "dhcp_to_ready_s": None,
           "units_s": {}}
    acks = [p["t"] for p in dhcp_packets(boot.pcap) if p["type"] == "ACK"]
    if acks:
        out["boot_to_dhcp_s"] = min(acks) - boot.t_start
    rd = accepted_ready(records)
    if rd and fabric_t0 is not None:
        out["boot_to_ready_s"] = fabric_t0 + rd[0]["t"] - boot.t_start
    if out["boot_to_dhcp_s"] is not None and out["boot_to_ready_s"] is not None:
        out["dhcp_to_ready_s"] = out["boot_to_ready_s"] - out["boot_to_dhcp_s"]
    for u, d in ((boot.report or {}).get("units") or {}).items():
        try:
            a = int(d.get("InactiveExitTimestampMonotonic") or 0)
            b = int(d.get("ActiveEnterTimestampMonotonic") or 0)
        except ValueError:
            continue
        if a and b >= a:
            out["units_s"][u] = (b - a) / 1e6
    return out


# --------------------------------------------------------------------------- pcap

def dhcp_packets(pcap):
    """[(t, msgtype, hostname-or-None, direction)] for every DHCP packet in a pcap."""
    out = []
    try:
        data = open(pcap, "rb").read()
    except OSError:
        return out
    if len(data) < 24:
        return out
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        return out
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(end + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(end + "IIII", data[off:off + 16])
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        t = sec + frac / (1e9 if nano else 1e6)
        if linktype != 1 or len(pkt) < 14 + 20 + 8 + 240:
            continue
        if pkt[12:14] != b"\x08\x00":
            continue
        ip = pkt[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17:
            continue
        udp = ip[ihl:]
        sport, dport = struct.unpack("!HH", udp[:4])
        if {sport, dport} != {67, 68}:
            continue
        bootp = udp[8:]
        if bootp[236:240] != b"\x63\x82\x53\x63":
            continue
        opts = _dhcp_options(bootp[240:])
        mt = opts.get(53, b"\x00")[0]
        host = opts.get(12)
        out.append({"t": t, "type": _DHCP_TYPES.get(mt, str(mt)),
                    "hostname": host.decode("utf-8", "replace") if host is not None else None,
                    "from_client": dport == 67, "options": sorted(opts)})
    return out


_DHCP_TYPES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK",
               7: "RELEASE", 8: "INFORM"}


def _dhcp_options(b):
    opts = {}
    i = 0
    while i < len(b):
        code = b[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(b):
            break
        ln = b[i + 1]
        opts[code] = opts.get(code, b"") + bytes(b[i + 2:i + 2 + ln])
        i += 2 + ln
    return opts


# --------------------------------------------------------------------------- netns

class Netns(object):
    """A private network namespace with a tap device and dnsmasq serving DHCP on it.

    Everything (dnsmasq, the emulator, QEMU) runs inside the namespace; nothing outside
    it is addressed. gateway: the namespace's address on the tap (router for the guest);
    extra_addrs: more local addresses (a non-default WireServer, IMDS 169.254.169.254).
    """

    def __init__(self, workdir, name=None, subnet="10.99.0", dhcp_options=(),
                 extra_addrs=()):
        self.workdir = workdir
        self.name = name or "afb-vm-%d-%s" % (os.getpid(), uuidlib.uuid4().hex[:6])
        self.tap = "tap0"
        self.subnet = subnet
        self.gateway = subnet + ".1"
        self.dhcp_options = list(dhcp_options)
        self.extra_addrs = list(extra_addrs)
        self.dnsmasq = None
        self.dhcp_started = None
        self.started = False

    def ns(self, *argv, check=True):
        return _run(["ip", "netns", "exec", self.name] + list(argv), check=check)

    def start(self, dhcp=True):
        """Namespace, tap and addresses; and dnsmasq unless ``dhcp`` is false (then
        start_dhcp() later: a DHCP server that answers late)."""
        _run(["ip", "netns", "add", self.name])
        self.started = True
        try:
            self.ns("ip", "link", "set", "lo", "up")
            self.ns("ip", "tuntap", "add", "dev", self.tap, "mode", "tap")
            self.ns("ip", "addr", "add", self.gateway + "/24", "dev", self.tap)
            for a in self.extra_addrs:
                self.ns("ip", "addr", "add", a if "/" in a else a + "/32", "dev", self.tap)
            self.ns("ip", "link", "set", self.tap, "up")
            if dhcp:
                self.start_dhcp()
        except Exception:
            self.stop()
            raise
        return self

    def start_dhcp(self):
        """Start dnsmasq (DHCP with the options given) in the namespace."""
        lease = os.path.join(self.workdir, self.name + ".dnsmasq.leases")
        argv = ["ip", "netns", "exec", self.name, "dnsmasq", "--keep-in-foreground",
                "--conf-file=/dev/null", "--port=0", "--interface=" + self.tap,
                "--bind-interfaces", "--except-interface=lo", "--user=root",
                "--dhcp-range=%s.50,%s.99,255.255.255.0,1h" % (self.subnet, self.subnet),
                "--dhcp-option=3," + self.gateway, "--dhcp-leasefile=" + lease,
                "--pid-file=", "--log-dhcp", "--log-facility=-"]
        argv += ["--dhcp-option-force=%s" % o for o in self.dhcp_options]
        self._logf = open(os.path.join(self.workdir, self.name + ".dnsmasq.log"), "w")
        self.dnsmasq = subprocess.Popen(argv, stdout=self._logf, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        time.sleep(0.3)
        self.dhcp_started = time.time()
        if self.dnsmasq.poll() is not None:
            raise RuntimeError("dnsmasq exited: " + open(self._logf.name).read()[-1500:])

    def stop(self):
        if self.dnsmasq and self.dnsmasq.poll() is None:
            self.dnsmasq.terminate()
            try:
                self.dnsmasq.wait(5)
            except subprocess.TimeoutExpired:
                self.dnsmasq.kill()
        if getattr(self, "_logf", None):
            self._logf.close()
        _run(["ip", "netns", "del", self.name], check=False)

    def __enter__(self):
        if not self.started:
            self.start()
        return self

    def __exit__(self, *a):
        self.stop()


def free_port():
    """A free TCP port on 127.0.0.1 (for hostfwd)."""
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udf_medium(path, files, label="rd_rdfe_stable.200101-0000"):
    """A UDF image like Azure's provisioning DVD holding ``files`` ({name: bytes}), made
    without mounting anything: genisoimage -udf (ISO 9660 + UDF 1.02 bridge; the guest
    mounts it as UDF). Where genisoimage is missing: mkudffs (pure UDF, 2048-byte blocks)
    filled through a loop mount, which needs the host kernel's udf module. RuntimeError
    when the host can do neither."""
    if os.path.exists(path):
        os.unlink(path)
    src = tempfile.mkdtemp(prefix="afb-udf-")
    try:
        for name, data in files.items():
            with open(os.path.join(src, name), "wb") as f:
                f.write(data)
        if shutil.which("genisoimage", path=SYSPATH):
            _run(["genisoimage", "-quiet", "-udf", "-R", "-V", label[:32], "-o", path, src])
            return path
        if not shutil.which("mkudffs", path=SYSPATH):
            raise RuntimeError("neither genisoimage nor mkudffs (udftools) is installed")
        _run(["mkudffs", "--new-file", "--blocksize=2048", "--media-type=hd",
              "--label=" + label, path, "1024"])
        mnt = tempfile.mkdtemp(prefix="afb-udfmnt-")
        try:
            _run(["mount", "-o", "loop", "-t", "udf", path, mnt])
            try:
                for name in files:
                    shutil.copyfile(os.path.join(src, name), os.path.join(mnt, name))
            finally:
                _run(["umount", mnt])
        finally:
            os.rmdir(mnt)
        return path
    finally:
        shutil.rmtree(src, ignore_errors=True)


def new_vm_id():
    return str(uuidlib.uuid4())
