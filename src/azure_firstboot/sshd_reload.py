"""Make a running sshd read its configuration again (SIGHUP to the listener
named by its PID file, checked in /proc)."""

import os

from azure_firstboot import protocol
from azure_firstboot.state import describe, read_text

SSHD_PID_FILES = ("/run/sshd.pid", "/var/run/sshd.pid")


def _proc_status(pid):
    fields = {}
    for line in (read_text("/proc/%d/status" % pid, 65536) or "").splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def sshd_listener_pid(pid_files=SSHD_PID_FILES):
    """The PID of the running sshd listener, or None: the number in its PID
    file, checked in /proc (named sshd, started by PID 1), so a stale file
    naming another process is never trusted."""
    for path in pid_files:
        try:
            text = (read_text(path, 64) or "").strip()
        except OSError:
            continue
        pid = protocol.wire_number(text, 10)
        if pid is None:
            continue
        try:
            status = _proc_status(pid)
        except OSError:
            continue
        if status.get("Name") == "sshd" and status.get("PPid") == "1":
            return pid
    return None


def reload_sshd(pid_files=SSHD_PID_FILES):
    """Make a running sshd read its configuration again: SIGHUP to the
    listener, which re-executes itself (what ssh.service's ExecReload does,
    without a systemctl process and a reload job that report-ready, ordered
    after ssh.service, would wait for: ~0.9 s of the first boot under TCG).
    Its "sshd -t" is left out on purpose: this sshd passed that check (or its
    own at start) before the one change since, our drop-in of a
    PasswordAuthentication and a KbdInteractiveAuthentication line, valid
    everywhere, also inside Match.
    Returns one line for the record."""
    import _signal

    pid = sshd_listener_pid(pid_files)
    if pid is None:
        return "sshd not running (reads it when it starts)"
    try:
        os.kill(pid, _signal.SIGHUP)
    except OSError as exc:
        return "sshd (PID %d) not reloaded: %s" % (pid, describe(exc))
    return "sshd (PID %d) reloaded" % pid
