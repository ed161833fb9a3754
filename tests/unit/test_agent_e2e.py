"""The CLI end to end: real processes, real loopback sockets, the fabric
emulator on the other side, and a scratch --root for every file."""

import os
import socket
import subprocess
import sys

import pytest

from fabric_emulator import Fabric

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AZURE_TAG = "7783-7084-3265-9085-8269-3286-77"
VM_ID = "5c9f1c56-64f7-4d55-9a0b-6c2f0e8b7a31"


class Machine(object):
    """A scratch system tree plus the agent's configuration for it."""

    def __init__(self, root, fab, asset_tag=AZURE_TAG, vm_id=VM_ID, **settings):
        self.root = str(root)
        self.fab = fab
        self.write("sys/class/dmi/id/chassis_asset_tag", asset_tag + "\n")
        self.write("sys/class/dmi/id/product_uuid", vm_id.upper() + "\n")
        self.write("proc/sys/kernel/random/boot_id", "11111111-0000-4000-8000-000000000001\n")
        self.write("etc/hostname", "localhost\n")
        self.write("etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tlocalhost\n::1\tlocalhost ip6-localhost\n")
        conf = {
            "wireserver": {"endpoint": fab.wireserver_address},
            "imds": {"endpoint": fab.imds_address, "timeout": "20"},
            "provisioning": {"deadline": "20", "network_timeout": "10"},
        }
        for key, value in settings.items():
            section, name = key.split("__")
            conf.setdefault(section, {})[name] = value
        self.config = os.path.join(self.root, "agent.conf")
        with open(self.config, "w") as handle:
            for section, values in conf.items():
                handle.write("[%s]\n" % section)
                for name, value in values.items():
                    if value is not None:
                        handle.write("%s = %s\n" % (name, value))

    def path(self, rel):
        return os.path.join(self.root, rel)

    def write(self, rel, text):
        path = self.path(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)

    def read(self, rel):
        with open(self.path(rel)) as handle:
            return handle.read()

    def agent(self, *args, env=None):
        environ = dict(os.environ, PYTHONPATH=os.path.join(TOP, "src"))
        environ.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "azure_firstboot", "--config", self.config, "--root", self.root] + list(args),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ, timeout=120,
            universal_newlines=True)
        return proc

    def boot(self):
        """The three units in systemd's order; returns their processes."""
        return [self.agent(step) for step in ("network-wait", "hostname", "report-ready")]

    def reboot(self):
        """A new boot: /run is empty again, the kernel has a new boot id."""
        import shutil
        import uuid

        shutil.rmtree(self.path("run"), ignore_errors=True)
        self.write("proc/sys/kernel/random/boot_id", str(uuid.uuid4()) + "\n")


@pytest.fixture
def fab():
    with Fabric().start() as fabric:
        yield fabric


def machine(tmp_path, fab, **kw):
    return Machine(tmp_path, fab, **kw)


def assert_ok(procs):
    for proc in procs:
        assert proc.returncode == 0, (proc.args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr


def ready_reports(fab):
    return [r for r in fab.health_reports() if r["state"] == "Ready"]


# ------------------------------------------------------------------ happy path

def test_first_boot_reboot_and_clone(tmp_path, fab):
    m = machine(tmp_path, fab)
    assert_ok(m.boot())
    ids = fab.goal_state_ids()
    ready = ready_reports(fab)
    assert len(ready) == 1 and len(fab.health_reports()) == 1
    assert (str(ready[0]["incarnation"]), ready[0]["container_id"], ready[0]["instance_id"]) == (
        str(ids["incarnation"]), ids["container_id"], ids["instance_id"])
    assert m.read("etc/hostname") == "myvm\n"
    assert "127.0.1.1\tmyvm\n" in m.read("etc/hosts")
    assert "vm_id=%s\n" % VM_ID in m.read("var/lib/azure-firstboot/provisioned")
    # headers: the agent names itself, speaks the protocol version, asks IMDS properly
    for req in fab.requests("wireserver"):
        assert req["headers"]["x-ms-version"] == "2012-11-30"
        assert req["headers"]["x-ms-agent-name"].startswith("azure-firstboot/")
    imds = fab.requests("imds")
    assert len(imds) == 1 and imds[0]["headers"]["metadata"] == "true"
    assert "x-forwarded-for" not in imds[0]["headers"]
    assert "api-version=" in imds[0]["path"]

    # reboot: no request at all, and the admin's host name survives
    m.write("etc/hostname", "admin-choice\n")
    before = len(fab.requests())
    m.reboot()
    procs = m.boot()
    assert_ok(procs)
    assert len(fab.requests()) == before
    assert m.read("etc/hostname") == "admin-choice\n"
    assert "already provisioned" in procs[2].stdout
    assert os.path.exists(m.path("run/azure-firstboot/provisioned"))

    # clone: same disk, new VM id -> provisions again
    m.write("sys/class/dmi/id/product_uuid", "0b8f6d4e-1111-2222-3333-444455556666\n")
    m.reboot()
    assert_ok(m.boot())
    assert len(ready_reports(fab)) == 2
    assert m.read("etc/hostname") == "myvm\n"
    assert "vm_id=0b8f6d4e-1111-2222-3333-444455556666" in m.read("var/lib/azure-firstboot/provisioned")


def test_status_text_and_json(tmp_path, fab):
    m = machine(tmp_path, fab)
    assert "provisioned:  no" in m.agent("status").stdout
    assert_ok(m.boot())
    text = m.agent("status")
    assert text.returncode == 0
    assert "VM id:        %s" % VM_ID in text.stdout
    assert "provisioned:  yes: Ready reported for incarnation 1" in text.stdout
    assert "hostname:     ok at" in text.stdout
    import json

    doc = json.loads(m.agent("status", "--json").stdout)
    assert doc["vm_id"] == VM_ID and doc["on_azure"] and doc["provisioned"]
    assert doc["steps"]["report-ready"]["incarnation"] == "1"
    assert doc["steps"]["hostname"]["hostname"] == "myvm"


def test_not_on_azure_sends_nothing_unless_forced(tmp_path, fab):
    m = machine(tmp_path, fab, asset_tag="No Asset Tag")
    procs = m.boot()
    assert_ok(procs)
    assert fab.requests() == []
    assert "not on Azure" in procs[0].stdout
    assert m.read("etc/hostname") == "localhost\n"
    forced = Machine(tmp_path / "forced", fab, asset_tag="none", provisioning__assume_azure="yes")
    assert_ok(forced.boot())
    assert len(ready_reports(fab)) == 1


def test_proxy_environment_is_ignored(tmp_path, fab):
    m = machine(tmp_path, fab)
    bad = "http://127.0.0.1:9"
    for step in ("network-wait", "hostname", "report-ready"):
        assert_ok([m.agent(step, env={"http_proxy": bad, "HTTP_PROXY": bad, "no_proxy": ""})])
    assert len(ready_reports(fab)) == 1


# ------------------------------------------------------------- WireServer faults

def test_wireserver_refusing_at_first(tmp_path):
    with Fabric({"ws_refuse_for": 1.5}).start() as fab:
        m = machine(tmp_path, fab)
        procs = m.boot()
        assert_ok(procs)
        assert "reachable after" in procs[0].stdout
        assert len(ready_reports(fab)) == 1


def test_goal_state_503_with_retry_after(tmp_path):
    with Fabric({"goalstate_statuses": [[503, {"Retry-After": "1"}]] * 3}).start() as fab:
        m = machine(tmp_path, fab)
        procs = m.boot()
        assert_ok(procs)
        statuses = [r["status"] for r in fab.requests("wireserver") if "goalstate" in r["path"]]
        assert statuses == [503, 503, 503, 200]
        gaps = [r["t"] for r in fab.requests("wireserver") if "goalstate" in r["path"]]
        assert all(b - a >= 0.9 for a, b in zip(gaps, gaps[1:]))  # Retry-After honoured
        assert len(ready_reports(fab)) == 1
        assert "retrying in 1.0 s" in procs[2].stdout or "retrying in 1.1 s" in procs[2].stdout


def test_health_5xx_and_dropped_connections(tmp_path):
    with Fabric({"health_statuses": [500, 502, 429], "ws_drop": 2}).start() as fab:
        m = machine(tmp_path, fab)
        assert_ok(m.boot())
        assert len(ready_reports(fab)) == 1
        assert len(fab.health_reports()) == 1


def test_role_instance_missing_then_present(tmp_path):
    with Fabric({"roleinstance_missing": 3}).start() as fab:
        m = machine(tmp_path, fab)
        assert_ok(m.boot())
        assert ready_reports(fab)[0]["instance_id"] == fab.goal_state_ids()["instance_id"]


def test_role_instance_never_present_fails_cleanly(tmp_path):
    with Fabric({"roleinstance_missing": 100}).start() as fab:
        m = machine(tmp_path, fab)
        procs = m.boot()
        assert procs[2].returncode == 1
        assert "no RoleInstance" in procs[2].stderr and "Traceback" not in procs[2].stderr
        assert not os.path.exists(m.path("var/lib/azure-firstboot/provisioned"))
        assert fab.health_reports() == []


def test_incarnation_bump_between_goal_state_and_health(tmp_path):
    with Fabric({"bump_incarnation_on_health": 1, "bump_container": True}).start() as fab:
        m = machine(tmp_path, fab)
        procs = m.boot()
        assert_ok(procs)
        posts = [r for r in fab.requests("wireserver") if r["method"] == "POST"]
        assert [p["status"] for p in posts] == [410, 200]
        ready = ready_reports(fab)
        ids = fab.goal_state_ids()
        assert len(ready) == 1 and str(ready[0]["incarnation"]) == str(ids["incarnation"]) == "2"
        assert ready[0]["container_id"] == ids["container_id"]
        assert "stale" in procs[2].stdout
        assert "incarnation=2" in m.read("var/lib/azure-firstboot/provisioned")


@pytest.mark.parametrize("fault", ["truncated", "malformed", "unknown_elements"])
def test_goal_state_body_glitch_recovers(tmp_path, fault):
    with Fabric({"goalstate_body": fault, "goalstate_body_count": 1}).start() as fab:
        m = machine(tmp_path, fab)
        assert_ok(m.boot())
        assert len(ready_reports(fab)) == 1


@pytest.mark.parametrize("fault, message", [
    ("doctype_bomb", "DOCTYPE"),
    ("oversized", "larger than"),
    ("malformed", "malformed XML"),
])
def test_goal_state_body_hostile_fails_without_marker(tmp_path, fault, message):
    with Fabric({"goalstate_body": fault}).start() as fab:
        m = machine(tmp_path, fab)
        procs = m.boot()
        rr = procs[2]
        assert rr.returncode == 1 and message in rr.stderr, rr.stderr
        assert len(rr.stderr.strip().splitlines()) == 1
        assert fab.health_reports() == []
        assert not os.path.exists(m.path("var/lib/azure-firstboot/provisioned"))
        assert "result=failed" in m.read("var/lib/azure-firstboot/report-ready.result")


def test_deadline_bounds_a_wireserver_that_never_recovers(tmp_path):
    with Fabric({"health_statuses": [503] * 1000}).start() as fab:
        m = machine(tmp_path, fab, provisioning__deadline="3")
        rr = m.boot()[2]
        assert rr.returncode == 1 and "gave up after" in rr.stderr
        assert not os.path.exists(m.path("var/lib/azure-firstboot/provisioned"))


def test_wireserver_never_reachable(tmp_path, fab):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = sock.getsockname()[1]
    try:
        m = machine(tmp_path, fab, wireserver__endpoint="127.0.0.1:%d" % port,
                    provisioning__network_timeout="1", provisioning__deadline="2")
        procs = m.boot()
        assert procs[0].returncode == 1 and "not reachable within 1 s" in procs[0].stderr
        assert procs[2].returncode == 1
    finally:
        sock.close()


# ------------------------------------------------------------------ IMDS faults

def test_imds_gone_then_serves(tmp_path):
    with Fabric({"imds_gone_for": 1.5}).start() as fab:
        m = machine(tmp_path, fab)
        assert_ok(m.boot())
        statuses = [r["status"] for r in fab.requests("imds")]
        assert statuses[0] == 410 and statuses[-1] == 200
        assert m.read("etc/hostname") == "myvm\n"
        assert len(ready_reports(fab)) == 1


def test_imds_rate_stays_under_five_per_second(tmp_path):
    with Fabric({"imds_statuses": [[429, {"Retry-After": "0"}]] * 6 + [404, 500]}).start() as fab:
        m = machine(tmp_path, fab)
        assert_ok(m.boot())
        times = [r["t"] for r in fab.requests("imds")]
        assert len(times) == 9
        # The agent starts requests at least 0.2 s apart. The emulator sees
        # arrivals, each late by its own scheduling delay on a loaded 2-core
        # machine, so one gap can look short; over five gaps the delays no
        # longer add up to a rate: any six consecutive requests span >= 0.8 s
        # (a client without the limit sends all nine within a few ms).
        assert all(b - a >= 0.8 for a, b in zip(times, times[5:]))


def test_imds_dropped_connections(tmp_path):
    with Fabric({"imds_drop": 2}).start() as fab:
        m = machine(tmp_path, fab)
        assert_ok(m.boot())
        assert m.read("etc/hostname") == "myvm\n"


@pytest.mark.parametrize("scenario, fragment", [
    ({"computer_name": "$(touch CANARY)"}, "is not a valid host name"),
    ({"computer_name": "a_b"}, "is not a valid host name"),
    ({"computer_name": "a" * 300}, "300 characters long"),
    ({"imds_body": "malformed"}, "not valid JSON"),
    ({"imds_body": "no_osprofile"}, "computerName is missing"),
    ({"imds_body": "oversized"}, "larger than"),
])
def test_bad_hostname_reports_provisioning_failed(tmp_path, scenario, fragment):
    with Fabric(scenario).start() as fab:
        m = machine(tmp_path, fab)
        net, host, rr = m.boot()
        assert net.returncode == 0
        assert host.returncode == 1 and fragment in host.stderr
        assert len(host.stderr.strip().splitlines()) == 1 and "Traceback" not in host.stderr
        assert rr.returncode == 1 and "reported ProvisioningFailed" in rr.stderr
        reports = fab.health_reports()
        assert len(reports) == 1
        assert reports[0]["state"] == "NotReady" and reports[0]["substatus"] == "ProvisioningFailed"
        assert fragment in reports[0]["description"] and len(reports[0]["description"]) <= 512
        assert m.read("etc/hostname") == "localhost\n"
        assert not os.path.exists(m.path("var/lib/azure-firstboot/provisioned"))
        assert not os.path.exists(os.path.join(m.root, "CANARY")) and not os.path.exists("CANARY")


def test_hostname_failure_of_an_earlier_boot_is_not_reported(tmp_path):
    with Fabric({"computer_name": "a_b"}).start() as fab:
        m = machine(tmp_path, fab)
        net, host, rr = m.boot()
        assert host.returncode == 1 and rr.returncode == 1
        # next boot: the admin disabled the hostname unit; report-ready runs alone
        m.reboot()
        assert_ok([m.agent("network-wait"), m.agent("report-ready")])
        assert [r["state"] for r in fab.health_reports()] == ["NotReady", "Ready"]


def test_hostname_disabled_still_reports_ready(tmp_path, fab):
    m = machine(tmp_path, fab, hostname__enabled="no")
    assert_ok(m.boot())
    assert fab.requests("imds") == []
    assert m.read("etc/hostname") == "localhost\n"
    assert len(ready_reports(fab)) == 1


# ------------------------------------------------------------ endpoint discovery

@pytest.mark.parametrize("address, lease_file, lease", [
    ("127.10.11.12", "run/systemd/netif/leases/2", "ADDRESS=10.0.0.4\nOPTION_245=7F0A0B0C\n"),
    ("127.10.11.13", "var/lib/dhcp/dhclient.eth0.leases",
     "lease {\n  interface \"eth0\";\n  option unknown-245 7f:a:b:d;\n  expire never;\n}\n"),
])
def test_option_245_from_a_lease(tmp_path, address, lease_file, lease):
    if os.geteuid() != 0:
        pytest.skip("binding port 80 needs root")
    try:
        fab = Fabric(host=address, wireserver_port=80).start()
    except OSError as exc:
        pytest.skip("cannot bind %s:80: %s" % (address, exc))
    try:
        m = Machine(tmp_path, fab, wireserver__endpoint="auto")
        m.write(lease_file, lease)
        procs = m.boot()
        assert_ok(procs)
        assert "%s:80 (DHCP option 245)" % address in procs[0].stdout
        assert "%s:80 (network-wait)" % address in procs[2].stdout
        assert len(ready_reports(fab)) == 1
    finally:
        fab.stop()


# ----------------------------------------------------------------- CLI contract

@pytest.mark.parametrize("args, code, fragment", [
    (["bogus"], 2, "unknown command"),
    ([], 2, "no command given"),
    (["status", "--nope"], 2, "unknown option --nope"),
    (["hostname", "--json"], 2, "unknown option --json"),
    (["--config"], 2, "--config needs a value"),
])
def test_usage_errors(tmp_path, fab, args, code, fragment):
    m = machine(tmp_path, fab)
    environ = dict(os.environ, PYTHONPATH=os.path.join(TOP, "src"))
    proc = subprocess.run([sys.executable, "-m", "azure_firstboot"] + args, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=environ, universal_newlines=True)
    assert proc.returncode == code and fragment in proc.stderr
    assert "Traceback" not in proc.stderr
    del m


def test_help_and_version(tmp_path, fab):
    m = machine(tmp_path, fab)
    assert "usage: azure-firstboot" in m.agent("--help").stdout
    assert m.agent("--version").stdout.startswith("azure-firstboot 0.")


def test_unreadable_vm_id(tmp_path, fab):
    m = machine(tmp_path, fab)
    m.write("sys/class/dmi/id/product_uuid", "garbage\n")
    proc = m.agent("report-ready")
    assert proc.returncode == 1 and "does not hold a UUID" in proc.stderr
    assert fab.requests() == []


# ------------------------------------------------------------------ deprovision

def test_deprovision(tmp_path, fab):
    m = machine(tmp_path, fab)
    assert_ok(m.boot())
    m.write("etc/machine-id", "0123456789abcdef0123456789abcdef\n")
    m.write("etc/ssh/ssh_host_ed25519_key", "secret")
    m.write("etc/ssh/ssh_host_ed25519_key.pub", "public")
    m.write("etc/ssh/sshd_config", "keep me")
    m.write("home/azureuser/.ssh/authorized_keys", "keep me too")
    m.write("var/lib/dhcp/dhclient.eth0.leases", "lease {}")

    dry = m.agent("deprovision", "--dry-run", "--all")
    assert dry.returncode == 0 and "would remove" in dry.stdout and "would truncate" in dry.stdout
    assert os.path.exists(m.path("var/lib/azure-firstboot/provisioned"))

    state_only = m.agent("deprovision", "--leases")
    assert state_only.returncode == 0
    assert os.listdir(m.path("var/lib/azure-firstboot")) == []
    assert m.read("etc/machine-id") != ""

    full = m.agent("deprovision")   # no flags: everything (as --all)
    assert full.returncode == 0, full.stderr
    assert m.read("etc/machine-id") == "" and m.read("etc/hostname") == ""
    assert not os.path.exists(m.path("etc/ssh/ssh_host_ed25519_key"))
    assert not os.path.exists(m.path("etc/ssh/ssh_host_ed25519_key.pub"))
    assert not os.path.exists(m.path("var/lib/dhcp/dhclient.eth0.leases"))
    assert m.read("etc/ssh/sshd_config") == "keep me"
    assert m.read("home/azureuser/.ssh/authorized_keys") == "keep me too"
    assert "nothing to remove" in m.agent("deprovision").stdout

    # the deprovisioned image provisions again on the same VM id
    assert_ok(m.boot())
    assert len(ready_reports(fab)) == 2


# ------------------------------------------------------------ boot-path weight

HEAVY = ("re", "json", "socket", "encodings.idna", "http.client", "urllib.request", "email", "ssl", "argparse",
         "configparser", "logging", "subprocess", "xml.etree.ElementTree", "random")


@pytest.mark.parametrize("step, allowed", [
    ("network-wait", ()),
    ("report-ready", ()),
    ("hostname", ("subprocess",)),  # IMDS JSON has its own parser (no json/re); subprocess off --root
])
def test_units_do_not_import_heavy_modules(tmp_path, fab, step, allowed):
    """Every import costs ~10x more in a TCG-booted VM; keep the units lean."""
    m = machine(tmp_path, fab)
    if step != "network-wait":
        assert m.agent("network-wait").returncode == 0
    if step == "report-ready":
        assert m.agent("hostname").returncode == 0
    # count only what the agent loads (an interpreter's site may preload some)
    code = ("before = set(sys.modules); from azure_firstboot import cli; rc = cli.main(sys.argv[1:]); "
            "print(' '.join(m for m in %r if m in sys.modules and m not in before)); sys.exit(rc)" % (HEAVY,))
    proc = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, %r); " % os.path.join(TOP, "src")
                           + code, "--config", m.config, "--root", m.root, step],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stdout.split("\n")[-2].split())
    assert loaded <= set(allowed), loaded
