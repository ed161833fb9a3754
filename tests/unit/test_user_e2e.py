"""The user step end to end: the real CLI (useradd --root, usermod, visudo)
on a scratch --root against the fabric emulator's IMDS document."""

import os
import stat
import subprocess
import sys

import pytest

from fabric_emulator import TEST_PUBLIC_KEY, Fabric
from test_agent_e2e import TOP, Machine, assert_ok, ready_reports

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="useradd --root needs root (chroot)")

KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDTuR/qj80Yb7x/Lo3yCBwWKkwLIt4AML7MFAVKZ143h second-test-key"
BLOB1 = TEST_PUBLIC_KEY.split()[1]
STEPS = ("network-wait", "hostname", "user", "report-ready")
PASSWD = ("root:x:0:0:root:/root:/bin/bash\nbin:x:2:2:bin:/bin:/usr/sbin/nologin\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
GROUP = "root:x:0:\nadm:x:4:\nsudo:x:27:\nusers:x:100:\nnogroup:x:65534:\n"


class UserMachine(Machine):
    """A scratch root with the account databases useradd --root needs."""

    def __init__(self, root, fab, **settings):
        Machine.__init__(self, root, fab, **settings)
        self.write("etc/passwd", PASSWD)
        self.write("etc/group", GROUP)
        self.write("etc/shadow", "root:*:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n")
        self.write("etc/gshadow", "root:*::\nadm:*::\nsudo:*::\nusers:*::\n")
        self.write("etc/login.defs", "UID_MIN 1000\nUID_MAX 60000\nUSERGROUPS_ENAB yes\n")
        self.write("etc/skel/.profile", "# skel\n")
        self.write("etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\n")
        os.makedirs(self.path("etc/sudoers.d"))
        os.makedirs(self.path("etc/ssh/sshd_config.d"))
        os.makedirs(self.path("home"))
        for name in ("etc/shadow", "etc/gshadow"):
            os.chmod(self.path(name), 0o640)

    def boot(self):
        return [self.agent(step) for step in STEPS]

    def add_user(self, name, uid, home=None):
        home = home or "/home/" + name
        with open(self.path("etc/passwd"), "a") as f:
            f.write("%s:x:%d:%d:%s:%s:/bin/sh\n" % (name, uid, uid, name, home))
        with open(self.path("etc/group"), "a") as f:
            f.write("%s:x:%d:\n" % (name, uid))
        with open(self.path("etc/shadow"), "a") as f:
            f.write("%s:!:19000:0:99999:7:::\n" % name)
        os.makedirs(self.path(home.lstrip("/")), exist_ok=True)
        os.chown(self.path(home.lstrip("/")), uid, uid)

    def account(self, name):
        for line in self.read("etc/passwd").splitlines():
            if line.split(":")[0] == name:
                return line.split(":")
        return None

    def shadow(self, name):
        for line in self.read("etc/shadow").splitlines():
            if line.split(":")[0] == name:
                return line.split(":")[1]
        return None


def user_machine(tmp_path, fab, **settings):
    return UserMachine(tmp_path, fab, **settings)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


# ------------------------------------------------------------------ happy path

def test_admin_user_created_with_key_sudo_and_sshd(tmp_path):
    with Fabric({"admin_username": "alice"}).start() as fab:
        m = user_machine(tmp_path, fab)
        procs = m.boot()
        assert_ok(procs)
        assert "admin user alice created" in procs[2].stdout
        assert len(ready_reports(fab)) == 1
        entry = m.account("alice")
        assert entry[4] == "azure-firstboot admin user" and entry[5] == "/home/alice"
        uid, gid = int(entry[2]), int(entry[3])
        assert uid >= 1000
        # not "!": a locked account is refused by sshd (UsePAM no) even for keys
        assert m.shadow("alice") == "*"
        ssh = m.path("home/alice/.ssh")
        keys = os.path.join(ssh, "authorized_keys")
        assert m.read("home/alice/.ssh/authorized_keys") == TEST_PUBLIC_KEY + "\n"
        assert mode(ssh) == 0o700 and mode(keys) == 0o600
        for path in (m.path("home/alice"), ssh, keys):
            assert (os.lstat(path).st_uid, os.lstat(path).st_gid) == (uid, gid), path
        sudoers = m.path("etc/sudoers.d/azure-firstboot")
        assert mode(sudoers) == 0o440
        assert m.read("etc/sudoers.d/azure-firstboot").endswith("\nalice ALL=(ALL:ALL) NOPASSWD: ALL\n")
        assert not [n for n in os.listdir(m.path("etc/sudoers.d")) if n != "azure-firstboot"]
        check = subprocess.run(["visudo", "-c", "-f", sudoers], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert check.returncode == 0, check.stdout
        assert "PasswordAuthentication no\n" in m.read("etc/ssh/sshd_config.d/50-azure-firstboot.conf")
        assert "created=alice" in m.read("var/lib/azure-firstboot/user.accounts")
        result = m.read("var/lib/azure-firstboot/user.result")
        assert "result=ok" in result and "user=alice" in result
        status = m.agent("status").stdout
        assert "user:" in status and "user=alice" in status
        # one IMDS request per step that needs it (hostname, user)
        assert len(fab.requests("imds")) == 2


def test_second_key_existing_user_groups_and_merge(tmp_path):
    scenario = {"admin_username": "bob", "public_keys": [TEST_PUBLIC_KEY + "\r\n", KEY2]}
    with Fabric(scenario).start() as fab:
        m = user_machine(tmp_path, fab, user__groups="adm, docker")
        m.add_user("bob", 1001)
        existing = "# bob's own\nno-pty " + " ".join(TEST_PUBLIC_KEY.split()[:2]) + " old comment\n"
        m.write("home/bob/.ssh/authorized_keys", existing)
        procs = m.boot()
        assert_ok(procs)
        assert "no such group docker" in procs[2].stderr
        assert "admin user bob kept" in procs[2].stdout
        text = m.read("home/bob/.ssh/authorized_keys")
        assert text == existing + KEY2 + "\n"
        assert m.account("bob")[4] == "bob"  # the existing account is kept as it was
        assert m.shadow("bob") == "!"
        assert "bob" in [l for l in m.read("etc/group").splitlines() if l.startswith("adm:")][0]
        assert "created" not in (m.read("var/lib/azure-firstboot/user.accounts")
                                 if os.path.exists(m.path("var/lib/azure-firstboot/user.accounts")) else "")
        # a clone of the VM: same keys again -> nothing duplicated
        m.write("sys/class/dmi/id/product_uuid", "0b8f6d4e-1111-2222-3333-444455556666\n")
        m.reboot()
        assert_ok(m.boot())
        assert m.read("home/bob/.ssh/authorized_keys") == text
        assert os.lstat(m.path("home/bob/.ssh/authorized_keys")).st_uid == 1001


def test_oversized_authorized_keys_is_never_rewritten(tmp_path):
    # more than 1 MiB: reading only the first MiB and writing back the merge would
    # lose every key after it; the step fails and the file stays as it was
    scenario = {"admin_username": "bob", "public_keys": [KEY2]}
    with Fabric(scenario).start() as fab:
        m = user_machine(tmp_path, fab)
        m.add_user("bob", 1001)
        big = ("# padding %s\n" % ("x" * 100)) * 11000 + TEST_PUBLIC_KEY + "\n"
        m.write("home/bob/.ssh/authorized_keys", big)
        procs = m.boot()
        assert_failed(m, fab, procs, "authorized_keys is larger than 1048576 bytes; not touched")
        assert m.read("home/bob/.ssh/authorized_keys") == big


@pytest.mark.parametrize("name", ["first.last", "Carol-" + "x" * 26])
def test_names_azure_accepts(tmp_path, name):
    # (up to 64 characters pass our check; Debian 12's useradd still refuses more than 32)
    with Fabric({"admin_username": name}).start() as fab:
        m = user_machine(tmp_path, fab)
        assert_ok(m.boot())
        assert m.account(name)[5] == "/home/" + name
        assert m.read("home/%s/.ssh/authorized_keys" % name) == TEST_PUBLIC_KEY + "\n"
        assert m.read("etc/sudoers.d/azure-firstboot").endswith("\n%s ALL=(ALL:ALL) NOPASSWD: ALL\n" % name)
        assert len(ready_reports(fab)) == 1


def test_keys_go_to_the_real_home(tmp_path):
    # /etc/default/useradd puts homes under /var/home (Fedora Atomic): Azure's
    # /home/<user>/.ssh/authorized_keys means the account's own home
    scenario = {"admin_username": "carol", "public_keys": [TEST_PUBLIC_KEY, KEY2],
                "public_key_paths": ["/home/carol/.ssh/authorized_keys",
                                     "/var/home/carol/.ssh/authorized_keys"]}
    with Fabric(scenario).start() as fab:
        m = user_machine(tmp_path, fab)
        m.write("etc/default/useradd", "HOME=/var/home\n")
        os.makedirs(m.path("var/home"))
        assert_ok(m.boot())
        assert m.account("carol")[5] == "/var/home/carol"
        assert m.read("var/home/carol/.ssh/authorized_keys") == TEST_PUBLIC_KEY + "\n" + KEY2 + "\n"
        assert os.listdir(m.path("home")) == []


# ----------------------------------------------------------------- refusals

def assert_failed(m, fab, procs, fragment, user=None):
    net, host, step, rr = procs
    assert net.returncode == 0 and host.returncode == 0
    assert step.returncode == 1 and fragment in step.stderr, step.stderr
    assert [l.startswith("azure-firstboot: error: ") for l in step.stderr.splitlines()].count(True) == 1
    assert "Traceback" not in step.stderr
    assert rr.returncode == 1 and "reported ProvisioningFailed" in rr.stderr
    reports = fab.health_reports()
    assert [r["substatus"] for r in reports] == ["ProvisioningFailed"]
    assert reports[0]["fields"]["reason"].startswith("user: ") and fragment in reports[0]["description"]
    assert not os.path.exists(m.path("var/lib/azure-firstboot/provisioned"))
    assert m.read("etc/passwd").startswith(PASSWD)
    if user is not None:
        assert m.account(user) is None
    assert os.listdir(m.path("etc/sudoers.d")) == []
    assert not os.path.exists(m.path("etc/ssh/sshd_config.d/50-azure-firstboot.conf"))
    assert not os.path.exists(os.path.join(m.root, "CANARY")) and not os.path.exists("CANARY")


@pytest.mark.parametrize("name, fragment", [
    ("root", "disallowed names"),
    ("bin", "existing system account"),
    ("nobody", "existing system account"),
    ("$(touch CANARY)", "other than letters"),
    ("../../tmp/x", "other than letters"),
    ("Admin", "disallowed names"),
    ("-oops", "starts with '-'"),
    ("1001", "all digits"),
    ("a" * 65, "1 to 64 characters"),
    ("", "adminUsername is missing"),
])
def test_hostile_user_names(tmp_path, name, fragment):
    with Fabric({"admin_username": name}).start() as fab:
        m = user_machine(tmp_path, fab)
        before = m.read("etc/passwd")
        assert_failed(m, fab, m.boot(), fragment)
        assert m.read("etc/passwd") == before and os.listdir(m.path("home")) == []


@pytest.mark.parametrize("keys, paths, fragment", [
    (['command="touch CANARY" ' + TEST_PUBLIC_KEY], [], "key options"),
    (["ssh-dss AAAAB3NzaC1kc3MAAACBAP"], [], "known type"),
    (["ssh-ed25519 !!notbase64!!"], [], "not base64"),
    (["ssh-rsa " + BLOB1], [], "not a ssh-rsa key"),
    ([TEST_PUBLIC_KEY + "\n" + KEY2], [], "line break"),
    ([TEST_PUBLIC_KEY, "garbage"], [], "publicKeys[1]"),
    ([TEST_PUBLIC_KEY], ["/root/.ssh/authorized_keys"], "is not /home/alice/.ssh/authorized_keys"),
    ([TEST_PUBLIC_KEY], ["/home/alice/../bob/.ssh/authorized_keys"], "is not /home/alice/.ssh"),
    ([TEST_PUBLIC_KEY], ["/home/alice/.profile"], "is not /home/alice/.ssh/authorized_keys"),
    ([TEST_PUBLIC_KEY], ["/home/alice/.ssh/"], "is not /home/alice/.ssh/authorized_keys"),
    ([TEST_PUBLIC_KEY], ["/home/alice/keys/extra"], "is not /home/alice/.ssh/authorized_keys"),
    ([], [], "no SSH key and no password"),
])
def test_bad_keys_create_nothing(tmp_path, keys, paths, fragment):
    with Fabric({"admin_username": "alice", "public_keys": keys, "public_key_paths": paths}).start() as fab:
        m = user_machine(tmp_path, fab)
        assert_failed(m, fab, m.boot(), fragment, user="alice")
        assert os.listdir(m.path("home")) == []


@pytest.mark.parametrize("planted", [".ssh", ".ssh/authorized_keys"])
def test_symlink_planted_in_the_home_is_not_followed(tmp_path, planted):
    with Fabric({"admin_username": "dave"}).start() as fab:
        m = user_machine(tmp_path, fab)
        m.add_user("dave", 1002)
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "authorized_keys").write_text("victim\n")
        if planted == ".ssh":
            os.symlink(str(outside), m.path("home/dave/.ssh"))
        else:
            os.makedirs(m.path("home/dave/.ssh"))
            os.symlink(str(outside / "authorized_keys"), m.path("home/dave/.ssh/authorized_keys"))
        procs = m.boot()
        assert procs[2].returncode == 1 and "symbolic link (not followed)" in procs[2].stderr, procs[2].stderr
        assert (outside / "authorized_keys").read_text() == "victim\n"
        assert os.listdir(str(outside)) == ["authorized_keys"]
        assert os.lstat(str(outside)).st_uid == 0 and mode(str(outside / "authorized_keys")) != 0o600
        assert fab.health_reports()[0]["substatus"] == "ProvisioningFailed"


# ------------------------------------------------------------- configuration

def test_password_logins_without_a_medium_under_root(tmp_path):
    # Ready only when true: a password was asked for and none could be set
    for keys, sub in (([TEST_PUBLIC_KEY], "keys"), ([], "nokey")):
        with Fabric({"admin_username": "erin", "disable_password_authentication": "false",
                     "public_keys": keys}).start() as fab:
            m = user_machine(tmp_path / sub, fab)
            assert_failed(m, fab, m.boot(), "no provisioning medium with ovf-env.xml was found (no %s/dev/sr* "
                          "image file): no password could be set" % m.root, user="erin")


OVF_ENV = """<?xml version="1.0" encoding="utf-8"?>
<ns0:Environment xmlns:ns0="http://schemas.dmtf.org/ovf/environment/1"
 xmlns:ns1="http://schemas.microsoft.com/windowsazure">
 <ns1:ProvisioningSection><ns1:Version>1.0</ns1:Version>
  <ns1:LinuxProvisioningConfigurationSet>
   <ns1:ConfigurationSetType>LinuxProvisioningConfiguration</ns1:ConfigurationSetType>
   <ns1:HostName>myvm</ns1:HostName><ns1:UserName>erin</ns1:UserName>
   <ns1:UserPassword>%(password)s</ns1:UserPassword>
   <ns1:DisableSshPasswordAuthentication>false</ns1:DisableSshPasswordAuthentication>
   %(custom)s
  </ns1:LinuxProvisioningConfigurationSet></ns1:ProvisioningSection>
</ns0:Environment>
"""


def medium_image(m, text, kind="udf", name="sr0"):
    from test_medium import make_image

    os.makedirs(m.path("dev"), exist_ok=True)
    return make_image(kind, {"ovf-env.xml": text.encode("utf-8")}, m.path("dev/" + name))


@pytest.mark.parametrize("kind", ["udf", "iso"])
def test_password_and_custom_data_from_a_medium_image_under_root(tmp_path, kind):
    """The medium is an image file DIR/dev/sr0 (never ejected): CustomData
    and IMDS userData land decoded in the state directory (0600), and
    nothing runs them; the password goes to chpasswd (which, in a scratch
    root without PAM modules, refuses it: the reason never shows it)."""
    import base64

    script = b"#!/bin/sh\ntouch /tmp/custom-data-ran\n"
    ovf = OVF_ENV % {"password": "pa ss&amp;word", "custom": "<ns1:CustomData>%s</ns1:CustomData>"
                     % base64.b64encode(script).decode()}
    with Fabric({"admin_username": "erin", "user_data": base64.b64encode(b"user data \x00\xff").decode()}
                ).start() as fab:
        m = user_machine(tmp_path, fab)
        medium_image(m, ovf, kind)
        procs = m.boot()
        assert_ok(procs)
        out = procs[2].stdout + procs[2].stderr
        assert "read ovf-env.xml (%d bytes) from %s" % (len(ovf), m.path("dev/sr0")) in out
        assert "is an image file" in out  # not ejected
        state = m.path("var/lib/azure-firstboot/")
        with open(state + "custom-data", "rb") as handle:
            assert handle.read() == script
        with open(state + "user-data", "rb") as handle:
            assert handle.read() == b"user data \x00\xff"
        assert mode(state + "custom-data") == 0o600 and mode(state + "user-data") == 0o600
        assert not os.path.exists("/tmp/custom-data-ran")
        record = m.read("run/azure-firstboot/ovf-env")
        assert "hostname=myvm\n" in record and "username=erin\n" in record
        assert "password=set\n" in record and "pa ss" not in record and "custom_data=set\n" in record
        assert "custom-data %d bytes, user-data 12 bytes" % len(script) in m.read("var/lib/azure-firstboot/user.result")
    with Fabric({"admin_username": "erin", "disable_password_authentication": "false",
                 "public_keys": []}).start() as fab:
        m = user_machine(tmp_path / "password", fab)
        medium_image(m, ovf, kind)
        procs = m.boot()
        if procs[2].returncode == 0:  # chpasswd managed (PAM in the scratch root)
            assert m.shadow("erin") not in ("*", "!", None)
        else:
            assert "cannot set the password of erin: chpasswd" in procs[2].stderr
        assert "pa ss" not in procs[2].stderr
    # no custom data this time: files left in the image (an earlier VM's) go
    with Fabric({"admin_username": "erin"}).start() as fab:
        m = user_machine(tmp_path / "again", fab)
        m.write("var/lib/azure-firstboot/custom-data", "stale")
        m.write("var/lib/azure-firstboot/user-data", "stale")
        assert_ok(m.boot())
        state = m.path("var/lib/azure-firstboot/")
        assert not os.path.exists(state + "custom-data") and not os.path.exists(state + "user-data")


def test_hostile_or_broken_medium_images(tmp_path):
    with Fabric({"admin_username": "erin", "disable_password_authentication": "false"}).start() as fab:
        m = user_machine(tmp_path, fab)
        os.makedirs(m.path("dev"))
        with open(m.path("dev/sr0"), "wb") as handle:
            handle.write(b"\xff" * 100000)
        os.symlink("/etc/shadow", m.path("dev/sr1"))
        procs = m.boot()
        # a key is there, the password is not: Ready only when true
        assert_failed(m, fab, procs, "password logins were asked for", user="erin")
        assert "no password could be set" in procs[2].stderr
        out = procs[2].stdout + procs[2].stderr
        assert "sr0: neither UDF nor ISO 9660" in out
        assert "sr1: " in out and "Traceback" not in out
    with Fabric({"admin_username": "erin", "disable_password_authentication": "false",
                 "public_keys": []}).start() as fab:
        m = user_machine(tmp_path / "bad-xml", fab)
        medium_image(m, "<!DOCTYPE x [<!ENTITY a 'b'>]><Environment/>")
        assert_failed(m, fab, m.boot(), "ovf-env.xml: refusing XML with a DOCTYPE", user="erin")


def test_sudo_off_disabled_step_and_sshd_without_include(tmp_path):
    with Fabric({"admin_username": "frank"}).start() as fab:
        m = user_machine(tmp_path, fab, user__sudo="no")
        m.write("etc/ssh/sshd_config", "PasswordAuthentication no\n")
        procs = m.boot()
        assert_ok(procs)
        assert os.listdir(m.path("etc/sudoers.d")) == []
        assert "sshd does not read /etc/ssh/sshd_config.d/50-azure-firstboot.conf" in procs[2].stderr
        assert "sshd already takes PasswordAuthentication no from /etc/ssh/sshd_config:1" in procs[2].stderr
        assert m.read("etc/ssh/sshd_config") == "PasswordAuthentication no\n"
        assert os.listdir(m.path("etc/ssh/sshd_config.d")) == []
    with Fabric({"admin_username": "frank"}).start() as fab:
        m = user_machine(tmp_path / "off", fab, user__enabled="no")
        procs = m.boot()
        assert_ok(procs)
        assert m.account("frank") is None and len(ready_reports(fab)) == 1
        assert len(fab.requests("imds")) == 1  # hostname's only


@pytest.mark.parametrize("text, fragment", [
    ("[user]\ngroups = adm,$(x)\n", "bad value for user.groups"),
    ("[user]\nsudo = maybe\n", "bad value for user.sudo"),
])
def test_bad_user_config(tmp_path, text, fragment):
    with Fabric().start() as fab:
        m = user_machine(tmp_path, fab)
        with open(m.config, "a") as f:
            f.write(text)
        proc = m.agent("user")
        assert proc.returncode == 2 and fragment in proc.stderr and proc.stderr.count("\n") == 1
        assert fab.requests() == []


# ------------------------------------------------------------------ deprovision

def test_deprovision_user(tmp_path):
    with Fabric({"admin_username": "gina"}).start() as fab:
        m = user_machine(tmp_path, fab)
        m.add_user("keepme", 1005)
        assert_ok(m.boot())
        dry = m.agent("deprovision", "--user", "--dry-run")
        assert dry.returncode == 0
        assert "would remove the admin user gina and its home /home/gina" in dry.stdout
        assert "etc/sudoers.d/azure-firstboot" in dry.stdout
        assert m.account("gina") is not None
        assert "keepme" not in dry.stdout
        proc = m.agent("deprovision", "--user")
        assert proc.returncode == 0, proc.stderr
        assert m.account("gina") is None and m.account("keepme") is not None
        assert not os.path.exists(m.path("home/gina")) and os.path.isdir(m.path("home/keepme"))
        assert not os.path.exists(m.path("etc/sudoers.d/azure-firstboot"))
        assert not os.path.exists(m.path("etc/ssh/sshd_config.d/50-azure-firstboot.conf"))
        assert "nothing to remove" in m.agent("deprovision", "--user").stdout


# ------------------------------------------------------------ boot-path weight

def test_user_step_imports_stay_lean(tmp_path):
    from test_agent_e2e import HEAVY

    with Fabric({"admin_username": "hana"}).start() as fab:
        m = user_machine(tmp_path, fab)
        assert m.agent("network-wait").returncode == 0
        code = ("before = set(sys.modules); from azure_firstboot import cli; rc = cli.main(sys.argv[1:]); "
                "print(' '.join(m for m in %r if m in sys.modules and m not in before)); sys.exit(rc)" % (HEAVY,))
        proc = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, %r); "
                               % os.path.join(TOP, "src") + code, "--config", m.config, "--root", m.root, "user"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        assert proc.returncode == 0, proc.stderr
        assert set(proc.stdout.split("\n")[-2].split()) <= {"re", "json", "subprocess"}
