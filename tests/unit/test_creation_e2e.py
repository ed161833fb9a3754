"""Every way Azure creates a VM, end to end: the real CLI on a scratch --root
against the fabric emulator (specialized disk, pre-provisioned VM, IMDS
unavailable)."""

import os

import pytest

from fabric_emulator import TEST_PUBLIC_KEY, Fabric
from test_agent_e2e import assert_ok, ready_reports
from test_user_e2e import PASSWD, medium_image, user_machine

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="useradd --root needs root (chroot)")


def records(m, step):
    return m.read("var/lib/azure-firstboot/%s.result" % step)


@pytest.mark.parametrize("scenario", [
    {"specialized": True},
    {"os_disk_create_option": "Attach"},
    # a specialized gallery image: created FromImage, yet no osProfile
    {"computer_name": "", "admin_username": "", "public_keys": []},
])
def test_specialized_vm_is_ready_and_nothing_changes(tmp_path, scenario):
    with Fabric(scenario).start() as fab:
        m = user_machine(tmp_path, fab)
        m.write("etc/hostname", "was-here\n")
        hosts = m.read("etc/hosts")
        procs = m.boot()
        assert_ok(procs)
        net, host, user, rr = procs
        for proc, what in ((host, "host name"), (user, "admin user")):
            lines = [l for l in (proc.stdout + proc.stderr).splitlines() if "specialized VM" in l]
            assert len(lines) == 1 and lines[0].startswith("%s left alone: " % what), proc.stdout
            assert proc.stderr == ""
        assert len(ready_reports(fab)) == 1 and len(fab.health_reports()) == 1
        assert os.path.exists(m.path("var/lib/azure-firstboot/provisioned"))
        for step in ("hostname", "user"):
            assert "result=skipped" in records(m, step) and "specialized VM" in records(m, step)
        assert m.read("etc/hostname") == "was-here\n" and m.read("etc/hosts") == hosts
        assert m.read("etc/passwd") == PASSWD and os.listdir(m.path("home")) == []
        assert os.listdir(m.path("etc/sudoers.d")) == []
        assert not os.path.exists(m.path("etc/ssh/sshd_config.d/50-azure-firstboot.conf"))
        status = m.agent("status").stdout
        assert "skipped" in status


@pytest.mark.parametrize("scenario, step, fragment", [
    ({"computer_name": "", "os_disk_create_option": "FromImage"}, "hostname", "computerName is missing"),
    ({"admin_username": ""}, "user", "adminUsername is missing"),
])
def test_generalized_vm_with_a_blank_name_still_fails(tmp_path, scenario, step, fragment):
    with Fabric(scenario).start() as fab:
        m = user_machine(tmp_path, fab)
        m.boot()
        reports = fab.health_reports()
        assert [r["substatus"] for r in reports] == ["ProvisioningFailed"]
        assert "reason=%s: " % step in reports[0]["description"] and fragment in reports[0]["description"]
        assert not os.path.exists(m.path("var/lib/azure-firstboot/provisioned"))


@pytest.mark.parametrize("pps", ["Running", "Savable", "PreprovisionedOSDisk"])
def test_preprovisioned_vm_is_refused(tmp_path, pps):
    with Fabric({"pps_type": pps}).start() as fab:
        m = user_machine(tmp_path, fab)
        m.write("etc/hostname", "was-here\n")
        net, host, user, rr = m.boot()
        for proc in (host, user):
            assert proc.returncode == 1 and "Traceback" not in proc.stderr
            assert "pre-provisioning is not supported (IMDS extended.compute.ppsType is %r)" % pps in proc.stderr
        assert rr.returncode == 1
        reports = fab.health_reports()
        assert [r["substatus"] for r in reports] == ["ProvisioningFailed"]
        assert "pre-provisioning is not supported" in reports[0]["description"]
        assert m.read("etc/hostname") == "was-here\n" and m.read("etc/passwd") == PASSWD
        assert not os.path.exists(m.path("var/lib/azure-firstboot/provisioned"))
        # the agent asks for the extended document
        assert all("extended=true" in r["path"] for r in fab.requests("imds"))


@pytest.mark.parametrize("scenario", [{"imds_forever": 404}, {"imds_refuse_for": 3600}])
def test_imds_unavailable_without_a_medium_fails_in_bounded_time(tmp_path, scenario):
    with Fabric(scenario).start() as fab:
        m = user_machine(tmp_path, fab, imds__timeout="2")
        net, host, user, rr = m.boot()
        for proc, what in ((host, "host name"), (user, "admin user")):
            assert proc.returncode == 1 and "Traceback" not in proc.stderr
            assert "cannot get the %s: IMDS unavailable (" % what in proc.stderr
            assert "and no provisioning medium with ovf-env.xml" in proc.stderr
        reports = fab.health_reports()
        assert [r["substatus"] for r in reports] == ["ProvisioningFailed"]


# ------------------------------------------------ IMDS unavailable: ovf-env.xml

SECOND_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDTuR/qj80Yb7x/Lo3yCBwWKkwLIt4AML7MFAVKZ143h second-test-key"


def ovf_env(host="ovfhost", user="first.last", keys=((TEST_PUBLIC_KEY, None),), disable="true", extra=""):
    entries = "".join(
        "<PublicKey><Fingerprint>%s</Fingerprint><Path>/home/%s/.ssh/authorized_keys</Path>%s</PublicKey>"
        % ("A1B2C3D4E5F6" if fingerprint is None else fingerprint, user,
           "<Value>%s</Value>" % value if value else "")
        for value, fingerprint in keys)
    return ("""<?xml version="1.0" encoding="utf-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" xmlns:wa="http://schemas.microsoft.com/windowsazure">
 <wa:ProvisioningSection><wa:Version>1.0</wa:Version>
  <LinuxProvisioningConfigurationSet xmlns="http://schemas.microsoft.com/windowsazure">
   <ConfigurationSetType>LinuxProvisioningConfiguration</ConfigurationSetType>
   <HostName>%s</HostName><UserName>%s</UserName>
   <DisableSshPasswordAuthentication>%s</DisableSshPasswordAuthentication>
   <SSH><PublicKeys>%s</PublicKeys></SSH>
  </LinuxProvisioningConfigurationSet></wa:ProvisioningSection>
 <wa:PlatformSettingsSection><wa:PlatformSettings>%s</wa:PlatformSettings></wa:PlatformSettingsSection>
</Environment>
""" % (host, user, disable, entries, extra))


API_400 = [400, {}, '{"error": "Bad request. api-version is invalid or was not specified in the request."}']


@pytest.mark.parametrize("scenario", [{"imds_forever": 404}, {"imds_refuse_for": 3600},
                                      {"imds_forever": API_400}])
def test_imds_unavailable_the_identity_comes_from_the_medium(tmp_path, scenario):
    with Fabric(dict(scenario, admin_username="imdsuser", computer_name="imdshost")).start() as fab:
        m = user_machine(tmp_path, fab, imds__timeout="2")
        medium_image(m, ovf_env(keys=((TEST_PUBLIC_KEY, None), (SECOND_KEY, "")), host="OvfHost"))
        procs = m.boot()
        assert_ok(procs)
        net, host, user, rr = procs
        for proc, what in ((host, "host name"), (user, "admin user")):
            assert ("IMDS unavailable (IMDS answered HTTP 400" if "imds_forever" in scenario and
                    scenario["imds_forever"] == API_400 else
                    "IMDS unavailable (IMDS instance metadata: gave up after") in proc.stderr
            assert "the %s comes from ovf-env.xml" % what in proc.stderr
            assert "read ovf-env.xml (" in proc.stdout
        assert "image file" not in user.stdout  # left in the drive for the hostname step
        assert m.read("etc/hostname") == "OvfHost\n"
        assert "hostname=OvfHost" in records(m, "hostname") and "source=ovf-env.xml" in records(m, "hostname")
        assert m.account("first.last")[5] == "/home/first.last" and m.account("imdsuser") is None
        assert m.read("home/first.last/.ssh/authorized_keys") == TEST_PUBLIC_KEY + "\n" + SECOND_KEY + "\n"
        assert "PasswordAuthentication no\n" in m.read("etc/ssh/sshd_config.d/50-azure-firstboot.conf")
        assert len(ready_reports(fab)) == 1
        assert os.path.exists(m.path("var/lib/azure-firstboot/provisioned"))


def test_imds_unavailable_a_key_given_only_by_fingerprint_fails(tmp_path):
    with Fabric({"imds_forever": 404}).start() as fab:
        m = user_machine(tmp_path, fab, imds__timeout="1")
        medium_image(m, ovf_env(keys=((None, "0123456789ABCDEF"),)))
        net, host, user, rr = m.boot()
        assert host.returncode == 0 and user.returncode == 1
        assert "ovf-env.xml SSH PublicKey 0 is given only by its Fingerprint '0123456789ABCDEF'" in user.stderr
        reports = fab.health_reports()
        assert [r["substatus"] for r in reports] == ["ProvisioningFailed"]
        assert m.read("etc/passwd") == PASSWD


def test_imds_unavailable_ovf_key_path_elsewhere_fails(tmp_path):
    with Fabric({"imds_forever": 404}).start() as fab:
        m = user_machine(tmp_path, fab, imds__timeout="1")
        medium_image(m, ovf_env().replace("/.ssh/authorized_keys", "/.profile"))
        net, host, user, rr = m.boot()
        assert user.returncode == 1
        assert "ovf-env.xml SSH PublicKey 0: SSH key path '/home/first.last/.profile' is not" in user.stderr


def test_imds_wins_when_both_answer_and_disagree(tmp_path):
    with Fabric({"admin_username": "alice", "computer_name": "imdshost"}).start() as fab:
        m = user_machine(tmp_path, fab)
        medium_image(m, ovf_env(host="ovfhost", user="bob"))
        procs = m.boot()
        assert_ok(procs)
        user = procs[2]
        assert ("IMDS and ovf-env.xml disagree on the admin user name ('alice', 'bob'): IMDS is used"
                in user.stderr)
        assert ("IMDS and ovf-env.xml disagree on the host name ('imdshost', 'ovfhost'): IMDS is used"
                in user.stderr)
        assert m.read("etc/hostname") == "imdshost\n"
        assert m.account("alice") and m.account("bob") is None


def test_preprovisioned_in_ovf_env_is_refused(tmp_path):
    with Fabric({"admin_username": "alice"}).start() as fab:
        m = user_machine(tmp_path, fab)
        medium_image(m, ovf_env(user="alice", extra="<wa:PreprovisionedVm>true</wa:PreprovisionedVm>"
                                                    "<wa:PreprovisionedVMType>Savable</wa:PreprovisionedVMType>"))
        net, host, user, rr = m.boot()
        assert user.returncode == 1 and rr.returncode == 1
        assert "pre-provisioning is not supported (ovf-env.xml PreprovisionedVm is true, type 'Savable')" in user.stderr
        assert "pre-provisioning is not supported" in fab.health_reports()[0]["description"]
        assert m.account("alice") is None


def test_imds_other_final_answers_still_fail(tmp_path):
    # only "no answer in time" and 400 (an api-version it does not know) mean unavailable
    with Fabric({"imds_forever": 403}).start() as fab:
        m = user_machine(tmp_path, fab, imds__timeout="2")
        medium_image(m, ovf_env())
        net, host, user, rr = m.boot()
        for proc, what in ((host, "host name"), (user, "admin user")):
            assert proc.returncode == 1
            assert "cannot get the %s from IMDS: IMDS answered HTTP 403" % what in proc.stderr
        assert m.account("first.last") is None
