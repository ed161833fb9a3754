"""SELinux (issue 18 item 4): the pure decision of selinux.py, its shell on a
scratch tree (nothing runs without SELinux; a failed relabel fails only when
enforcing), and the user step end to end under --root with fake restorecon /
setfiles on PATH that record every call."""

import os

import pytest

from fabric_emulator import Fabric

from azure_firstboot import commands, selinux
from azure_firstboot.state import Paths

KEYS = ".ssh/authorized_keys"


# ------------------------------------------------------------------ pure

@pytest.mark.parametrize("text, expected", [
    (None, None), ("1", "enforcing"), ("1\n", "enforcing"), ("0", "permissive"), ("", "permissive")])
def test_mode_from_the_enforce_file(text, expected):
    assert selinux.mode(text) == expected


@pytest.mark.parametrize("text, expected", [
    (None, "targeted"), ("", "targeted"), ("SELINUX=enforcing\nSELINUXTYPE=default\n", "default"),
    ("# SELINUXTYPE=mls\nSELINUXTYPE = targeted \n", "targeted"), ('SELINUXTYPE="mls"', "mls"),
    ("SELINUXTYPE=../../tmp", None), ("SELINUXTYPE=", None), ("SELINUXTYPE=..", None)])
def test_policy_type_from_the_config(text, expected):
    assert selinux.selinux_type(text) == expected


def test_targets_are_the_directories_below_the_home_and_the_file():
    assert selinux.targets("/home/alice/", [KEYS]) == [
        "/home/alice/.ssh", "/home/alice/.ssh/authorized_keys"]
    assert selinux.targets("/var/home/a", [KEYS, ".ssh/other"]) == [
        "/var/home/a/.ssh", "/var/home/a/.ssh/authorized_keys", "/var/home/a/.ssh/other"]
    assert selinux.targets("/home/a", []) == []


def test_relabel_argv_host_and_tree():
    made = ["/home/a/.ssh", "/home/a/.ssh/authorized_keys"]
    assert selinux.relabel_argv(made) == ["restorecon", "-F", "--"] + made
    assert selinux.relabel_argv(made, "/img/", "default") == [
        "setfiles", "-F", "-r", "/img", "/img/etc/selinux/default/contexts/files/file_contexts",
        "/img/home/a/.ssh", "/img/home/a/.ssh/authorized_keys"]


# ------------------------------------------------------------------ the shell

def tree(tmp_path, enforce=None, config="SELINUX=enforcing\nSELINUXTYPE=default\n"):
    if enforce is not None:
        os.makedirs(str(tmp_path / "sys/fs/selinux"))
        (tmp_path / "sys/fs/selinux/enforce").write_text(enforce)
    if config is not None:
        os.makedirs(str(tmp_path / "etc/selinux"))
        (tmp_path / "etc/selinux/config").write_text(config)
    return Paths(str(tmp_path))


def test_without_selinux_nothing_runs(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(commands, "run", lambda *a, **k: ran.append(a) or (True, ""))
    assert selinux.relabel(tree(tmp_path), "/home/a", [KEYS]) == (None, None)
    assert ran == []


@pytest.mark.parametrize("enforce, ok, failed", [
    ("1", True, False), ("1", False, True), ("0", False, False), ("0", True, False)])
def test_relabel_in_a_tree_that_says_selinux(tmp_path, monkeypatch, enforce, ok, failed):
    ran = []
    monkeypatch.setattr(commands, "run", lambda argv, timeout=30: ran.append(argv) or (ok, "no policy"))
    current, problem = selinux.relabel(tree(tmp_path, enforce), "/home/a", [KEYS])
    assert current == ("enforcing" if enforce == "1" else "permissive")
    root = os.path.realpath(str(tmp_path))
    assert ran == [["setfiles", "-F", "-r", root, root + "/etc/selinux/default/contexts/files/file_contexts",
                    root + "/home/a/.ssh", root + "/home/a/.ssh/authorized_keys"]]
    assert (problem is not None) == failed
    if failed:
        assert problem.startswith("SELinux is enforcing, but ~/.ssh and authorized_keys could not")
        assert problem.endswith("): setfiles: no policy")


def test_a_tree_with_a_hostile_policy_name_runs_nothing(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(commands, "run", lambda *a, **k: ran.append(a) or (True, ""))
    current, problem = selinux.relabel(tree(tmp_path, "1", "SELINUXTYPE=../../x\n"), "/home/a", [KEYS])
    assert ran == [] and current == "enforcing" and "names no usable SELINUXTYPE" in problem


def test_on_the_host_restorecon_on_exactly_those_paths(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(commands, "run", lambda argv, timeout=30: ran.append(argv) or (True, ""))
    (tmp_path / "enforce").write_text("1")
    monkeypatch.setattr(selinux, "ENFORCE", str(tmp_path / "enforce"))  # stands in for selinuxfs
    assert selinux.relabel(Paths("/"), "/home/a", [KEYS])[1] is None
    assert ran == [["restorecon", "-F", "--", "/home/a/.ssh", "/home/a/.ssh/authorized_keys"]]


# ------------------------------------------- the user step under --root, end to end

@pytest.mark.skipif(os.geteuid() != 0, reason="useradd --root needs root (chroot)")
@pytest.mark.parametrize("enforce", [None, "0", "1"])
def test_user_step_relabels_only_when_the_tree_has_selinux(tmp_path, enforce):
    """No setfiles is installed here (nor in the tree): a relabel that is tried fails.
    Without SELinux in the tree nothing is tried; permissive: a warning; enforcing:
    the step fails with the reason (sshd would refuse the key), ProvisioningFailed."""
    from test_agent_e2e import assert_ok
    from test_user_e2e import user_machine

    if commands.which("setfiles"):
        pytest.skip("setfiles is installed on this host")
    with Fabric({"admin_username": "alice"}).start() as fab:
        m = user_machine(tmp_path, fab)
        if enforce is not None:
            m.write("sys/fs/selinux/enforce", enforce)
            m.write("etc/selinux/config", "SELINUX=enforcing\nSELINUXTYPE=default\n")
        net, host, user, rr = m.boot()
        assert_ok([net, host])
        assert os.path.exists(m.path("home/alice/.ssh/authorized_keys"))
        said = user.stdout + user.stderr
        if enforce is None:
            assert_ok([user, rr])
            assert "SELinux" not in said and "setfiles" not in said
        elif enforce == "0":
            assert_ok([user, rr])
            assert "SELinux is permissive, but ~/.ssh and authorized_keys could not be given their label" \
                in user.stderr and "setfiles: not found" in user.stderr
        else:
            assert user.returncode == 1 and rr.returncode == 1
            reason = fab.health_reports()[0]["fields"]["reason"]
            assert "user: SELinux is enforcing, but ~/.ssh and authorized_keys could not" in reason
            assert "setfiles: not found" in reason
