"""Issue 17, the files: the real CLI under --root against the emulator, with
something else than a plain file of ours planted at every path the agent
writes (authorized_keys, ~/.ssh, the sudoers rule, the sshd drop-in,
/etc/hostname, /etc/hosts, the marker, the KVP pool).  Each is refused with
one line naming the real path (never a temporary file), nothing is written
through it, no temporary file is left, and a failure is never Ready."""

import os
import stat

import pytest

import filekinds

from fabric_emulator import TEST_PUBLIC_KEY, Fabric
from test_agent_e2e import Machine, assert_ok, fab, ready_reports  # noqa: F401 (fixture)
from test_user_e2e import KEY2, user_machine

from azure_firstboot import kvp

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="useradd --root and mknod need root")
STATE = "var/lib/azure-firstboot"


plant = filekinds.plant


def snapshot(path):
    info = os.lstat(path)
    return (info.st_mode, info.st_ino, info.st_nlink, info.st_size, info.st_uid, info.st_gid)


def no_temp_files(top):
    left = [os.path.join(d, n) for d, _, names in os.walk(top) for n in names
            if n.endswith(".tmp") or n.endswith(".new")]
    assert left == [], left


def failed_step(fab, proc, fragment, step):
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and ".tmp" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("azure-firstboot: error: ")]
    assert len(errors) == 1, proc.stderr
    reports = fab.health_reports()
    assert [r["substatus"] for r in reports] == ["ProvisioningFailed"]
    assert reports[0]["fields"]["reason"].startswith(step + ": ")


# ------------------------------------------------------------ authorized_keys

@ROOT_ONLY
@pytest.mark.parametrize("kind, fragment", [
    ("hardlink", "it has 2 hard links (not used); not touched"),
    ("fifo", "not a regular file; not touched"),
    ("socket", "not a regular file; not touched"),
    ("device", "not a regular file; not touched"),
    ("directory", "it is a directory, not a regular file; not touched"),
    ("symlink", "it is a symbolic link (not followed); not touched"),
])
def test_authorized_keys_that_is_not_a_plain_file(tmp_path, kind, fragment):
    with Fabric({"admin_username": "dave"}).start() as fab:
        m = user_machine(tmp_path, fab)
        m.add_user("dave", 1002)
        os.makedirs(m.path("home/dave/.ssh"))
        shadow = m.path("etc/shadow")
        target = m.path("home/dave/.ssh/authorized_keys")
        plant(target, kind, shadow if kind == "hardlink" else "/etc/shadow")
        before, secret = snapshot(target), m.read("etc/shadow")
        procs = m.boot()
        failed_step(fab, procs[2], "/home/dave/.ssh/authorized_keys: " + fragment, "user")
        assert snapshot(target) == before and m.read("etc/shadow") == secret
        assert sorted(os.listdir(m.path("home/dave/.ssh"))) == ["authorized_keys"]
        no_temp_files(m.root)


@ROOT_ONLY
@pytest.mark.parametrize("kind", ["file", "fifo", "symlink"])
def test_ssh_directory_that_is_not_a_directory(tmp_path, kind):
    with Fabric({"admin_username": "dave"}).start() as fab:
        m = user_machine(tmp_path, fab)
        m.add_user("dave", 1002)
        ssh = m.path("home/dave/.ssh")
        plant(ssh, kind, m.path("etc"))
        before = snapshot(ssh)
        procs = m.boot()
        failed_step(fab, procs[2], "cannot use .ssh for /home/dave/.ssh/authorized_keys: ", "user")
        assert snapshot(ssh) == before
        assert os.listdir(m.path("etc/sudoers.d")) == []
        no_temp_files(m.root)


@ROOT_ONLY
def test_directories_on_the_key_path_keep_owner_and_mode_but_the_users_ssh(tmp_path):
    """~/.ssh is the user's (0700) whoever made it; a directory on the key
    path that is not ~/.ssh and that the agent did not create keeps its owner
    and mode; one it creates is the user's, 0700."""
    scenario = {"admin_username": "carol", "public_keys": [TEST_PUBLIC_KEY, KEY2, KEY2],
                "public_key_paths": ["/home/carol/.ssh/authorized_keys", "/home/carol/keys/extra",
                                     "/home/carol/keys/new/extra"]}
    with Fabric(scenario).start() as fab:
        m = user_machine(tmp_path, fab)
        m.add_user("carol", 1003)
        for rel, mode in (("home/carol/.ssh", 0o755), ("home/carol/keys", 0o751)):
            os.makedirs(m.path(rel))
            os.chmod(m.path(rel), mode)
            os.chown(m.path(rel), 0, 0)
        procs = m.boot()
        if procs[2].returncode:  # key paths outside ~/.ssh are refused (issue 18): nothing changed
            assert "keys/extra" in procs[2].stderr
            assert (os.lstat(m.path("home/carol/keys")).st_uid, stat.S_IMODE(
                os.lstat(m.path("home/carol/keys")).st_mode)) == (0, 0o751)
            return
        assert_ok(procs)
        ssh, keys, new = (os.lstat(m.path(p)) for p in ("home/carol/.ssh", "home/carol/keys",
                                                         "home/carol/keys/new"))
        assert (ssh.st_uid, ssh.st_gid, stat.S_IMODE(ssh.st_mode)) == (1003, 1003, 0o700)
        assert (keys.st_uid, keys.st_gid, stat.S_IMODE(keys.st_mode)) == (0, 0, 0o751)
        assert (new.st_uid, stat.S_IMODE(new.st_mode)) == (1003, 0o700)
        assert os.lstat(m.path("home/carol/keys/extra")).st_uid == 1003


@ROOT_ONLY
def test_existing_lines_that_are_not_utf8_are_kept_byte_for_byte(tmp_path):
    with Fabric({"admin_username": "bob", "public_keys": [KEY2]}).start() as fab:
        m = user_machine(tmp_path, fab)
        m.add_user("bob", 1001)
        os.makedirs(m.path("home/bob/.ssh"))
        old = (b'command="/usr/local/bin/caf\xe9 --only" ' + TEST_PUBLIC_KEY.encode() + b"\r\n"
               b"# \xff\xfe not UTF-8 \xe2\x80\xae\n\x00binary\x85 tail")
        with open(m.path("home/bob/.ssh/authorized_keys"), "wb") as handle:
            handle.write(old)
        assert_ok(m.boot())
        with open(m.path("home/bob/.ssh/authorized_keys"), "rb") as handle:
            assert handle.read() == old + b"\n" + KEY2.encode() + b"\n"
        assert len(ready_reports(fab)) == 1


@ROOT_ONLY
def test_control_characters_in_key_comments_are_escaped(tmp_path):
    blob = " ".join(TEST_PUBLIC_KEY.split()[:2])
    comment = "ops\u202eexe.txt \u2066x\u2069 \x9b31m \u200f end"
    with Fabric({"admin_username": "eve", "public_keys": [blob + " " + comment]}).start() as fab:
        m = user_machine(tmp_path, fab)
        procs = m.boot()
        assert_ok(procs)
        text = m.read("home/eve/.ssh/authorized_keys")
        assert text == blob + " ops\\u202eexe.txt \\u2066x\\u2069 \\x9b31m \\u200f end\n"
        for proc in procs:
            assert proc.stdout.isprintable() or all(l.isprintable() for l in proc.stdout.splitlines())


# ------------------------------------------------------------ sudoers, sshd

@ROOT_ONLY
@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo", "socket"])
def test_obstacle_at_the_sudoers_path(tmp_path, kind):
    with Fabric({"admin_username": "frank"}).start() as fab:
        m = user_machine(tmp_path, fab)
        target = m.path("etc/sudoers.d/azure-firstboot")
        m.write("etc/sudoers", "root ALL=(ALL:ALL) ALL\n")
        plant(target, kind, m.path("etc/sudoers"))
        before, secret = snapshot(target), m.read("etc/sudoers")
        procs = m.boot()
        failed_step(fab, procs[2], "cannot write the sudoers rule: ", "user")
        assert "(%s)" % target in procs[2].stderr  # the real path, not the temporary file's
        assert snapshot(target) == before and m.read("etc/sudoers") == secret
        assert os.listdir(m.path("etc/sudoers.d")) == ["azure-firstboot"]
        no_temp_files(m.root)


@ROOT_ONLY
@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo"])
def test_obstacle_at_the_sshd_dropin(tmp_path, kind):
    with Fabric({"admin_username": "hank"}).start() as fab:
        m = user_machine(tmp_path, fab)
        target = m.path("etc/ssh/sshd_config.d/50-azure-firstboot.conf")
        plant(target, kind, m.path("etc/ssh/sshd_config"))
        before, config = snapshot(target), m.read("etc/ssh/sshd_config")
        procs = m.boot()
        failed_step(fab, procs[2], target, "user")
        assert snapshot(target) == before and m.read("etc/ssh/sshd_config") == config
        no_temp_files(m.root)


# ------------------------------------------------------------ hostname, hosts

@pytest.mark.parametrize("kind, fragment", [
    ("directory", "it is a directory, not a regular file; not replaced"),
    ("symlink", "it is a symbolic link (not followed); not replaced"),
    ("fifo", "not a regular file; not replaced"),
])
def test_obstacle_at_etc_hostname(tmp_path, fab, kind, fragment):
    m = Machine(tmp_path, fab)
    target = m.path("etc/hostname")
    os.unlink(target)
    m.write("etc/hostname.real", "localhost\n")
    plant(target, kind, "hostname.real")
    before = snapshot(target)
    net, host, rr = m.boot()
    failed_step(fab, host, "cannot set host name myvm: %s (%s)" % (fragment, target), "hostname")
    assert rr.returncode == 1
    assert snapshot(target) == before and m.read("etc/hostname.real") == "localhost\n"
    no_temp_files(m.root)


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_etc_hosts_that_is_not_a_plain_file_is_left_alone(tmp_path, fab, kind):
    m = Machine(tmp_path, fab)
    real = m.path("etc/hosts.real")
    os.rename(m.path("etc/hosts"), real)
    plant(m.path("etc/hosts"), kind, real if kind == "hardlink" else "hosts.real")
    before, text = snapshot(m.path("etc/hosts")), m.read("etc/hosts.real")
    procs = m.boot()
    assert_ok(procs)
    assert "/etc/hosts left alone: " in procs[1].stderr
    assert snapshot(m.path("etc/hosts")) == before and m.read("etc/hosts.real") == text
    assert m.read("etc/hostname") == "myvm\n" and len(ready_reports(fab)) == 1


# ------------------------------------------------------------ records, KVP

def test_marker_hard_linked_to_a_secret_is_not_read(tmp_path, fab):
    """A marker that is a hard link (here to a file holding a valid marker's
    text) is not believed and not shown; report-ready replaces it by rename,
    the other link keeps its content."""
    m = Machine(tmp_path, fab)
    os.makedirs(m.path(STATE))
    m.write("secret", "vm_id=5c9f1c56-64f7-4d55-9a0b-6c2f0e8b7a31\ntoken=hunter2\n")
    os.link(m.path("secret"), m.path(STATE + "/provisioned"))
    status = m.agent("status")
    assert "hunter2" not in status.stdout + status.stderr
    assert "2 hard links" in status.stderr
    assert_ok(m.boot())
    assert len(ready_reports(fab)) == 1  # not skipped as "already provisioned"
    assert m.read("secret") == "vm_id=5c9f1c56-64f7-4d55-9a0b-6c2f0e8b7a31\ntoken=hunter2\n"
    assert os.lstat(m.path(STATE + "/provisioned")).st_nlink == 1


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory"] + (["device"] if os.geteuid() == 0 else []))
def test_kvp_pool_that_is_not_a_plain_file_never_blocks_ready(tmp_path, fab, kind):
    m = Machine(tmp_path, fab)
    os.makedirs(m.path("var/lib/hyperv"))
    m.write("elsewhere", "untouched\n")
    pool = m.path(kvp.POOL.lstrip("/"))
    plant(pool, kind, "../../../elsewhere")
    before = snapshot(pool)
    procs = m.boot()
    assert_ok(procs)
    assert "KVP report not written: cannot open %s: " % pool in procs[2].stderr
    assert snapshot(pool) == before and m.read("elsewhere") == "untouched\n"
    assert len(ready_reports(fab)) == 1


# ------------------------------------------------------------ custom data

@ROOT_ONLY
@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo", "socket", "directory"])
def test_obstacle_at_the_user_data_file(tmp_path, kind):
    """IMDS userData goes to /var/lib/azure-firstboot/user-data (0600): a link,
    FIFO or socket in its place is replaced by the rename (the file it
    pointed to, or shared its inode with, keeps its content); a directory
    fails the step with the real path."""
    import base64

    with Fabric({"admin_username": "ivy", "user_data": base64.b64encode(b"payload\n").decode()}
                ).start() as fab:
        m = user_machine(tmp_path, fab)
        os.makedirs(m.path(STATE))
        m.write("etc/important", "keep\n")
        target = m.path(STATE + "/user-data")
        plant(target, kind, m.path("etc/important"))
        before = snapshot(target)
        procs = m.boot()
        if kind == "directory":
            failed_step(fab, procs[2], "(%s)" % target, "user")
            assert snapshot(target) == before
        else:
            assert_ok(procs)
            with open(target, "rb") as handle:
                assert handle.read() == b"payload\n"
            info = os.lstat(target)
            assert stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and stat.S_IMODE(info.st_mode) == 0o600
        assert m.read("etc/important") == "keep\n"
        no_temp_files(m.root)
