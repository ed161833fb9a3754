"""accounts: the admin user's validators, key merge, file texts and the
ovf-env.xml reader (pure functions, no files, no processes)."""

import base64
import struct

import pytest

from azure_firstboot import accounts

ED = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEaZhwlR22lMmhve4dgEdglhWwsIr/x1/Yfe3rwf2W2a "
      "azure-firstboot-test-key (TEST ONLY, never trust it)")
ED2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDTuR/qj80Yb7x/Lo3yCBwWKkwLIt4AML7MFAVKZ143h second-test-key"


def blob(kind, extra=b"\x00\x00\x00\x20" + b"k" * 32):
    raw = struct.pack(">I", len(kind)) + kind.encode() + extra
    return base64.b64encode(raw).decode()


# ------------------------------------------------------------------ user names

@pytest.mark.parametrize("name", ["azureuser", "alice", "_svc", "ab", "a-b_c9", "x" * 64, "first.last",
                                  "Alice", "9lives", ".hidden", "a..b", "user6", "web-admin", "a-"])
def test_good_user_names(name):
    assert accounts.username_problem(name) is None


@pytest.mark.parametrize("name, fragment", [
    ("root", "disallowed"),
    ("Root", "disallowed"),
    ("admin", "disallowed"),
    ("user1", "disallowed"),
    ("support_388945a0", "disallowed"),
    ("a", "disallowed"),
    ("123", "disallowed"),
    ("", "1 to 64"),
    ("x" * 65, "1 to 64"),
    ("-oops", "starts with '-'"),
    ("42", "all digits"),
    (".", "refused"),
    ("..", "refused"),
    ("a b", "other than letters"),
    ("a:b", "other than letters"),
    ("a,b", "other than letters"),
    ("a/b", "other than letters"),
    ("../../etc", "other than letters"),
    ("a;reboot", "other than letters"),
    ("$(touch x)", "other than letters"),
    ("al\u00efce", "other than letters"),
    ("a\nb", "other than letters"),
    ("a\tb", "other than letters"),
    ("a\x7fb", "other than letters"),
    ("a@b", "other than letters"),
    ("a$", "other than letters"),
])
def test_bad_user_names(name, fragment):
    problem = accounts.username_problem(name)
    assert problem and fragment in problem
    assert "\n" not in problem and "\t" not in problem


def test_every_arm_disallowed_name_is_refused():
    assert len(accounts.ARM_DISALLOWED) == 32
    for name in accounts.ARM_DISALLOWED:
        assert "disallowed" in accounts.username_problem(name)
        assert "disallowed" in accounts.username_problem(name.upper())


# ------------------------------------------------------------------------ keys

@pytest.mark.parametrize("kind", sorted(accounts.KEY_TYPES))
def test_every_known_key_type(kind):
    line = "%s %s me@host" % (kind, blob(kind))
    assert accounts.parse_key(line) == line


def test_key_normalized_crlf_and_spacing():
    assert accounts.parse_key(ED + "\r\n") == ED
    assert accounts.parse_key("  " + ED.replace(" ", "   ", 1) + "\n") == ED
    no_comment = " ".join(ED.split()[:2])
    assert accounts.parse_key(no_comment + "\r\n") == no_comment


@pytest.mark.parametrize("line, fragment", [
    ("", "empty"),
    ("\r\n", "empty"),
    ('command="/bin/sh" ' + ED, "key options"),
    ('from="10.0.0.1",no-pty ' + ED, "key options"),
    ("restrict " + ED, "known type"),
    ("ssh-dss " + blob("ssh-dss"), "known type"),
    (ED + "\n" + ED2, "line break"),
    (ED + "\r" + "x", "line break"),
    ("ssh-ed25519", "no key data"),
    ("ssh-ed25519 not-base64!", "not base64"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEaZhwlR22lMmhve4dgEdglhWwsIr", "not base64"),
    ("ssh-rsa " + ED.split()[1], "not a ssh-rsa key"),
    ("ssh-ed25519 " + blob("ssh-ed25519", b""), "not a ssh-ed25519 key"),
    ("ssh-ed25519 " + base64.b64encode(b"\xff\xff\xff\xff").decode(), "not a ssh-ed25519 key"),
    ("ssh-ed25519 " + "A" * 20000, "at most"),
])
def test_bad_keys(line, fragment):
    with pytest.raises(ValueError) as err:
        accounts.parse_key(line)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value) and "\r" not in str(err.value)


def test_merge_keeps_existing_and_adds_once():
    existing = ("# mine\nno-pty " + ED.replace("TEST ONLY", "other comment") + "\nrandom junk").encode()
    text, added = accounts.merge_keys(existing, [ED, ED2, ED2])
    assert added == 1
    assert text.startswith(existing + b"\n")
    assert text.endswith(ED2.encode() + b"\n") and text.count(b"AAAAIDTuR") == 1
    again, added = accounts.merge_keys(text, [ED, ED2])
    assert (again, added) == (text, 0)
    assert accounts.merge_keys(b"", [ED]) == (ED.encode() + b"\n", 1)


def test_merge_works_on_bytes_and_keeps_every_byte():
    """Lines that are not UTF-8 (a forced command in latin-1), CR, NUL and
    U+2028 stay byte for byte; only \\n separates lines, as for sshd."""
    existing = (b'command="/usr/bin/caf\xe9 --x" ' + ED.encode() + b"\r\n"
                b"\xff\xfe junk\x00\n# \xe2\x80\xa8 " + ED2.encode())
    out, added = accounts.merge_keys(existing, [ED, ED2])
    assert added == 1  # ED is there (with options); ED2 only inside a comment line
    assert out == existing + b"\n" + ED2.encode() + b"\n"
    assert accounts.merge_keys(out, [ED2]) == (out, 0)


# ----------------------------------------------------------------------- paths

@pytest.mark.parametrize("path, home, ok", [
    ("/home/alice/.ssh/authorized_keys", "/home/alice", True),
    ("/home/alice/.ssh/authorized_keys", "/var/home/alice", True),
    ("/var/home/alice/.ssh/authorized_keys", "/var/home/alice", True),
    ("/var/home/alice/.ssh/authorized_keys", "/var/home/alice/", True),
    ("/var/home/alice/.ssh/authorized_keys", "/home/alice", False),
    ("/home/alice/./.ssh//authorized_keys", "/home/alice", False),
    ("/home/alice/x/../.ssh/authorized_keys", "/home/alice", False),
    ("/home/alice/.ssh/authorized_keys2", "/home/alice", False),
    ("/home/alice/.ssh/", "/home/alice", False),
    ("/home/alice/.profile", "/home/alice", False),
    ("/home/alice/../bob/.ssh/authorized_keys", "/home/alice", False),
    ("/home/bob/.ssh/authorized_keys", "/home/alice", False),
    ("/root/.ssh/authorized_keys", "/home/alice", False),
    ("home/alice/.ssh/authorized_keys", "/home/alice", False),
    ("/home/alice/.ssh/authorized_keys\0", "/home/alice", False),
])
def test_key_path_is_exactly_the_authorized_keys_of_the_home(path, home, ok):
    problem = accounts.key_path_problem(path, "alice", home)
    assert (problem is None) == ok
    if not ok:
        assert "is not %s/.ssh/authorized_keys" % home.rstrip("/") in problem


@pytest.mark.parametrize("path, home, rel", [
    ("/home/alice/.ssh/authorized_keys", "/home/alice", ".ssh/authorized_keys"),
    ("/home/alice/x/../.ssh/keys", "/home/alice", ".ssh/keys"),
    ("/home/alice/../bob/.ssh/authorized_keys", "/home/alice", None),
    ("/home/alicex/.ssh/authorized_keys", "/home/alice", None),
    ("/home/alice", "/home/alice", None),
    ("/home/alice/.ssh/a\0b", "/home/alice", None),
])
def test_inside(path, home, rel):
    assert accounts.inside(path, home) == rel


# ------------------------------------------------------------------- IMDS doc

def doc(**profile):
    base = {"adminUsername": "alice", "computerName": "vm", "disablePasswordAuthentication": "true"}
    base.update(profile)
    return {"osProfile": base, "publicKeys": [
        {"keyData": ED, "path": "/home/alice/.ssh/authorized_keys"}, {"keyData": ED2}]}


def test_admin_from_imds():
    spec = accounts.admin_from_imds(doc())
    assert spec.username == "alice" and spec.password_auth is False
    assert spec.keys == [(ED, "/home/alice/.ssh/authorized_keys"), (ED2, "/home/alice/.ssh/authorized_keys")]
    for value, wanted in (("false", True), ("False", True), (False, True), (True, False), ("TRUE", False)):
        assert accounts.admin_from_imds(doc(disablePasswordAuthentication=value)).password_auth is wanted
    no_flag = doc()
    del no_flag["osProfile"]["disablePasswordAuthentication"]
    assert accounts.admin_from_imds(no_flag).password_auth is False


@pytest.mark.parametrize("document, fragment", [
    ([], "no compute"),
    ({}, "osProfile is missing"),
    (doc(adminUsername=""), "adminUsername is missing"),
    (doc(adminUsername=7), "adminUsername is missing"),
    (doc(disablePasswordAuthentication="maybe"), "neither true nor false"),
    ({"osProfile": {"adminUsername": "a"}, "publicKeys": {}}, "not a list"),
    ({"osProfile": {"adminUsername": "a"}, "publicKeys": [{"keyData": 1}]}, "publicKeys[0]"),
    ({"osProfile": {"adminUsername": "a"}, "publicKeys": [{"keyData": ED, "path": 3}]}, "path"),
])
def test_admin_from_imds_bad_shapes(document, fragment):
    with pytest.raises(ValueError) as err:
        accounts.admin_from_imds(document)
    assert fragment in str(err.value)


# -------------------------------------------------------------- system files

def test_passwd_login_defs_groups_useradd_defaults():
    entries = accounts.passwd_entries("root:x:0:0:root:/root:/bin/bash\nbad line\n"
                                      "alice:x:1000:1000:A:/home/alice:/bin/sh\n")
    assert entries == {"root": (0, 0, "/root", "/bin/bash"), "alice": (1000, 1000, "/home/alice", "/bin/sh")}
    assert accounts.uid_range(None) == (1000, 60000)
    assert accounts.uid_range("# x\nUID_MIN\t 500\nUID_MAX 2000\nSYS_UID_MIN 100\n") == (500, 2000)
    assert accounts.group_names("sudo:x:27:\nadm:x:4:a\n") == {"sudo", "adm"}
    assert accounts.default_home(None, "alice") == "/home/alice"
    assert accounts.default_home("# HOME=/x\nHOME=/srv/users/\n", "alice") == "/srv/users/alice"
    assert accounts.parse_groups(" adm, sudo  docker") == ["adm", "sudo", "docker"]
    with pytest.raises(ValueError):
        accounts.parse_groups("adm,$(x)")


def test_file_texts():
    assert accounts.sudoers_text("alice", True).endswith("\nalice ALL=(ALL:ALL) NOPASSWD: ALL\n")
    assert accounts.sudoers_text("alice", False).endswith("\nalice ALL=(ALL:ALL) ALL\n")
    assert accounts.sshd_dropin_text(True).endswith("\nPasswordAuthentication yes\nKbdInteractiveAuthentication yes\n")
    assert accounts.sshd_dropin_text(False).endswith("\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n")


# --------------------------------------------------------------- ovf-env.xml

OVF = b"""<?xml version="1.0" encoding="utf-8"?>
<ns0:Environment xmlns:ns0="http://schemas.dmtf.org/ovf/environment/1"
    xmlns:ns1="http://schemas.microsoft.com/windowsazure" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
  <ns1:ProvisioningSection><ns1:Version>1.0</ns1:Version>
    <ns1:LinuxProvisioningConfigurationSet>
      <ns1:ConfigurationSetType>LinuxProvisioningConfiguration</ns1:ConfigurationSetType>
      <ns1:UserName> alice </ns1:UserName>
      <ns1:UserPassword>%s</ns1:UserPassword>
      <ns1:DisableSshPasswordAuthentication>false</ns1:DisableSshPasswordAuthentication>
      <ns1:HostName>vm</ns1:HostName>
    </ns1:LinuxProvisioningConfigurationSet>
  </ns1:ProvisioningSection>
  <ns1:PlatformSettingsSection><ns1:PlatformSettings><ns1:ProvisionGuestAgent>false</ns1:ProvisionGuestAgent>
  </ns1:PlatformSettings></ns1:PlatformSettingsSection>
</ns0:Environment>
"""


def test_ovf_env_password_with_prefixes_and_entities():
    found = accounts.parse_ovf_env(OVF % b" s3cr&amp;t &lt;x&gt; ")
    assert (found.username, found.password, found.disable_ssh_password_auth) == (
        "alice", " s3cr&t <x> ", False)
    assert found.hostname == "vm" and found.provision_guest_agent is False
    assert found.preprovisioned is None and found.custom_data is None and found.keys == []
    assert accounts.password_problem(found.password) is None
    assert "s3cr" not in repr(found)


def test_ovf_env_refuses_doctype_and_garbage():
    bomb = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]>'
            b"<Environment><ProvisioningSection><LinuxProvisioningConfigurationSet>"
            b"<UserPassword>&b;</UserPassword></LinuxProvisioningConfigurationSet>"
            b"</ProvisioningSection></Environment>")
    with pytest.raises(ValueError) as err:
        accounts.parse_ovf_env(bomb)
    assert "DOCTYPE" in str(err.value)
    with pytest.raises(ValueError):
        accounts.parse_ovf_env(b"<Environment><unclosed>")
    empty = accounts.parse_ovf_env(b"<Environment/>")
    assert empty.username is None and empty.password is None and empty.keys == []


OVF_FULL = b"""<?xml version="1.0" encoding="utf-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
    xmlns:wa="http://schemas.microsoft.com/windowsazure">
  <wa:ProvisioningSection><wa:Version>1.0</wa:Version>
    <LinuxProvisioningConfigurationSet xmlns="http://schemas.microsoft.com/windowsazure">
      <ConfigurationSetType>LinuxProvisioningConfiguration</ConfigurationSetType>
      <HostName> myvm </HostName>
      <UserName>first.last</UserName>
      <DisableSshPasswordAuthentication>True</DisableSshPasswordAuthentication>
      <SSH><PublicKeys>
        <PublicKey><Fingerprint>ABCDEF0123</Fingerprint><Path>/home/first.last/.ssh/authorized_keys</Path>
          <Value>ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1 a@b</Value></PublicKey>
        <PublicKey><Fingerprint>FF00</Fingerprint><Path>/home/first.last/.ssh/authorized_keys</Path></PublicKey>
      </PublicKeys></SSH>
      <CustomData>I2Nsb3VkLWNvbmZpZwpydW5jbWQ6IFtbZWNobywgaGldXQo=</CustomData>
    </LinuxProvisioningConfigurationSet>
  </wa:ProvisioningSection>
  <wa:PlatformSettingsSection><wa:PlatformSettings>
    <wa:ProvisionGuestAgent>true</wa:ProvisionGuestAgent>
    <wa:PreprovisionedVm>true</wa:PreprovisionedVm>
    <wa:PreprovisionedVMType>Savable</wa:PreprovisionedVMType>
  </wa:PlatformSettings></wa:PlatformSettingsSection>
</Environment>
"""


def test_ovf_env_every_field():
    ovf = accounts.parse_ovf_env(OVF_FULL)
    assert (ovf.hostname, ovf.username, ovf.password) == ("myvm", "first.last", None)
    assert ovf.disable_ssh_password_auth is True
    assert ovf.keys == [
        accounts.OvfKey("ABCDEF0123", "/home/first.last/.ssh/authorized_keys",
                        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1 a@b"),
        accounts.OvfKey("FF00", "/home/first.last/.ssh/authorized_keys", "")]
    assert ovf.custom_data == b"#cloud-config\nruncmd: [[echo, hi]]\n"
    assert (ovf.preprovisioned, ovf.preprovisioned_type, ovf.provision_guest_agent) == (
        True, "Savable", True)
    assert "runcmd" not in repr(ovf)


@pytest.mark.parametrize("bad, reason", [
    (b"<CustomData>not base64!</CustomData>", "CustomData is not base64"),
    (b"<CustomData>YWJj=</CustomData>", "CustomData is not base64"),
    (b"<DisableSshPasswordAuthentication>maybe</DisableSshPasswordAuthentication>",
     "DisableSshPasswordAuthentication is 'maybe'"),
])
def test_ovf_env_bad_values(bad, reason):
    doc = (b"<Environment><ProvisioningSection><LinuxProvisioningConfigurationSet>%s"
           b"</LinuxProvisioningConfigurationSet></ProvisioningSection></Environment>" % bad)
    with pytest.raises(ValueError) as err:
        accounts.parse_ovf_env(doc)
    assert reason in str(err.value)


def test_ovf_env_bounded():
    deep = b"<a>" * 100 + b"</a>" * 100
    with pytest.raises(ValueError) as err:
        accounts.parse_ovf_env(deep)
    assert "deeper" in str(err.value)
    many = b"<Environment>" + b"<x/>" * 20000 + b"</Environment>"
    with pytest.raises(ValueError) as err:
        accounts.parse_ovf_env(many)
    assert "more than" in str(err.value)
    keys = (b"<Environment><ProvisioningSection><LinuxProvisioningConfigurationSet><SSH><PublicKeys>"
            + b"<PublicKey><Value>k</Value></PublicKey>" * 101
            + b"</PublicKeys></SSH></LinuxProvisioningConfigurationSet></ProvisioningSection></Environment>")
    with pytest.raises(ValueError) as err:
        accounts.parse_ovf_env(keys)
    assert "SSH public keys" in str(err.value)


def test_decode_base64():
    assert accounts.decode_base64(" aGk=\n", "x") == b"hi"
    assert accounts.decode_base64("", "x") == b""
    with pytest.raises(ValueError):
        accounts.decode_base64("aGk", "x")
    with pytest.raises(ValueError) as err:
        accounts.decode_base64("QUFB" * 100, "x", limit=10)
    assert "larger" in str(err.value)


@pytest.mark.parametrize("password", ["", "a\nb", "a\rb", "a\0b"])
def test_bad_passwords(password):
    assert accounts.password_problem(password)
