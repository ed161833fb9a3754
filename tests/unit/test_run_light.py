"""system.run_light: the hostname unit's networkctl runner without the subprocess module."""

import os
import subprocess
import sys

from azure_firstboot import system

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_output_status_and_no_shell():
    assert system.run_light(["true"]) == (True, "")
    assert system.run_light(["sh", "-c", "echo out; echo err >&2; exit 3"]) == (False, "out err")
    # an argument is never interpreted by a shell
    assert system.run_light(["echo", "$(touch /tmp/pwned-run-light); x"]) == (True, "$(touch /tmp/pwned-run-light); x")
    assert not os.path.exists("/tmp/pwned-run-light")


def test_stdin_is_empty_and_missing_commands_fail():
    assert system.run_light(["cat"]) == (True, "")
    assert system.run_light(["no-such-command-xyz"]) == (False, "no-such-command-xyz: not found")
    assert system.run_light(["/nonexistent/xyz"]) == (False, "exit status 127")


def test_timeout_kills_the_child():
    ok, text = system.run_light(["sleep", "30"], timeout=0.5)
    assert not ok and "timed out" in text


def test_no_subprocess_import():
    code = ("import sys; from azure_firstboot import system; system.run_light(['true']); "
            "print(sorted(m for m in ('subprocess', 're', 'locale', 'threading') if m in sys.modules))")
    out = subprocess.check_output([sys.executable, "-I", "-S", "-c", "import sys; sys.path.insert(0, %r); %s"
                                   % (os.path.join(TOP, "src"), code)], universal_newlines=True)
    assert out.strip() == "[]"
