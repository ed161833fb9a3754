"""kvp: the PROVISIONING_REPORT record, byte for byte, and the pool file
(in-place update, stale pools, both locks) on a real file under a scratch root."""

import fcntl
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from azure_firstboot import kvp
from azure_firstboot.state import Paths

VM = "5c9f1c56-64f7-4d55-9a0b-6c2f0e8b7a31"
TS = "2026-11-30T10:00:00Z"


def test_success_value_exact():
    assert kvp.encode_report("success", VM, TS, "0.1.0") == (
        "result=success|agent=azure-firstboot/0.1.0|vm_id=%s|timestamp=%s" % (VM, TS))


def test_error_value_exact_with_escapes():
    value = kvp.encode_report("error", VM, TS, "0.1.0", "hostname: 'a|b'\nis\x1b[31m bad\x85")
    assert value == ("result=error|reason=hostname: 'a/b' is [31m bad|agent=azure-firstboot/0.1.0"
                     "|vm_id=%s|timestamp=%s|documentation_url=https://aka.ms/linuxprovisioningerror"
                     % (VM, TS))


@pytest.mark.parametrize("reason", ["x" * 5000, "\u00e9" * 2000, "\U0001f600" * 700, "|" * 3000])
def test_long_reason_is_cut_to_1022_bytes_keeping_the_other_fields(reason):
    value = kvp.encode_report("error", VM, TS, "0.1.0", reason)
    data = value.encode("utf-8")
    assert len(data) <= kvp.MAX_VALUE and len(data) > kvp.MAX_VALUE - 8
    fields = value.split("|")
    assert fields[0] == "result=error" and fields[1].startswith("reason=") and fields[1].endswith("...")
    assert fields[2:] == ["agent=azure-firstboot/0.1.0", "vm_id=" + VM, "timestamp=" + TS,
                          "documentation_url=https://aka.ms/linuxprovisioningerror"]


@pytest.mark.parametrize("reason", ["x" * 5000, "\u00e9" * 2000, "\U0001f600" * 700, "short"])
def test_description_limit_512_keeps_the_fields_and_the_escaped_xml_bounded(reason):
    """The failure health report's Description: the same encoder, cut to 512 characters."""
    from azure_firstboot import protocol

    value = kvp.encode_report("error", VM, TS, "0.1.0", reason, protocol.DESCRIPTION_MAX)
    assert len(value) <= len(value.encode("utf-8")) <= protocol.DESCRIPTION_MAX
    fields = value.split("|")
    assert fields[0] == "result=error" and fields[1].startswith("reason=")
    assert fields[1].endswith("...") == (reason != "short")
    assert fields[2:] == ["agent=azure-firstboot/0.1.0", "vm_id=" + VM, "timestamp=" + TS,
                          "documentation_url=https://aka.ms/linuxprovisioningerror"]
    doc = protocol.health_document(protocol.GoalState("1", "c", "i"), value)
    assert value.encode("utf-8") in doc  # nothing in it needs escaping or is cut again


def test_record_layout_bytes():
    rec = kvp.encode_record("PROVISIONING_REPORT", "result=success")
    assert len(rec) == 2560
    assert rec[:19] == b"PROVISIONING_REPORT" and rec[19:512] == b"\0" * 493
    assert rec[512:526] == b"result=success" and rec[526:] == b"\0" * (2048 - 14)
    with pytest.raises(ValueError):
        kvp.encode_record("k", "v" * 1023)


def test_upsert_replaces_in_place_drops_duplicates_keeps_others():
    a = kvp.encode_record("A", "1")
    old = kvp.encode_record("PROVISIONING_REPORT", "old")
    b = kvp.encode_record("B", "2")
    pool = a + old + b + old + b"tail"  # a duplicate and a partial record
    new = kvp.upsert(pool, "PROVISIONING_REPORT", "new")
    assert new == a + kvp.encode_record("PROVISIONING_REPORT", "new") + b
    assert kvp.upsert(a, "PROVISIONING_REPORT", "x") == a + kvp.encode_record("PROVISIONING_REPORT", "x")
    full = b"".join(kvp.encode_record("K%d" % i, "v") for i in range(kvp.MAX_RECORDS))
    assert kvp.upsert(full, "PROVISIONING_REPORT", "x") is None
    assert kvp.decode_pool(new) == [("A", "1"), ("PROVISIONING_REPORT", "new"), ("B", "2")]


def _root(tmp_path, btime=None, pool=None, hyperv=True):
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    if btime is not None:
        (root / "proc" / "stat").write_text("cpu  1 2 3\nbtime %d\nprocesses 9\n" % btime)
    if hyperv:
        (root / "var" / "lib" / "hyperv").mkdir(parents=True)
    if pool is not None:
        (root / "var" / "lib" / "hyperv" / ".kvp_pool_1").write_bytes(pool)
    return root, Paths(str(root))


def test_write_report_updates_in_place(tmp_path):
    other = kvp.encode_record("cloud-init|x", "keep me")
    root, paths = _root(tmp_path, btime=int(time.time()) - 3600, pool=other)
    assert kvp.write_report(paths, "result=error|reason=first") is None
    assert kvp.write_report(paths, "result=success") is None
    data = (root / "var/lib/hyperv/.kvp_pool_1").read_bytes()
    assert data == other + kvp.encode_record("PROVISIONING_REPORT", "result=success")
    assert oct(os.stat(str(root / "var/lib/hyperv/.kvp_pool_1")).st_mode & 0o777) == "0o644"


def test_pool_older_than_this_boot_is_emptied(tmp_path):
    stale = kvp.encode_record("PROVISIONING_REPORT", "from the image") + kvp.encode_record("X", "old")
    root, paths = _root(tmp_path, btime=int(time.time()) - 60, pool=stale)
    pool = str(root / "var/lib/hyperv/.kvp_pool_1")
    os.utime(pool, (time.time() - 7200, time.time() - 7200))
    assert kvp.write_report(paths, "result=success") is None
    with open(pool, "rb") as handle:
        assert handle.read() == kvp.encode_record("PROVISIONING_REPORT", "result=success")


def test_boot_time_from_uptime_when_no_btime(tmp_path):
    root, paths = _root(tmp_path)
    (root / "proc" / "uptime").write_text("100.50 200.00\n")
    assert abs(kvp.boot_time(paths) - (time.time() - 100.5)) < 5
    (root / "proc" / "uptime").write_text("\u0661\u0662 3\n")
    assert kvp.boot_time(paths) is None


def test_nothing_without_the_hyperv_directory(tmp_path):
    root, paths = _root(tmp_path, hyperv=False)
    assert kvp.write_report(paths, "result=success") == ""
    assert not (root / "var").exists()


@pytest.mark.parametrize("kind", ["flock", "lockf"])
def test_waits_for_either_lock_and_gives_up(tmp_path, monkeypatch, kind):
    """Another writer holding a flock (cloud-init) or an fcntl record lock
    (hv_kvp_daemon): we wait, and give up after LOCK_WAIT without writing."""
    root, paths = _root(tmp_path, pool=b"")
    pool = str(root / "var/lib/hyperv/.kvp_pool_1")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time\n"
        "f = open(%r, 'r+b')\n"
        "fcntl.%s(f, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(30)\n") % (pool, kind)], stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(kvp, "LOCK_WAIT", 0.3)
        assert "locked by another writer" in kvp.write_report(paths, "result=success")
        assert os.path.getsize(pool) == 0
    finally:
        holder.kill()
        holder.wait()
    assert kvp.write_report(paths, "result=success") is None
    assert os.path.getsize(pool) == 2560


def test_pool_symlink_is_not_followed(tmp_path):
    root, paths = _root(tmp_path)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    os.symlink(str(target), str(root / "var/lib/hyperv/.kvp_pool_1"))
    assert "cannot open" in kvp.write_report(paths, "result=success")
    assert target.read_bytes() == b""


# ------------------------------------------------- the pool is a file of ours (issue 17)

def _planted(tmp_path, kind):
    """A pool path with something else than a plain pool in its place; returns
    (root, paths, pool path, a function telling what became of the obstacle)."""
    root, paths = _root(tmp_path)
    pool = str(root / "var/lib/hyperv/.kvp_pool_1")
    outside = tmp_path / "outside"
    outside.write_bytes(b"not a pool\n")
    if kind == "symlink":
        os.symlink(str(outside), pool)
    elif kind == "relative-symlink":
        os.symlink("../../../../outside", pool)
    elif kind == "hardlink":
        os.link(str(outside), pool)
    elif kind == "fifo":
        os.mkfifo(pool)
    elif kind == "directory":
        os.mkdir(pool)
    elif kind == "device":
        os.mknod(pool, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(pool)
        sock.close()
    return root, paths, pool, outside


KINDS = ["symlink", "relative-symlink", "hardlink", "fifo", "directory", "socket"] + (
    ["device"] if os.geteuid() == 0 else [])


@pytest.mark.parametrize("kind", KINDS)
def test_pool_that_is_not_a_plain_file_is_refused(tmp_path, kind):
    root, paths, pool, outside = _planted(tmp_path, kind)
    before = os.lstat(pool)
    reason = kvp.write_report(paths, "result=success")
    assert reason and reason.startswith("cannot open %s: " % pool), reason
    assert "\n" not in reason
    if kind in ("symlink", "relative-symlink"):
        assert "symbolic link (not followed)" in reason
    elif kind == "hardlink":
        assert "2 hard links" in reason
    else:
        assert "not a regular file" in reason
    after = os.lstat(pool)
    assert (after.st_mode, after.st_ino, after.st_size) == (before.st_mode, before.st_ino, before.st_size)
    assert outside.read_bytes() == b"not a pool\n"
    assert sorted(os.listdir(str(root / "var/lib/hyperv"))) == [".kvp_pool_1"]


def test_oversized_pool_is_not_read(tmp_path):
    """A (sparse) pool larger than MAX_RECORDS records: refused without
    reading it into memory, left as it is."""
    root, paths = _root(tmp_path, pool=b"")
    pool = str(root / "var/lib/hyperv/.kvp_pool_1")
    os.truncate(pool, 512 << 20)
    reason = kvp.write_report(paths, "result=success")
    assert "holds more than 1024 records" in reason and "not touched" in reason
    assert os.path.getsize(pool) == 512 << 20
    os.truncate(pool, kvp.POOL_LIMIT)  # the largest pool still read: 1024 records + a partial one
    assert "is full" in kvp.write_report(paths, "result=success")  # read, not refused
    assert os.path.getsize(pool) == kvp.POOL_LIMIT


def test_full_pool_and_the_largest_readable_one(tmp_path):
    full = b"".join(kvp.encode_record("K%d" % i, "v") for i in range(kvp.MAX_RECORDS))
    root, paths = _root(tmp_path, pool=full + b"partial")
    assert "is full (1024 records)" in kvp.write_report(paths, "result=success")
    assert (root / "var/lib/hyperv/.kvp_pool_1").read_bytes() == full + b"partial"
