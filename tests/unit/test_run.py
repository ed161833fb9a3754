"""commands.run: the one command runner (fork + exec, no shell, no subprocess module)."""

import os
import subprocess
import sys

from azure_firstboot import commands

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_output_status_and_no_shell():
    assert commands.run(["true"]) == (True, "")
    assert commands.run(["sh", "-c", "echo out; echo err >&2; exit 3"]) == (False, "out err")
    # an argument is never interpreted by a shell
    assert commands.run(["echo", "$(touch /tmp/pwned-run-light); x"]) == (True, "$(touch /tmp/pwned-run-light); x")
    assert not os.path.exists("/tmp/pwned-run-light")


def test_stdin_is_empty_and_missing_commands_fail():
    assert commands.run(["cat"]) == (True, "")
    assert commands.run(["no-such-command-xyz"]) == (False, "no-such-command-xyz: not found")
    assert commands.run(["/nonexistent/xyz"]) == (False, "exit status 127")


def test_stdin_reaches_the_command_and_never_its_arguments():
    secret = b"azureuser:s3cr3t $(touch /tmp/pwned-run)\n"
    assert commands.run(["cat"], stdin=secret) == (True, "azureuser:s3cr3t $(touch /tmp/pwned-run)")
    assert not os.path.exists("/tmp/pwned-run")
    # more than a pipe buffer in and out at once: no deadlock
    big = b"x" * 300000 + b"\n"
    ok, text = commands.run(["cat"], stdin=big, raw=True)
    assert ok and text == "x" * 65536
    # a command that never reads its stdin and exits: no hang, no error
    assert commands.run(["true"], stdin=big) == (True, "")


def test_raw_keeps_lines_and_failures_name_the_status():
    assert commands.run(["printf", "a b\nc\n"], raw=True) == (True, "a b\nc\n")
    assert commands.run(["false"]) == (False, "exit status 1")


def test_commands_get_default_sigpipe():
    # Python ignores SIGPIPE; a command run from it must not inherit that
    ok, text = commands.run(["grep", "SigIgn", "/proc/self/status"])
    assert ok
    ignored = int(text.split()[-1], 16)
    assert not ignored & (1 << (13 - 1)), text


def test_timeout_kills_the_child():
    ok, text = commands.run(["sleep", "30"], timeout=0.5)
    assert not ok and "timed out" in text


def test_no_subprocess_import():
    code = ("import sys; from azure_firstboot import commands; commands.run(['true']); commands.run(['cat'], stdin=b'x'); "
            "print(sorted(m for m in ('subprocess', 're', 'locale', 'threading') if m in sys.modules))")
    out = subprocess.check_output([sys.executable, "-I", "-S", "-c", "import sys; sys.path.insert(0, %r); %s"
                                   % (os.path.join(TOP, "src"), code)], universal_newlines=True)
    assert out.strip() == "[]"


def test_a_command_that_closes_its_output_but_runs_on_is_timed_out():
    # stdout/stderr closed at once, then it lingers: the wait for its exit is bounded too
    ok, text = commands.run(["sh", "-c", "exec >&- 2>&-; sleep 30"], timeout=0.5)
    assert not ok and "timed out" in text


def test_fork_failure_is_one_line(monkeypatch):
    def no_fork():
        raise OSError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(commands.os, "fork", no_fork)
    before = len(os.listdir("/proc/self/fd"))
    assert commands.run(["true"], stdin=b"x") == (False, "true: Resource temporarily unavailable")
    assert len(os.listdir("/proc/self/fd")) == before  # no descriptor leaked
