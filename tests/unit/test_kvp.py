"""kvp: the PROVISIONING_REPORT record, byte for byte, and the pool file
(in-place update, stale pools, both locks) on a real file under a scratch root."""

import fcntl
import os
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
