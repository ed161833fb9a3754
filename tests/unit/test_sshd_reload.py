"""sshd_reload.reload_sshd: SIGHUP to the sshd listener named by its PID file, checked in /proc."""

import os
import shutil
import time

import pytest

from azure_firstboot import sshd_reload


def _orphan_named_sshd(tmp_path):
    """A process called "sshd" whose parent is PID 1 (double fork), as systemd's
    sshd listener is; returns its PID, or None when this machine reparents
    orphans to a subreaper instead of PID 1."""
    exe = str(tmp_path / "sshd")
    shutil.copy("/bin/sleep", exe)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            grandchild = os.fork()
            if grandchild == 0:
                os.close(r)
                os.close(w)
                os.execv(exe, [exe, "60"])
            os.write(w, str(grandchild).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(child, 0)
    pid = int(os.read(r, 32))
    os.close(r)
    for _ in range(100):
        status = sshd_reload._proc_status(pid)
        if status.get("Name") == "sshd":
            break
        time.sleep(0.01)
    if status.get("PPid") != "1":
        os.kill(pid, 9)
        return None
    return pid


def _alive(pid):
    try:
        state = sshd_reload._proc_status(pid).get("State", "")
    except OSError:
        return False
    return not state.startswith(("Z", "X"))


def test_sighup_reaches_the_listener_named_by_its_pid_file(tmp_path):
    pid = _orphan_named_sshd(tmp_path)
    if pid is None:
        pytest.skip("orphans are not reparented to PID 1 here (subreaper)")
    try:
        pid_file = tmp_path / "sshd.pid"
        pid_file.write_text("%d\n" % pid)
        files = (str(tmp_path / "missing.pid"), str(pid_file))
        assert sshd_reload.sshd_listener_pid(files) == pid
        assert sshd_reload.reload_sshd(files) == "sshd (PID %d) reloaded" % pid
        for _ in range(200):  # sleep(1) dies of SIGHUP: the signal arrived
            if not _alive(pid):
                break
            time.sleep(0.01)
        assert not _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, 9)


@pytest.mark.parametrize("content", ["", "abc\n", "-1\n", "12345678901\n", "\u00b2\n", "1 2\n"])
def test_unusable_pid_files_are_not_trusted(tmp_path, content):
    pid_file = tmp_path / "sshd.pid"
    pid_file.write_text(content)
    assert sshd_reload.sshd_listener_pid((str(pid_file),)) is None
    assert sshd_reload.reload_sshd((str(pid_file),)) == "sshd not running (reads it when it starts)"


def test_a_pid_file_naming_another_process_is_not_trusted(tmp_path):
    # this test's own process: alive, but not sshd and not a child of PID 1
    pid_file = tmp_path / "sshd.pid"
    pid_file.write_text("%d\n" % os.getpid())
    assert sshd_reload.sshd_listener_pid((str(pid_file),)) is None
    # a stale file naming a process that is gone
    pid_file.write_text("%d\n" % (2 ** 22 + 1))
    assert sshd_reload.sshd_listener_pid((str(pid_file),)) is None
    assert sshd_reload.sshd_listener_pid((str(tmp_path / "none.pid"),)) is None
