"""Issue 13 end to end (real CLI processes, the emulator over loopback):
a broken configuration still reports, the KVP record after Ready and after
ProvisioningFailed, the console summary lines, `status` exit codes and
--wait, and the CLI messages of issue 8."""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from fabric_emulator import Fabric
from test_agent_e2e import TOP, VM_ID, Machine, assert_ok, ready_reports

from azure_firstboot import __version__, kvp

POOL = "var/lib/hyperv/.kvp_pool_1"


@pytest.fixture
def fab():
    with Fabric().start() as fabric:
        yield fabric


def cli(*args, env=None, python=sys.executable, **kw):
    environ = dict(os.environ, PYTHONPATH=os.path.join(TOP, "src"))
    environ.pop("JOURNAL_STREAM", None)
    environ.update(env or {})
    kw.setdefault("timeout", 120)
    return subprocess.run([python, "-m", "azure_firstboot"] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=environ, universal_newlines=True, **kw)


def pool_records(m):
    with open(m.path(POOL), "rb") as handle:
        data = handle.read()
    assert len(data) % kvp.RECORD_SIZE == 0
    return data, kvp.decode_pool(data)


# ------------------------------------------------------- a broken configuration

def test_bad_config_still_reports_provisioning_failed(tmp_path, fab):
    m = Machine(tmp_path, fab)
    with open(m.config, "a") as handle:
        handle.write("[provisioning]\ntimout = 5\n")  # line 10: a typo
    net, host, rr = m.boot()
    where = "%s:10: unknown key 'timout' in [provisioning]" % m.config
    for proc in (net, host, rr):
        assert where in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert net.returncode == 2 and "reachable after" in net.stdout   # did its work, then says so
    assert host.returncode == 2 and m.read("etc/hostname") == "localhost\n"  # changed nothing
    assert fab.requests("imds") == []
    assert rr.returncode == 1
    reports = fab.health_reports()  # the valid [wireserver] endpoint line was used
    assert len(reports) == 1 and reports[0]["state"] == "NotReady"
    assert reports[0]["substatus"] == "ProvisioningFailed"
    assert reports[0]["fields"]["reason"].startswith("configuration: %s:10: unknown key 'timout'" % m.config)
    assert not os.path.exists(m.path("var/lib/azure-firstboot/provisioned"))
    status = m.agent("status")
    assert status.returncode == 1 and "status:       failed: reported ProvisioningFailed: configuration" \
        in status.stdout


def test_undecodable_line_reports_and_the_other_lines_count(tmp_path, fab):
    m = Machine(tmp_path, fab)
    with open(m.config, "ab") as handle:
        handle.write(b"[hostname]\npublish = \xff\n")  # line 10
    rr = m.boot()[2]
    assert rr.returncode == 1 and "Traceback" not in rr.stderr
    reports = fab.health_reports()  # the emulator's endpoint (line 2) was used
    assert len(reports) == 1 and reports[0]["substatus"] == "ProvisioningFailed"
    assert reports[0]["fields"]["reason"] == "configuration: %s:10: not UTF-8 text" % m.config


def test_explicit_missing_config_is_exit_2_default_missing_is_defaults(tmp_path, fab):
    m = Machine(tmp_path, fab)
    proc = cli("--config", str(tmp_path / "nope.conf"), "--root", m.root, "status")
    assert proc.returncode == 2 and proc.stderr == "azure-firstboot: error: %s: no such file\n" % (
        tmp_path / "nope.conf")
    proc = cli("--root", m.root, "status", "--json")  # ROOT/etc/azure-firstboot/... absent
    assert proc.returncode == 3 and json.loads(proc.stdout)["config_problems"] == []


def test_a_fifo_as_configuration_never_blocks(tmp_path):
    # a FIFO in place of the configuration file: opening it for reading would block
    # until a writer comes (a unit would hold the boot until its TimeoutStartSec)
    root = tmp_path / "root"
    os.makedirs(str(root / "etc/azure-firstboot"))
    fifo = root / "etc/azure-firstboot/azure-firstboot.conf"
    os.mkfifo(str(fifo))
    proc = cli("--root", str(root), "status", timeout=20)  # no network: status only
    assert proc.returncode == 4 and "Traceback" not in proc.stderr
    assert "config:       %s: cannot read: not a regular file; using the built-in defaults" % fifo \
        in proc.stdout
    proc = cli("--config", str(fifo), "--root", str(root), "status", timeout=20)
    assert proc.returncode == 2 and proc.stderr.endswith(
        "azure-firstboot: error: %s: cannot read: not a regular file\n" % fifo)
    big = tmp_path / "big.conf"
    big.write_text("# x\n" * 20000)
    proc = cli("--config", str(big), "--root", str(root), "status", "--json", timeout=20)
    assert json.loads(proc.stdout)["config_problems"] == [
        "%s: larger than 64 KiB; using the built-in defaults" % big]


def test_root_without_config_reads_the_images_file(tmp_path, fab):
    m = Machine(tmp_path, fab)
    os.makedirs(m.path("etc/azure-firstboot"))
    shutil.copy(m.config, m.path("etc/azure-firstboot/azure-firstboot.conf"))
    os.unlink(m.config)
    procs = [cli("--root", m.root, step) for step in ("network-wait", "hostname", "report-ready")]
    assert_ok(procs)
    assert len(ready_reports(fab)) == 1  # the emulator's address came from ROOT's file


# ----------------------------------------------------------------------- KVP

def test_kvp_record_after_ready(tmp_path, fab):
    m = Machine(tmp_path, fab)
    os.makedirs(m.path("var/lib/hyperv"))
    assert_ok(m.boot())
    data, records = pool_records(m)
    assert len(data) == 2560 and data[:19] == b"PROVISIONING_REPORT" and data[19:512] == b"\0" * 493
    key, value = records[0]
    fields = value.split("|")
    assert fields[:3] == ["result=success", "agent=azure-firstboot/" + __version__, "vm_id=" + VM_ID]
    assert fields[3].startswith("timestamp=20") and fields[3].endswith("Z") and len(fields) == 4
    assert data[512 + len(value):] == b"\0" * (2048 - len(value))


def test_kvp_record_after_provisioning_failed_replaces_in_place(tmp_path):
    with Fabric({"computer_name": "a|b_c"}).start() as fab:
        m = Machine(tmp_path, fab)
        os.makedirs(m.path("var/lib/hyperv"))
        other = kvp.encode_record("hv-daemon-key", "keep")
        m.write("proc/stat", "cpu 1\nbtime %d\n" % (time.time() - 600))
        with open(m.path(POOL), "wb") as handle:
            handle.write(other + kvp.encode_record("PROVISIONING_REPORT", "result=success|old"))
        net, host, rr = m.boot()
        assert host.returncode == 1 and rr.returncode == 1
        data, records = pool_records(m)
        assert len(records) == 2 and data[:2560] == other
        value = records[1][1]
        assert value.startswith("result=error|reason=hostname: ") and "a/b_c" in value
        assert value.endswith("|documentation_url=https://aka.ms/linuxprovisioningerror")
        assert "|vm_id=%s|timestamp=" % VM_ID in value and len(value.encode()) <= 1022
        assert len(fab.health_reports()) == 1


def test_no_kvp_directory_no_pool(tmp_path, fab):
    m = Machine(tmp_path, fab)
    assert_ok(m.boot())
    assert not os.path.exists(m.path("var/lib/hyperv"))


# ------------------------------------------------------------ console summary

def test_each_unit_leaves_one_summary_line_under_systemd(tmp_path):
    with Fabric({"computer_name": "a_b"}).start() as fab:
        m = Machine(tmp_path, fab)
        env = {"JOURNAL_STREAM": "8:12345"}
        procs = [m.agent(step, env=env) for step in ("network-wait", "hostname", "report-ready")]
        lines = [p.stderr.splitlines() for p in procs]
        assert all(len(l) == 1 for l in lines), lines
        assert lines[0][0].startswith("<5>WireServer 127.0.0.1:") and lines[0][0].endswith(" reachable")
        assert lines[1][0].startswith("<5>hostname FAILED: ") and "a_b" in lines[1][0]
        assert lines[2][0].startswith("<5>provisioning FAILED: hostname: ")
        assert lines[2][0].endswith("(reported to Azure)")
        assert "<3>error: " in procs[1].stdout  # the errors stay in the journal (stdout)
    with Fabric().start() as fab:
        m = Machine(tmp_path / "ok", fab)
        procs = [m.agent(step, env={"JOURNAL_STREAM": "8:1"}) for step in
                 ("network-wait", "hostname", "report-ready")]
        assert procs[1].stderr == "<5>host name set to myvm\n"
        assert procs[2].stderr == "<5>Ready reported (incarnation 1)\n"
    procs = [m.agent(step) for step in ("network-wait", "report-ready")]  # outside systemd: no summary
    assert [p.stderr for p in procs] == ["", ""]


# ------------------------------------------------------------------- status

def test_status_exit_codes(tmp_path, fab):
    m = Machine(tmp_path, fab)
    assert m.agent("status").returncode == 3
    assert_ok(m.boot())
    text = m.agent("status")
    assert text.returncode == 0 and "status:       provisioned: Ready reported" in text.stdout
    doc = json.loads(m.agent("status", "--json").stdout)
    assert (doc["status"], doc["exit_code"], doc["vm_id"]) == ("provisioned", 0, VM_ID)
    off = Machine(tmp_path / "off", fab, asset_tag="none")
    assert off.agent("status").returncode == 4
    assert json.loads(off.agent("status", "--json").stdout)["status"] == "not on Azure"
    assert m.agent("status", "--bogus").returncode == 2
    assert m.agent("status", "--timeout", "5").returncode == 2  # needs --wait
    bad = m.agent("status", "--wait", "--timeout", "5m")
    assert bad.returncode == 2 and "expects seconds" in bad.stderr and "float" not in bad.stderr


def test_status_failed_after_provisioning_failed(tmp_path):
    with Fabric({"computer_name": "a_b"}).start() as fab:
        m = Machine(tmp_path, fab)
        m.boot()
        proc = m.agent("status", "--json")
        doc = json.loads(proc.stdout)
        assert proc.returncode == 1 and doc["status"] == "failed"
        assert doc["detail"].startswith("reported ProvisioningFailed: hostname:")
        m.reboot()  # a new boot: failed in an earlier boot, not finished in this one
        assert m.agent("status").returncode == 3


def test_status_wait_blocks_until_report_ready_finished(tmp_path):
    with Fabric({"ws_delay": 0.7}).start() as fab:
        m = Machine(tmp_path, fab)
        quick = m.agent("status", "--wait", "--timeout", "0.5")
        assert quick.returncode == 3
        environ = dict(os.environ, PYTHONPATH=os.path.join(TOP, "src"))
        waiter = subprocess.Popen(
            [sys.executable, "-m", "azure_firstboot", "--config", m.config, "--root", m.root,
             "status", "--wait", "--timeout", "100"], stdout=subprocess.PIPE, env=environ)
        assert_ok([m.agent("network-wait"), m.agent("hostname")])
        rr = subprocess.Popen(
            [sys.executable, "-m", "azure_firstboot", "--config", m.config, "--root", m.root,
             "report-ready"], stdout=subprocess.PIPE, env=environ)
        time.sleep(1.0)
        assert rr.poll() is None and waiter.poll() is None  # report-ready still running
        assert rr.wait(60) == 0
        assert waiter.wait(10) == 0
        assert b"status:       provisioned" in waiter.stdout.read()
        waiter.stdout.close()
        rr.stdout.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_status_as_a_user_who_cannot_read_product_uuid(fab):
    """A real unprivileged process (uid 65534) runs status on a provisioned tree."""
    python = "/usr/bin/python3"
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python,
                            "-c", "import sys; sys.path.insert(0, %r); import azure_firstboot"
                            % os.path.join(TOP, "src")], stderr=subprocess.DEVNULL)
    if probe.returncode != 0:
        pytest.skip("uid 65534 cannot run %s on this checkout" % python)
    top = tempfile.mkdtemp(prefix="afb-status-")
    try:
        os.chmod(top, 0o755)
        m = Machine(top, fab)
        assert_ok(m.boot())
        os.chmod(m.path("sys/class/dmi/id/product_uuid"), 0o400)
        os.chmod(m.config, 0o644)

        def as_nobody():
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)

        proc = cli("--config", m.config, "--root", m.root, "status", "--json", preexec_fn=as_nobody, python=python)
        doc = json.loads(proc.stdout)
        assert proc.returncode == 0, proc.stderr
        assert doc["status"] == "provisioned" and doc["vm_id"] == VM_ID
        assert doc["vm_id_source"] == "recorded by the units in this boot"
        ident = m.read("run/azure-firstboot/identity")
        assert ident == "on_azure=yes\nvm_id=%s\n" % VM_ID
        assert stat.S_IMODE(os.stat(m.path("run/azure-firstboot/identity")).st_mode) == 0o644
        # only the generator's flag in /run (a provisioned reboot: no unit ran)
        os.unlink(m.path("run/azure-firstboot/identity"))
        m.write("run/azure-firstboot/provisioned", VM_ID + "\n")
        proc = cli("--config", m.config, "--root", m.root, "status", preexec_fn=as_nobody, python=python)
        assert proc.returncode == 0 and "(not root?)" not in proc.stdout
    finally:
        shutil.rmtree(top)


# --------------------------------------------------------------- CLI polish

@pytest.mark.parametrize("command, fragment", [
    ("status", "3  not yet"),
    ("deprovision", "/var/lib/dhclient/*.lease*"),
    ("report-ready", "kvp_pool_1"),
    ("hostname", "computerName"),
    ("network-wait", "option 245"),
])
def test_command_help(command, fragment):
    proc = cli(command, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: azure-firstboot %s" % command)
    assert fragment in proc.stdout


@pytest.mark.parametrize("line, fragment", [
    ("[imds]\ntimeout = 5m", "bad value for imds.timeout: '5m': expected a number of seconds"),
    ("[imds]\nendpoint = http://127.0.0.1", "without a scheme"),
    ("[imds]\nendpoint = 127.0.0.1:\u00b2", "port must be a number from 1 to 65535"),
    ("[imds]\ntimeout = 0", "must be more than 0 and at most 604800 seconds"),
])
def test_config_messages_are_one_clear_line(tmp_path, line, fragment):
    conf = tmp_path / "a.conf"
    conf.write_text(line + "\n", encoding="utf-8")
    proc = cli("--config", str(conf), "--root", str(tmp_path), "status")
    lines = proc.stderr.splitlines()
    assert lines == ["azure-firstboot: warning: %s:2: %s" % (conf, lines[0].split(":2: ", 1)[1])]
    assert fragment in lines[0] and "invalid literal" not in lines[0] and "float" not in lines[0]


def test_sub_second_network_timeout_is_reported_as_such(tmp_path, fab):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        m = Machine(tmp_path, fab, wireserver__endpoint="127.0.0.1:%d" % sock.getsockname()[1],
                    provisioning__network_timeout="0.5")
        net = m.agent("network-wait")
        assert net.returncode == 1 and "not reachable within 0.5 s" in net.stderr
    finally:
        sock.close()


def test_not_root_hint_only_when_permissions_are_the_cause(tmp_path, fab):
    m = Machine(tmp_path, fab)
    os.unlink(m.path("sys/class/dmi/id/product_uuid"))
    proc = m.agent("report-ready")
    assert proc.returncode == 1 and "product_uuid does not exist" in proc.stderr
    assert "not root?" not in proc.stderr
