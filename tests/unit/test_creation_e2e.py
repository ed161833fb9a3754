"""Every way Azure creates a VM, end to end: the real CLI on a scratch --root
against the fabric emulator (specialized disk, pre-provisioned VM, IMDS
unavailable)."""

import os

import pytest

from fabric_emulator import Fabric
from test_agent_e2e import assert_ok, ready_reports
from test_user_e2e import PASSWD, user_machine

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
        assert reports[0]["description"].startswith(step + ": ") and fragment in reports[0]["description"]
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
