"""deprovision as a person and a script use it: the CLI as a real process on a
scratch root (--root), through a pipe and through a real pseudo-terminal."""

import os
import pty
import select
import subprocess
import sys
import time

import pytest

import image_tree

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IDENTITY = {
    "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
    "var/lib/dbus/machine-id": "0123456789abcdef0123456789abcdef\n",
    "etc/hostname": "build-vm\n",
    "etc/ssh/ssh_host_ed25519_key": "secret",
    "etc/ssh/ssh_host_ed25519_key.pub": "public",
    "var/lib/dhcp/dhclient.eth0.leases": "lease {}\n",
    "run/systemd/netif/leases/2": "ADDRESS=10.0.0.4\n",
    "var/lib/azure-firstboot/provisioned": "vm_id=x\n",
    "var/lib/azure-firstboot/hostname.result": "result=success\n",
}
KEPT = {
    "etc/ssh/sshd_config": "Include /etc/ssh/sshd_config.d/*.conf\n# keep me\n",
    "home/azureuser/.ssh/authorized_keys": "keep me too",
    "etc/hosts": "127.0.0.1 localhost\n",
}


def make_root(tmp_path, extra=None):
    """A good image (image_tree: what 'check' wants) with a build VM's identity."""
    root = image_tree.good_image(str(tmp_path / "root"))
    for rel, text in dict(IDENTITY, **KEPT, **(extra or {})).items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
    conf = os.path.join(root, "etc/azure-firstboot/azure-firstboot.conf")
    os.makedirs(os.path.dirname(conf), exist_ok=True)
    open(conf, "w").close()
    return root


def argv(root, *args):
    return [sys.executable, "-m", "azure_firstboot", "--config",
            os.path.join(root, "etc/azure-firstboot/azure-firstboot.conf"), "--root", root] + list(args)


def env():
    return dict(os.environ, PYTHONPATH=os.path.join(TOP, "src"))


def run(root, *args):
    """Not a terminal: stdin is /dev/null, as in Packer, a chroot or CI."""
    return subprocess.run(argv(root, *args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env(), timeout=60, universal_newlines=True)


def gone(root, rel):
    path = os.path.join(root, rel)
    if rel in ("etc/machine-id", "etc/hostname"):
        return open(path).read() == ""     # emptied, not removed: systemd expects the file
    return not os.path.lexists(path)


def assert_kept(root):
    for rel, text in KEPT.items():
        assert open(os.path.join(root, rel)).read() == text, rel


def test_no_flags_generalizes_like_waagent_deprovision(tmp_path):
    root = make_root(tmp_path)
    proc = run(root, "deprovision")
    assert proc.returncode == 0, proc.stderr
    for rel in IDENTITY:
        assert gone(root, rel), rel
    assert_kept(root)
    assert "Traceback" not in proc.stderr
    again = run(root, "deprovision")
    assert again.returncode == 0 and "nothing to remove" in again.stdout


def test_all_is_the_same_as_no_flags(tmp_path):
    a, b = make_root(tmp_path / "a"), make_root(tmp_path / "b")
    pa, pb = run(a, "deprovision", "--dry-run"), run(b, "deprovision", "--dry-run", "--all")
    assert pa.returncode == pb.returncode == 0
    assert pa.stdout.replace(a, "ROOT") == pb.stdout.replace(b, "ROOT")
    assert pa.stdout.count("would ") == len(IDENTITY)


def test_named_parts_remove_only_those(tmp_path):
    root = make_root(tmp_path)
    proc = run(root, "deprovision", "--machine-id", "--hostname")
    assert proc.returncode == 0, proc.stderr
    assert gone(root, "etc/machine-id") and gone(root, "etc/hostname")
    assert gone(root, "var/lib/azure-firstboot/provisioned")      # our state always goes
    assert not gone(root, "etc/ssh/ssh_host_ed25519_key")
    assert not gone(root, "var/lib/dhcp/dhclient.eth0.leases")


def test_dry_run_changes_nothing(tmp_path):
    root = make_root(tmp_path)
    proc = run(root, "deprovision", "--dry-run")
    assert proc.returncode == 0
    assert "would truncate %s/etc/machine-id" % root in proc.stdout
    for rel in IDENTITY:
        assert not gone(root, rel), rel


@pytest.mark.parametrize("flag", ["--force", "-y"])
def test_force_flags_are_accepted(tmp_path, flag):
    root = make_root(tmp_path)
    proc = run(root, "deprovision", flag)
    assert proc.returncode == 0, proc.stderr
    assert gone(root, "etc/machine-id")


def test_force_is_only_a_deprovision_flag(tmp_path):
    root = make_root(tmp_path)
    proc = run(root, "status", "--force")
    assert proc.returncode == 2 and "unknown option --force" in proc.stderr


# ------------------------------------------------------------- on a terminal

def on_terminal(root, answer, *args):
    """Run with stdin/stdout/stderr on a pty; answer the prompt; -> (code, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        try:
            os.execve(sys.executable, argv(root, *args), env())
        finally:
            os._exit(127)
    output, answered, deadline = b"", False, time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
        if not answered and b"[y/N]" in output and answer is not None:
            os.write(fd, answer.encode() + b"\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.WEXITSTATUS(status), output.decode("utf-8", "replace")


@pytest.mark.parametrize("answer", ["n", "", "nope"])
def test_terminal_asks_and_anything_but_yes_cancels(tmp_path, answer):
    root = make_root(tmp_path)
    code, out = on_terminal(root, answer, "deprovision")
    assert "[y/N]" in out and "will truncate %s/etc/machine-id" % root in out
    assert code == 1 and "cancelled, nothing changed" in out
    for rel in IDENTITY:
        assert not gone(root, rel), rel


@pytest.mark.parametrize("answer", ["y", "YES"])
def test_terminal_yes_proceeds(tmp_path, answer):
    root = make_root(tmp_path)
    code, out = on_terminal(root, answer, "deprovision")
    assert code == 0, out
    for rel in IDENTITY:
        assert gone(root, rel), rel


@pytest.mark.parametrize("args", [("--force",), ("-y",), ("--dry-run",)])
def test_terminal_does_not_ask_with_force_or_dry_run(tmp_path, args):
    root = make_root(tmp_path)
    code, out = on_terminal(root, None, "deprovision", *args)
    assert code == 0 and "[y/N]" not in out


# --------------------------------------------------- other agents in the image

def test_warns_about_installed_waagent_and_cloud_init(tmp_path):
    root = make_root(tmp_path, {
        "usr/sbin/waagent": "#!/bin/sh\n",
        "lib/systemd/system/walinuxagent.service": "[Unit]\n",
        "etc/systemd/system/multi-user.target.wants/walinuxagent.service": "",
        "usr/bin/cloud-init": "#!/bin/sh\n",
    })
    proc = run(root, "deprovision", "--dry-run")
    assert proc.returncode == 0
    lines = [l for l in proc.stderr.splitlines() if l.startswith("azure-firstboot: warning:")]
    assert len(lines) == 2, proc.stderr
    assert "waagent is still installed" in lines[0] and "and enabled" in lines[0]
    assert "apt purge waagent" in lines[0]     # Debian's package name
    assert "cloud-init is still installed" in lines[1]


def test_warns_about_a_leftover_enablement_link(tmp_path):
    root = make_root(tmp_path)
    wants = os.path.join(root, "etc/systemd/system/multi-user.target.wants")
    os.makedirs(wants, exist_ok=True)
    # Debian: waagent removed but not purged leaves its (dangling) link behind
    os.symlink("/lib/systemd/system/walinuxagent.service", os.path.join(wants, "walinuxagent.service"))
    proc = run(root, "deprovision", "--force")
    assert proc.returncode == 0
    assert "waagent is not installed but still enabled" in proc.stderr


def test_disabled_cloud_init_is_not_a_problem(tmp_path):
    root = make_root(tmp_path, {
        "usr/bin/cloud-init": "#!/bin/sh\n",
        "etc/cloud/cloud-init.disabled": "",
        "etc/systemd/system/cloud-init.target.wants/cloud-init.service": "",
    })
    proc = run(root, "deprovision", "--dry-run")
    assert "cloud-init" not in proc.stderr


def test_clean_image_has_no_warning(tmp_path):
    root = make_root(tmp_path)
    proc = run(root, "deprovision", "--dry-run")
    assert proc.returncode == 0 and "warning" not in proc.stderr


# ------------------------------------------------------------------- --user

def test_user_adds_to_the_default_set(tmp_path):
    root = make_root(tmp_path, {"etc/sudoers.d/azure-firstboot": "gina ALL=(ALL) ALL\n"})
    proc = run(root, "deprovision", "--user", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "would remove %s/etc/sudoers.d/azure-firstboot" % root in proc.stdout
    assert proc.stdout.count("would ") == len(IDENTITY) + 1
    same = run(root, "deprovision", "--all", "--dry-run")
    assert same.stdout == proc.stdout


def test_user_adds_to_named_parts(tmp_path):
    root = make_root(tmp_path, {"etc/sudoers.d/azure-firstboot": "x\n"})
    proc = run(root, "deprovision", "--machine-id", "--user", "--dry-run")
    assert "would truncate %s/etc/machine-id" % root in proc.stdout
    assert "etc/sudoers.d/azure-firstboot" in proc.stdout
    assert "ssh_host" not in proc.stdout and "etc/hostname" not in proc.stdout


def test_no_user_flag_keeps_users(tmp_path):
    root = make_root(tmp_path, {"etc/sudoers.d/azure-firstboot": "x\n"})
    assert "sudoers" not in run(root, "deprovision", "--dry-run").stdout


class HostPaths(object):
    """A scratch tree that _build_user takes for the running host."""

    def __init__(self, root):
        self.root, self.is_host = root, True

    def __call__(self, path):
        return os.path.join(self.root, path.lstrip("/"))


@pytest.mark.parametrize("sudo_user, expected", [
    ("packer", [("packer", "/home/packer")]),
    ("root", []),
    ("_apt", []),          # a system account: UID below UID_MIN
    ("nobody", []),        # above UID_MAX
    ("ghost", []),         # no such account
    ("", []),
])
def test_build_user_is_the_ordinary_account_that_ran_sudo(tmp_path, monkeypatch, sudo_user, expected):
    from azure_firstboot import admin

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        "packer:x:1000:1000::/home/packer:/bin/bash\n")
    (tmp_path / "etc/login.defs").write_text("UID_MIN 1000\nUID_MAX 60000\n")
    monkeypatch.setenv("SUDO_USER", sudo_user)
    assert admin._build_user(HostPaths(str(tmp_path)), []) == expected
    # never under --root, never twice
    from azure_firstboot.state import Paths

    assert admin._build_user(Paths(str(tmp_path)), []) == []
    assert admin._build_user(HostPaths(str(tmp_path)), ["packer"]) == []
