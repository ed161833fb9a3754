"""``status``: each exit code, the bound of --wait, whose pid is believed, and
a reader that went away.  Exit 1 means "provisioning failed" and nothing else;
5 means "could not read the state"."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from azure_firstboot import admin, cli
from fabric_emulator import Fabric
from test_agent_e2e import TOP, VM_ID, Machine, assert_ok

BOOT_ID = "11111111-0000-4000-8000-000000000001"


@pytest.fixture
def fab():
    with Fabric().start() as fabric:
        yield fabric


def run(m, *args, **kw):
    environ = dict(os.environ, PYTHONPATH=os.path.join(TOP, "src"))
    return subprocess.run([sys.executable, "-m", "azure_firstboot", "--config", m.config, "--root", m.root]
                          + list(args), env=environ, timeout=60, **kw)


def status(m, *args):
    return run(m, "status", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def started(m, pid):
    m.write("run/azure-firstboot/report-ready.boot",
            "boot_id=%s\npid=%s\nresult=started\nstep=report-ready\ntime=t\nvm_id=%s\n" % (BOOT_ID, pid, VM_ID))


# ------------------------------------------------------------------ exit 5

@pytest.mark.parametrize("record", ["var/lib/azure-firstboot/provisioned",
                                    "var/lib/azure-firstboot/report-ready.result",
                                    "run/azure-firstboot/report-ready.boot"])
def test_a_record_that_cannot_be_read_is_exit_5_not_failed(tmp_path, fab, record):
    m = Machine(tmp_path, fab)
    assert_ok([m.agent("network-wait"), m.agent("hostname")])
    os.makedirs(os.path.dirname(m.path(record)), exist_ok=True)
    os.mkfifo(m.path(record))
    for args in ((), ("--json",), ("--wait", "--timeout", "30")):
        began = time.monotonic()
        proc = status(m, *args)
        assert proc.returncode == 5, (args, proc.stdout, proc.stderr)
        assert time.monotonic() - began < 20  # a FIFO never blocks, --wait stops at once
        assert "Traceback" not in proc.stderr and "not a regular file" in proc.stderr
    assert json.loads(status(m, "--json").stdout)["status"] == "unknown"
    assert "status:       unknown: cannot read the state:" in status(m).stdout


def test_an_unreadable_identity_note_is_exit_5(tmp_path, fab):
    m = Machine(tmp_path, fab)
    assert_ok(m.boot())
    os.unlink(m.path("sys/class/dmi/id/product_uuid"))  # as for a user: only the units' note
    os.unlink(m.path("run/azure-firstboot/identity"))
    os.mkfifo(m.path("run/azure-firstboot/identity"))
    proc = status(m)
    assert proc.returncode == 5 and "Traceback" not in proc.stderr, (proc.stdout, proc.stderr)


def test_provisioned_stays_provisioned_when_another_record_is_unreadable(tmp_path, fab):
    m = Machine(tmp_path, fab)
    assert_ok(m.boot())
    os.unlink(m.path("var/lib/azure-firstboot/hostname.result"))
    os.mkfifo(m.path("var/lib/azure-firstboot/hostname.result"))
    assert status(m).returncode == 0


# ------------------------------------------------------------- whose pid

def test_a_live_pid_that_is_not_the_units_is_not_believed(tmp_path, fab):
    m = Machine(tmp_path, fab)
    assert_ok([m.agent("network-wait"), m.agent("hostname")])
    # alive, names the step, but is not azure-firstboot: a pid reused after a crash
    other = subprocess.Popen(["sh", "-c", "sleep 60", "report-ready"])
    try:
        for pid in (other.pid, os.getpid()):
            started(m, pid)
            began = time.monotonic()
            proc = status(m, "--wait")
            assert proc.returncode == 1 and "did not finish" in proc.stdout, proc.stdout
            assert time.monotonic() - began < 20
    finally:
        other.kill()
        other.wait()
    started(m, 999999999)  # no such pid
    assert status(m).returncode == 1


def test_running_is_decided_from_proc(tmp_path):
    proc = tmp_path / "proc"
    for pid, cgroup, cmdline in (
            ("10", "0::/system.slice/azure-firstboot-report-ready.service\n", b"/usr/bin/python3\0x\0"),
            ("11", "0::/user.slice\n", b"/usr/bin/python3\0/usr/bin/azure-firstboot\0report-ready\0"),
            ("12", "0::/user.slice\n", b"python3\0-m\0azure_firstboot\0--root\0/r\0report-ready\0"),
            ("13", "0::/user.slice\n", b"sh\0-c\0sleep 60\0report-ready\0"),
            ("14", "0::/system.slice/azure-firstboot-user.service\n", b"/usr/bin/azure-firstboot\0user\0"),
            ("15", "0::/user.slice\n", b"/usr/bin/azure-firstboot\0status\0")):
        (proc / pid).mkdir(parents=True)
        (proc / pid / "cgroup").write_text(cgroup)
        (proc / pid / "cmdline").write_bytes(cmdline)
    running = {pid: admin._running(pid, "report-ready", proc=str(proc)) for pid in "10 11 12 13 14 15".split()}
    assert running == {"10": True, "11": True, "12": True, "13": False, "14": False, "15": False}
    for bad in ("", "0", "-1", "1e3", "\u0661\u0662", "99999999", None):
        assert admin._running(bad, "report-ready", proc=str(proc)) is False


# ---------------------------------------------------------------- --wait bound

def test_wait_without_timeout_is_bounded_and_timeout_0_waits(tmp_path, fab, monkeypatch, capsys):
    m = Machine(tmp_path, fab)
    assert_ok([m.agent("network-wait"), m.agent("hostname")])
    argv = ["--config", m.config, "--root", m.root, "status", "--wait"]
    monkeypatch.setattr(admin, "WAIT_DEFAULT", 0.5)
    began = time.monotonic()
    assert cli.main(argv) == 3
    assert 0.4 <= time.monotonic() - began < 10
    # --timeout 0: no bound; it returns when report-ready has finished
    done = threading.Timer(1.0, lambda: m.agent("report-ready"))
    done.start()
    began = time.monotonic()
    assert cli.main(argv + ["--timeout", "0"]) == 0
    assert time.monotonic() - began >= 0.9
    done.join()
    capsys.readouterr()


# ---------------------------------------------------------------- EPIPE

@pytest.mark.parametrize("args", [(), ("--json",), ("--wait", "--timeout", "1")])
def test_a_reader_that_went_away_is_quiet(tmp_path, fab, args):
    m = Machine(tmp_path, fab)
    assert_ok(m.boot())
    r, w = os.pipe()
    os.close(r)  # as `status | head -0`
    try:
        proc = run(m, "status", *args, stdout=w, stderr=subprocess.PIPE, universal_newlines=True)
    finally:
        os.close(w)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
