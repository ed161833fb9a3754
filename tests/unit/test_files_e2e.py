"""Issue 8, the filesystem side, with the real CLI over loopback against the
emulator: Ready only when it is true (a killed step, a step that could not
record, an unwritable state directory never end in Ready; a disabled step
does not block it), --root as a boundary for every command that reads,
writes or deletes, and files that are not what they should be (a FIFO in
place of the marker) answered at once."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from fabric_emulator import Fabric
from test_agent_e2e import TOP, VM_ID, Machine, assert_ok, fab, ready_reports  # noqa: F401 (fixture)

from azure_firstboot import state as st
from azure_firstboot import netstack

STATE = "var/lib/azure-firstboot"
UNIT = "azure-firstboot-hostname.service"


def spawn(m, *args):
    environ = dict(os.environ, PYTHONPATH=os.path.join(TOP, "src"))
    return subprocess.Popen(
        [sys.executable, "-m", "azure_firstboot", "--config", m.config, "--root", m.root] + list(args),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ,
        universal_newlines=True)


def wait_for(predicate, timeout=30):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def started(m, step):
    def check():
        try:
            return "result=started" in m.read("run/azure-firstboot/%s.boot" % step)
        except OSError:
            return False
    return check


def failed_report(fab):
    reports = fab.health_reports()
    assert len(reports) == 1 and ready_reports(fab) == [], reports
    assert reports[0]["state"] == "NotReady" and reports[0]["substatus"] == "ProvisioningFailed"
    return reports[0]["description"]


def enable_unit(m, unit=UNIT):
    wants = m.path("etc/systemd/system/multi-user.target.wants")
    os.makedirs(wants, exist_ok=True)
    os.symlink("/usr/lib/systemd/system/" + unit, os.path.join(wants, unit))


def swap_state_dir_for_a_file(m):
    os.rename(m.path(STATE), m.path(STATE + ".moved"))
    m.write(STATE, "a regular file where the state directory should be\n")


# ------------------------------------------------------- Ready only when true

def test_killed_hostname_step_ends_in_provisioning_failed(tmp_path):
    with Fabric({"imds_delay": 60}).start() as fab:
        m = Machine(tmp_path, fab)
        assert_ok([m.agent("network-wait")])
        proc = spawn(m, "hostname")
        wait_for(started(m, "hostname"))
        time.sleep(0.5)  # now waiting on the delayed IMDS answer
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        rr = m.agent("report-ready")
        assert rr.returncode == 1 and "Traceback" not in rr.stderr
        assert "hostname: started but did not finish (crashed or killed)" in failed_report(fab)
        assert not os.path.exists(m.path(STATE + "/provisioned"))
        assert "hostname:     started at" in m.agent("status").stdout


@pytest.mark.parametrize("broken", [STATE, "run/azure-firstboot"])
def test_unwritable_records_end_in_provisioning_failed(tmp_path, fab, broken):
    m = Machine(tmp_path, fab)
    m.write(broken, "a regular file where a directory should be\n")
    net, host, rr = m.boot()
    for proc in (net, host):
        assert proc.returncode == 1 and "cannot write its records" in proc.stderr, proc.stderr
        assert len(proc.stderr.splitlines()) == 1
    assert rr.returncode == 1 and "Traceback" not in rr.stderr
    description = failed_report(fab)
    assert "hostname: cannot write its records" in description
    assert "report-ready: cannot write its records" in description
    assert m.read("etc/hostname") == "localhost\n"  # failed before changing anything


def test_step_that_cannot_record_its_result_counts_as_failed(tmp_path):
    with Fabric({"imds_delay": 1.0}).start() as fab:
        m = Machine(tmp_path, fab)
        assert_ok([m.agent("network-wait")])
        proc = spawn(m, "hostname")
        wait_for(started(m, "hostname"))
        swap_state_dir_for_a_file(m)  # while the step waits on IMDS
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "could not record its result (ok)" in err, err
        shutil.rmtree(m.path(STATE + ".moved"))
        os.unlink(m.path(STATE))
        rr = m.agent("report-ready")
        assert rr.returncode == 1
        assert "hostname: could not record its result (ok)" in failed_report(fab)


def test_ready_acknowledged_but_marker_not_written(tmp_path):
    with Fabric({"ws_delay": 1.0}).start() as fab:
        m = Machine(tmp_path, fab)
        assert_ok([m.agent("network-wait"), m.agent("hostname")])
        proc = spawn(m, "report-ready")
        wait_for(started(m, "report-ready"))
        swap_state_dir_for_a_file(m)  # "disk full" after the checks, before the marker
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "Traceback" not in err
        assert len(ready_reports(fab)) == 1
        assert "Ready was acknowledged for incarnation 1, but the marker could not be written" in err
        assert "will report Ready again at its next boot" in err
        status = m.agent("status").stdout
        assert "not run for this VM" not in status.split("report-ready:")[1]
        assert "Ready was acknowledged" in status and "provisioned:  no" in status


def test_enabled_step_that_left_no_result_blocks_ready(tmp_path, fab):
    m = Machine(tmp_path, fab)
    enable_unit(m)
    assert_ok([m.agent("network-wait")])
    rr = m.agent("report-ready")  # the hostname unit is enabled but never ran
    assert rr.returncode == 1
    assert "hostname: enabled but left no result in this boot" in failed_report(fab)


@pytest.mark.parametrize("how", ["unit not enabled", "unit masked", "configuration"])
def test_disabled_step_does_not_block_ready(tmp_path, fab, how):
    settings = {"hostname__enabled": "no"} if how == "configuration" else {}
    m = Machine(tmp_path, fab, **settings)
    if how != "unit not enabled":
        enable_unit(m)
    if how == "unit masked":
        os.symlink("/dev/null", m.path("etc/systemd/system/" + UNIT))
    assert_ok([m.agent("network-wait"), m.agent("report-ready")])
    assert len(ready_reports(fab)) == 1 and len(fab.health_reports()) == 1


# ------------------------------------------------------- --root is a boundary

def snapshot(top):
    """Every path under ``top`` with its content (or link target)."""
    seen = {}
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                seen[path] = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    seen[path] = handle.read()
            else:
                seen[path] = "dir"
    return seen


def outside_tree(tmp_path):
    out = tmp_path / "outside"
    files = {
        "etc/hostname": "outside-host\n",
        "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 outside-host\n",
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "ssh/ssh_host_ed25519_key": "outside secret",
        "state/provisioned": "vm_id=%s\nincarnation=9\ntime=x\n" % VM_ID,
        "state/hostname.result": "result=ok\n",
        "run/endpoint": "127.0.0.1:1\n",
        "dhcp/dhclient.eth0.leases": "lease {}\n",
    }
    for rel, text in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    return str(out)


@pytest.mark.parametrize("style", ["absolute", "relative"])
def test_root_is_a_boundary_for_every_command(tmp_path, fab, style):
    outside = outside_tree(tmp_path)
    m = Machine(tmp_path / "root", fab)
    os.makedirs(m.path("var/lib"), exist_ok=True)

    def link(rel, target):
        path = m.path(rel)
        if os.path.lexists(path):
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if style == "relative":
            target = os.path.relpath(target, os.path.dirname(path))
        os.symlink(target, path)

    # the machine's identity files stay in the root; what the agent writes or
    # deletes is symlinked out of it
    etc_real = m.path("etc")
    os.rename(etc_real, m.path("etc.real"))
    link("etc", os.path.join(outside, "etc"))
    link("var/lib/azure-firstboot", os.path.join(outside, "state"))
    link("run/azure-firstboot", os.path.join(outside, "run"))
    link("var/lib/dhcp", os.path.join(outside, "dhcp"))
    before = snapshot(outside)

    assert "provisioned:  no" in m.agent("status").stdout  # the outside marker is not read
    assert_ok(m.boot())
    assert len(ready_reports(fab)) == 1
    # inside the root, the links mean what they would in a chroot
    marker = st.Paths(m.root).state("provisioned")
    assert marker.startswith(os.path.realpath(m.root) + "/") and os.path.isfile(marker)
    assert "provisioned:  yes" in m.agent("status").stdout

    # deprovision: a symlinked /etc/ssh, state directory and lease directory
    os.unlink(m.path("etc"))
    os.rename(m.path("etc.real"), m.path("etc"))
    link("etc/ssh", os.path.join(outside, "ssh"))
    dry = m.agent("deprovision", "--dry-run", "--all")
    assert dry.returncode == 0 and "would remove" in dry.stdout
    real_root = os.path.realpath(m.root) + "/"
    shown = [line.split(" ", 2)[2] for line in dry.stdout.splitlines() if line.startswith("would ")]
    assert shown and all(path.startswith(real_root) for path in shown), shown
    assert m.agent("deprovision", "--all", "--force").returncode == 0
    assert snapshot(outside) == before


def test_lease_symlinked_out_of_the_root_is_not_read(tmp_path):
    lease = "lease {\n  option unknown-245 7f:a:b:c;\n  expire never;\n}\n"
    root = tmp_path / "root"
    (root / "var/lib/dhcp").mkdir(parents=True)
    (tmp_path / "outside.leases").write_text(lease)
    os.symlink(str(tmp_path / "outside.leases"), str(root / "var/lib/dhcp/dhclient.eth0.leases"))
    paths = st.Paths(str(root))
    assert netstack.lease_endpoint(paths, time.time()) is None
    os.unlink(str(root / "var/lib/dhcp/dhclient.eth0.leases"))
    (root / "var/lib/dhcp/dhclient.eth0.leases").write_text(lease)  # the same lease inside: read
    assert netstack.lease_endpoint(paths, time.time()) == "127.10.11.12"


def test_deprovision_on_a_root_never_follows_entries(tmp_path, fab):
    outside = outside_tree(tmp_path)
    m = Machine(tmp_path / "root", fab)
    os.makedirs(m.path("etc/ssh"))
    os.symlink(os.path.join(outside, "ssh/ssh_host_ed25519_key"), m.path("etc/ssh/ssh_host_ed25519_key"))
    os.makedirs(m.path(STATE))
    os.symlink(os.path.join(outside, "state"), m.path(STATE + "/sub"))
    before = snapshot(outside)
    assert m.agent("deprovision", "--all", "--force").returncode == 0
    assert not os.path.lexists(m.path("etc/ssh/ssh_host_ed25519_key"))
    assert os.listdir(m.path(STATE)) == []
    assert snapshot(outside) == before


# ------------------------------------------------------- files that are not files

def test_fifo_in_place_of_the_marker_is_answered_at_once(tmp_path, fab):
    m = Machine(tmp_path, fab)
    os.makedirs(m.path(STATE))
    os.mkfifo(m.path(STATE + "/provisioned"))
    status = m.agent("status")  # would block forever if it opened the FIFO
    assert status.returncode == 5 and "provisioned:  no" in status.stdout  # 5: cannot read the state
    assert "not a regular file" in status.stderr
    procs = m.boot()
    assert_ok(procs)
    assert len(ready_reports(fab)) == 1
    assert os.path.isfile(m.path(STATE + "/provisioned"))  # replaced by the real marker


def test_oversized_hosts_file_is_left_whole(tmp_path, fab):
    m = Machine(tmp_path, fab)
    big = b"127.0.0.1\tlocalhost\n127.0.1.1\told\n" + b"# \xff padding\n" * 90000
    with open(m.path("etc/hosts"), "wb") as handle:
        handle.write(big)
    procs = m.boot()
    assert_ok(procs)
    assert "/etc/hosts left alone: larger than 1 MiB" in procs[1].stderr
    with open(m.path("etc/hosts"), "rb") as handle:
        assert handle.read() == big
    assert m.read("etc/hostname") == "myvm\n"
    assert len(ready_reports(fab)) == 1


@pytest.mark.parametrize("fifo", ["var/lib/azure-firstboot/provisioned", "sys/class/dmi/id/product_uuid"])
def test_generator_does_not_block_on_a_fifo(tmp_path, fifo):
    for rel, text in (("sys/class/dmi/id/product_uuid", VM_ID + "\n"),
                      ("var/lib/azure-firstboot/provisioned", "vm_id=%s\n" % VM_ID)):
        os.makedirs(str((tmp_path / rel).parent), exist_ok=True)
        if rel == fifo:
            os.mkfifo(str(tmp_path / rel))
        else:
            (tmp_path / rel).write_text(text)
    proc = subprocess.run(["sh", os.path.join(TOP, "systemd", "azure-firstboot-generator"), "/tmp/n", "/tmp/e",
                           "/tmp/l"], env={"AZURE_FIRSTBOOT_ROOT": str(tmp_path)}, timeout=10,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.returncode == 0 and proc.stderr == b""
    assert not os.path.exists(str(tmp_path / "run/azure-firstboot/provisioned"))


def test_marker_that_cannot_be_written_is_known_before_reporting(tmp_path, fab):
    m = Machine(tmp_path, fab)
    os.makedirs(m.path(STATE + "/provisioned"))
    rr = m.boot()[-1]
    assert rr.returncode == 1 and "Traceback" not in rr.stderr
    assert "cannot write the marker" in failed_report(fab) and "is a directory" in failed_report(fab)
