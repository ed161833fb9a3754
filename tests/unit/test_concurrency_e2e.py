"""Steps run twice at once, and steps killed (SIGKILL, the whole process
group, as systemd kills a unit's cgroup) at several points: the real CLI on a
scratch --root against the fabric emulator.

What must hold (docs/design.md, "Under bad input"): one run of a step at a
time (the second waits for the first, bounded, then finds its work done);
Ready is posted once; a step killed anywhere is never followed by Ready, and
an account the user step may have created is always known to
``deprovision --user``."""

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from fabric_emulator import Fabric
from test_agent_e2e import TOP, assert_ok, ready_reports
from test_user_e2e import PASSWD, UserMachine

from azure_firstboot import state

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="useradd --root needs root (chroot)")


def spawn(m, *args):
    """The agent as its own process group (killed whole, like a unit's cgroup)."""
    environ = dict(os.environ, PYTHONPATH=os.path.join(TOP, "src"))
    return subprocess.Popen(
        [sys.executable, "-m", "azure_firstboot", "--config", m.config, "--root", m.root] + list(args),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ, universal_newlines=True,
        start_new_session=True)


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def owners(m, uid, gid, home_may_be_roots=False):
    """The user's ~/.ssh and authorized_keys (and home) are the account's.  A
    home useradd made but was killed before it chowned it stays root's, which
    sshd accepts (StrictModes: the user's or root's)."""
    for rel in ("home/alice", "home/alice/.ssh", "home/alice/.ssh/authorized_keys"):
        info = os.lstat(m.path(rel))
        if rel == "home/alice" and home_may_be_roots and info.st_uid == 0:
            continue
        assert (info.st_uid, info.st_gid) == (uid, gid), rel


# ------------------------------------------------------------------ twice at once

def test_two_user_runs_at_once_make_one_consistent_account(tmp_path):
    # IMDS answers slowly, so both runs are inside the step at the same time
    with Fabric({"admin_username": "alice", "imds_delay": 0.5}).start() as fab:
        m = UserMachine(tmp_path, fab)
        assert_ok([m.agent("network-wait"), m.agent("hostname")])
        procs = [spawn(m, "user"), spawn(m, "user")]
        results = [finish(p) for p in procs]
        for code, out, err in results:
            assert code == 0 and "Traceback" not in err, (code, out, err)
        lines = [l for l in m.read("etc/passwd").splitlines() if l.startswith("alice:")]
        assert len(lines) == 1
        uid, gid = int(lines[0].split(":")[2]), int(lines[0].split(":")[3])
        owners(m, uid, gid)
        assert m.read("home/alice/.ssh/authorized_keys").count("\n") == 1
        assert "created=alice" in m.read("var/lib/azure-firstboot/user.accounts")
        assert_ok([m.agent("report-ready")])
        assert len(ready_reports(fab)) == 1


def test_two_report_ready_runs_at_once_post_ready_once(tmp_path):
    with Fabric({"ws_delay": 0.3}).start() as fab:
        m = UserMachine(tmp_path, fab)
        assert_ok([m.agent("network-wait"), m.agent("hostname"), m.agent("user")])
        procs = [spawn(m, "report-ready"), spawn(m, "report-ready")]
        results = [finish(p) for p in procs]
        assert [code for code, _, _ in results] == [0, 0], results
        assert len(fab.health_reports()) == 1 and len(ready_reports(fab)) == 1
        assert sum("already provisioned" in out for _, out, _ in results) == 1
        # and later, by hand: the marker says it is done
        before = len(fab.requests())
        assert_ok([m.agent("report-ready")])
        assert len(fab.requests()) == before and len(fab.health_reports()) == 1


def test_a_run_waits_for_the_one_holding_the_step_lock(tmp_path):
    with Fabric({"admin_username": "alice"}).start() as fab:
        m = UserMachine(tmp_path, fab)
        assert_ok([m.agent("network-wait"), m.agent("hostname")])
        path = m.path("run/azure-firstboot/user.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        timer = threading.Timer(1.5, os.close, (fd,))
        timer.start()
        began = time.monotonic()
        proc = m.agent("user")
        timer.join()
        assert proc.returncode == 0, proc.stderr
        assert time.monotonic() - began >= 1.4
        assert m.account("alice") is not None


def test_step_lock_is_bounded_and_names_the_holder(tmp_path):
    path = str(tmp_path / "run" / "user.lock")
    fd, holder = state.step_lock(path, 0.0)
    assert fd is not None and holder is None
    began = time.monotonic()
    assert state.step_lock(path, 0.2) == (None, str(os.getpid()))
    assert 0.15 <= time.monotonic() - began < 5
    os.close(fd)
    fd, holder = state.step_lock(path, 0.0)
    assert fd is not None
    os.close(fd)
    fifo = str(tmp_path / "run" / "fifo.lock")
    os.mkfifo(fifo)
    assert state.step_lock(fifo, 0.0) == (None, None)  # no lock, never blocks
    os.symlink(path, str(tmp_path / "run" / "link.lock"))
    assert state.step_lock(str(tmp_path / "run" / "link.lock"), 0.0) == (None, None)


# ------------------------------------------------------------------ kill -9

def _in_passwd(m):
    return "\nalice:" in m.read("etc/passwd")


KILL_POINTS = [
    ("started", lambda m: "result=started" in _read(m, "run/azure-firstboot/user.boot")),
    ("intent recorded", lambda m: os.path.exists(m.path("var/lib/azure-firstboot/user.accounts"))),
    ("in /etc/passwd", _in_passwd),
    ("home made", lambda m: os.path.isdir(m.path("home/alice"))),
    ("keys written", lambda m: os.path.exists(m.path("home/alice/.ssh/authorized_keys"))),
    ("sudoers written", lambda m: os.path.exists(m.path("etc/sudoers.d/azure-firstboot"))),
]


def _read(m, rel):
    try:
        return m.read(rel)
    except (OSError, UnicodeDecodeError):
        return ""


@pytest.mark.parametrize("point", [name for name, _ in KILL_POINTS])
def test_user_step_killed_at_each_point(tmp_path, point):
    """SIGKILL to the step's process group as soon as the point is seen (polled
    every millisecond, so the kill lands at or just after it)."""
    seen = dict(KILL_POINTS)[point]
    with Fabric({"admin_username": "alice"}).start() as fab:
        m = UserMachine(tmp_path, fab)
        assert_ok([m.agent("network-wait"), m.agent("hostname")])
        proc = spawn(m, "user")
        end = time.monotonic() + 60
        while proc.poll() is None and not seen(m) and time.monotonic() < end:
            time.sleep(0.001)
        killed = proc.poll() is None
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        gone_by = time.monotonic() + 20
        while time.monotonic() < gone_by:  # and its useradd reaped: a zombie still "holds"
            try:                           # /etc/passwd.lock for the next useradd
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.01)
        # the kill may land just after the step recorded its result (it finished)
        finished = "result=ok" in _read(m, "run/azure-firstboot/user.boot")
        rr = m.agent("report-ready")
        if killed and not finished:
            # never Ready after a step that did not finish
            assert rr.returncode == 1 and "started but did not finish" in rr.stderr, rr.stderr
            assert ready_reports(fab) == []
            assert not os.path.exists(m.path("var/lib/azure-firstboot/provisioned"))
        # an account that exists is always one deprovision --user knows
        if _in_passwd(m):
            dry = m.agent("deprovision", "--user", "--dry-run")
            assert "would remove the admin user alice" in dry.stdout, (point, dry.stdout, dry.stderr)
        # the next run (a reboot) finishes the work and reconciles the record
        m.reboot()
        procs = [m.agent(step) for step in ("network-wait", "hostname", "user", "report-ready")]
        for p in procs:
            assert p.returncode == 0, (point, p.args[-1], p.stdout, p.stderr, m.read("etc/passwd"),
                                       sorted(os.listdir(m.path("etc"))))
        assert len(ready_reports(fab)) == 1
        entry = m.account("alice")
        owners(m, int(entry[2]), int(entry[3]), home_may_be_roots=True)
        assert m.read("var/lib/azure-firstboot/user.accounts") == "created=alice\n"
        assert m.read("etc/passwd").startswith(PASSWD)


def test_intent_of_an_account_never_created_is_dropped(tmp_path):
    with Fabric({"admin_username": "alice"}).start() as fab:
        m = UserMachine(tmp_path, fab)
        m.add_user("bob", 1001)
        m.write("var/lib/azure-firstboot/user.accounts", "created=alice bob ghost\n")
        # deprovision --user removes only accounts that exist and carry our comment
        dry = m.agent("deprovision", "--user", "--dry-run")
        assert "admin user" not in dry.stdout, dry.stdout
        assert_ok([m.agent(step) for step in ("network-wait", "hostname", "user", "report-ready")])
        # ghost never existed: dropped; bob exists: kept (the record says we made it)
        assert m.read("var/lib/azure-firstboot/user.accounts") == "created=alice bob\n"


def test_ready_is_not_posted_again_after_the_marker_failed(tmp_path):
    # Ready acknowledged, the marker could not be written: a second run in the
    # same boot must not post Ready for the same incarnation again
    from test_files_e2e import started, swap_state_dir_for_a_file, wait_for

    with Fabric({"ws_delay": 1.0}).start() as fab:
        m = UserMachine(tmp_path, fab, user__enabled="no")
        assert_ok([m.agent("network-wait"), m.agent("hostname"), m.agent("user")])
        proc = spawn(m, "report-ready")
        wait_for(started(m, "report-ready"))
        swap_state_dir_for_a_file(m)
        code, out, err = finish(proc)
        assert code == 1 and "the marker could not be written" in err
        assert len(ready_reports(fab)) == 1
        # the state directory is back (space freed): run again in this boot
        os.unlink(m.path("var/lib/azure-firstboot"))
        os.rename(m.path("var/lib/azure-firstboot.moved"), m.path("var/lib/azure-firstboot"))
        again = m.agent("report-ready")
        assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
        assert "not posted again" in again.stdout, again.stdout
        assert len(ready_reports(fab)) == 1 and len(fab.health_reports()) == 1
        assert "incarnation=1" in m.read("var/lib/azure-firstboot/provisioned")
