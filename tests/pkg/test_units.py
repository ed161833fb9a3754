"""Static cross-checks between systemd/ (units, preset, example config, man page)
and the agent's own contract (CLI commands, configuration schema and defaults)."""

import glob
import os
import re
import subprocess
import sys

from conftest import AGENT_UNITS, RESOURCE_DISK_UNIT, SSH_KEYGEN_UNIT, SYSPATH, TOP, UNITS

from azure_firstboot import cli, config

SYSTEMD = os.path.join(TOP, "systemd")


def unit(name):
    """Unit file -> {key: [values]} (sections merged; keys are unique across ours)."""
    keys = {}
    with open(os.path.join(SYSTEMD, name), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")):
                key, _, value = line.partition("=")
                keys.setdefault(key, []).append(value)
    return keys


def seconds(text):
    m = re.fullmatch(r"(\d+)(min|s)?", text)
    assert m, text
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


def test_units_run_cli_commands_with_shared_runtime_dir():
    for name in AGENT_UNITS:
        u = unit(name)
        command = name[len("azure-firstboot-"):-len(".service")]
        assert u["ExecStart"] == ["/usr/bin/azure-firstboot " + command]
        assert command in cli.COMMANDS
        assert u["Type"] == ["oneshot"] and u["RemainAfterExit"] == ["yes"]
        assert u["StateDirectory"] == ["azure-firstboot"]
        assert u["RuntimeDirectory"] == ["azure-firstboot"]
        # shared /run/azure-firstboot must survive any one unit stopping or failing
        assert u["RuntimeDirectoryPreserve"] == ["yes"]
        # network-wait is part of network-online.target (like systemd-networkd-wait-online)
        wanted = "network-online.target" if command == "network-wait" else "multi-user.target"
        assert u["WantedBy"] == [wanted]
        # ProcSubset=pid would hide /proc/sys/kernel/random/boot_id (state.py)
        assert u.get("ProcSubset") != ["pid"]
        assert u["IPAddressDeny"] == ["any"]
        allowed = " ".join(u["IPAddressAllow"]).split()
        for needed in ("localhost", "link-local", "168.63.129.16", "10.0.0.0/8"):
            assert needed in allowed, (name, needed)


def test_fast_path_and_ordering():
    hostname = unit("azure-firstboot-hostname.service")
    ready = unit("azure-firstboot-report-ready.service")
    wait = unit("azure-firstboot-network-wait.service")
    # the per-boot flags are written by azure-firstboot-generator (provisioned also,
    # as a fallback, by network-wait itself): all skip without starting a process
    for u in (wait, hostname, ready, unit("azure-firstboot-user.service")):
        assert u["ConditionPathExists"] == ["!/run/azure-firstboot/provisioned",
                                            "!/run/azure-firstboot/not-azure"]
    generator = os.path.join(TOP, "systemd", "azure-firstboot-generator")
    assert os.access(generator, os.X_OK)
    with open(generator) as f:
        text = f.read()
        assert "/run/azure-firstboot" in text and "provisioned" in text and "not-azure" in text
    # network-wait: part of network-online.target, never after it; it starts with
    # sysinit.target-level dependencies only, not after the network managers (issue 19)
    assert wait["DefaultDependencies"] == ["no"]
    assert "network-online.target" in " ".join(wait["Before"])
    assert " ".join(wait["After"]).split() == ["sysinit.target"]
    for key in ("Wants", "Requires", "Requisite", "BindsTo"):
        assert key not in wait, key
    assert wait["Conflicts"] == ["shutdown.target"] and "shutdown.target" in " ".join(wait["Before"])
    # hostname and report-ready: after network-online.target; hostname has no Requires= chain
    for u in (hostname, ready):
        assert "network-online.target" in " ".join(u["Wants"])
        assert "network-online.target" in " ".join(u["After"])
    assert "Requires" not in hostname
    after = " ".join(ready["After"])
    assert "azure-firstboot-hostname.service" in after and "azure-firstboot-user.service" in after
    # report-ready must run when hostname failed: ordering only, no Requires/Requisite/BindsTo
    for key in ("Requires", "Requisite", "BindsTo", "PartOf"):
        assert "azure-firstboot-hostname.service" not in " ".join(ready.get(key, []))


def test_user_unit_ordering_and_sandbox():
    u = unit("azure-firstboot-user.service")
    hostname = unit("azure-firstboot-hostname.service")
    ready = unit("azure-firstboot-report-ready.service")
    assert u["ConditionPathExists"] == ["!/run/azure-firstboot/provisioned",
                                        "!/run/azure-firstboot/not-azure"]
    assert "network-online.target" in u["Wants"][0]
    after = " ".join(u["After"]).split()
    before = " ".join(u["Before"]).split()
    assert "network-online.target" in after
    # report-ready sees the result; sshd is not waited for (that put its start on the
    # critical path); the agent itself signals a running sshd once the drop-in changed
    # (no ExecStartPost systemctl: a reload job report-ready, After=ssh, waited for)
    assert "azure-firstboot-report-ready.service" in before
    for name in ("ssh.service", "sshd.service"):
        assert name not in before and name not in after
    assert "ExecStartPost" not in u
    # in parallel with hostname: no ordering either way, no dependency
    assert "azure-firstboot-hostname.service" not in " ".join(u["After"] + u["Before"])
    assert "azure-firstboot-user.service" not in " ".join(
        hostname.get("After", []) + hostname.get("Before", []))
    # report-ready must run when the user step failed: ordering only
    for key in ("Requires", "Requisite", "BindsTo", "PartOf"):
        assert "azure-firstboot-user.service" not in " ".join(ready.get(key, []))
    # sandbox: no user namespace (real root for the account databases), only CD-ROMs
    assert u["NoNewPrivileges"] == ["yes"] and u["ProtectSystem"] == ["strict"]
    assert u["DevicePolicy"] == ["closed"] and u["DeviceAllow"] == ["block-sr r"]
    assert u["PrivateMounts"] == ["yes"]
    assert set(u["CapabilityBoundingSet"][0].split()) == {
        "CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE"}  # no CAP_SYS_ADMIN: the medium is never mounted
    assert "@mount" not in " ".join(u["SystemCallFilter"])


def test_timeouts_leave_room_for_the_configured_defaults():
    defaults = config.defaults()
    timeout = {n: seconds(unit(n)["TimeoutStartSec"][0]) for n in AGENT_UNITS}
    assert timeout["azure-firstboot-network-wait.service"] > defaults[("provisioning", "network_timeout")]
    assert timeout["azure-firstboot-hostname.service"] > defaults[("imds", "timeout")]
    assert timeout["azure-firstboot-user.service"] > defaults[("imds", "timeout")]
    assert timeout["azure-firstboot-report-ready.service"] > defaults[("provisioning", "deadline")]


KEYGEN_GLOB = "/etc/ssh/ssh_host_*_key"


def test_ssh_keygen_unit_conditions_ordering_sandbox():
    u = unit(SSH_KEYGEN_UNIT)
    # runs ssh-keygen itself, never the agent (no Python on this path)
    assert u["ExecStart"] == ["/usr/bin/ssh-keygen -A"]
    assert u["Type"] == ["oneshot"] and u["RemainAfterExit"] == ["yes"]
    assert u["WantedBy"] == ["multi-user.target"]
    assert seconds(u["TimeoutStartSec"][0]) > 0
    # only when no host key exists (systemd: "!" + glob = no file matches), and only
    # where there is an ssh-keygen to run and an sshd to use the keys
    assert u["ConditionPathExistsGlob"] == ["!" + KEYGEN_GLOB]
    assert sorted(u["ConditionPathExists"]) == ["/usr/bin/ssh-keygen", "/usr/sbin/sshd"]
    # before the SSH server (Debian: ssh.service, Fedora/RHEL: sshd.service), never pulling
    # it in, and not after anything that waits for the network or the agent (ssh.service is
    # After=network.target; report-ready is After=ssh.service): no ordering cycle, no delay
    before = " ".join(u["Before"]).split()
    assert "ssh.service" in before and "sshd.service" in before
    after = " ".join(u.get("After", [])).split()
    assert after == ["sshd-keygen.target"], after   # Fedora's per-type generators go first
    for key in ("Wants", "Requires", "Requisite", "BindsTo", "PartOf", "Upholds"):
        assert key not in u, key
    assert u.get("DefaultDependencies") is None   # sysinit/basic first: /etc is writable
    # sandbox: no network at all, only /etc/ssh writable, no capabilities (root owns /etc/ssh)
    assert u["PrivateNetwork"] == ["yes"] and u["IPAddressDeny"] == ["any"]
    assert u["RestrictAddressFamilies"] == ["AF_UNIX"]
    assert u["CapabilityBoundingSet"] == [""] and u["NoNewPrivileges"] == ["yes"]
    assert u["ProtectSystem"] == ["strict"] and u["ReadWritePaths"] == ["/etc/ssh"]
    assert "User" not in u and "DynamicUser" not in u   # the keys must belong to root


# Options that give a unit its own mount namespace: the resource disk's mount and swap
# would then stay inside the service.
MOUNT_NAMESPACE_OPTIONS = ("ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
                           "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                           "ProtectControlGroups", "ProtectProc", "ProcSubset", "ProtectHostname",
                           "PrivateMounts", "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths",
                           "TemporaryFileSystem", "BindPaths", "MountFlags", "RootDirectory")


def test_resource_disk_unit_every_boot_off_the_ready_path_sandbox():
    u = unit(RESOURCE_DISK_UNIT)
    assert u["ExecStart"] == ["/usr/bin/azure-firstboot resource-disk"]
    assert "resource-disk" in cli.COMMANDS and "resource-disk" not in cli.UNITS  # not a step
    assert u["Type"] == ["oneshot"] and u["RemainAfterExit"] == ["yes"]
    assert u["WantedBy"] == ["multi-user.target"]
    # every boot on Azure (a redeploy brings a fresh disk to the same VM id): only the
    # generator's not-azure flag stops it, never the provisioned one
    assert u["ConditionPathExists"] == ["!/run/azure-firstboot/not-azure"]
    # off the path to Ready: after report-ready (ordering only), before nothing
    assert " ".join(u["After"]).split() == ["local-fs.target", "azure-firstboot-report-ready.service"]
    for key in ("Before", "Wants", "Requires", "Requisite", "BindsTo", "PartOf", "DefaultDependencies"):
        assert key not in u, key
    for name in AGENT_UNITS:
        assert RESOURCE_DISK_UNIT not in " ".join(unit(name).get("After", []) + unit(name).get("Wants", []))
    # sandbox: the system's mount table (no mount namespace), one capability, no network
    for key in MOUNT_NAMESPACE_OPTIONS:
        assert key not in u, key
    assert u["CapabilityBoundingSet"] == ["CAP_SYS_ADMIN"] and u["NoNewPrivileges"] == ["yes"]
    assert u["RestrictAddressFamilies"] == ["AF_UNIX"] and u["IPAddressDeny"] == ["any"]
    assert u["DevicePolicy"] == ["closed"]
    assert sorted(u["DeviceAllow"]) == ["block-blkext rw", "block-sd rw"]
    assert "@mount" in u["SystemCallFilter"][0] and "@swap" in u["SystemCallFilter"][0]
    assert seconds(u["TimeoutStartSec"][0]) > 240 + 3 * 60  # mkfs + mount + mkswap + swapon bounds


def test_deprovision_ssh_host_keys_makes_the_keygen_condition_true(tmp_path):
    """What deprovision removes is what the unit's glob looks for: before, a key matches
    (the unit is skipped); after, none does (it runs on the next boot)."""
    root = str(tmp_path)
    ssh = os.path.join(root, "etc/ssh")
    os.makedirs(ssh)
    names = ["ssh_host_rsa_key", "ssh_host_rsa_key.pub", "ssh_host_ed25519_key",
             "ssh_host_ed25519_key.pub", "ssh_host_ecdsa_key", "ssh_host_ecdsa_key.pub",
             "ssh_host_ed25519_key-cert.pub", "sshd_config", "ssh_config", "moduli"]
    for n in names:
        with open(os.path.join(ssh, n), "w") as f:
            f.write("x\n")
    pattern = root + KEYGEN_GLOB
    assert sorted(os.path.basename(p) for p in glob.glob(pattern)) == [
        "ssh_host_ecdsa_key", "ssh_host_ed25519_key", "ssh_host_rsa_key"]
    env = dict(os.environ, PATH=SYSPATH, PYTHONPATH=os.path.join(TOP, "src"))
    out = subprocess.run([sys.executable, "-m", "azure_firstboot", "--root", root,
                          "deprovision", "--ssh-host-keys"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert out.returncode == 0, out.stdout
    assert glob.glob(pattern) == []
    assert sorted(os.listdir(ssh)) == ["moduli", "ssh_config", "sshd_config"]


def test_preset_enables_exactly_the_units():
    with open(os.path.join(SYSTEMD, "90-azure-firstboot.preset"), encoding="utf-8") as f:
        lines = [l.split() for l in f if l.strip() and not l.startswith("#")]
    assert sorted(lines) == sorted(["enable", u] for u in UNITS)


def test_example_config_lists_every_key_with_its_default():
    with open(os.path.join(SYSTEMD, "azure-firstboot.conf"), encoding="utf-8") as f:
        text = f.read()
    # as shipped: all defaults
    assert config.parse(text, "example") == config.defaults()
    # uncommented: every key present exactly once, each value being the default
    uncommented = re.sub(r"(?m)^#(\w+ =( |$))", r"\1", text)
    keys = set()
    section = None
    for line in uncommented.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif re.match(r"\w+ =( |$)", line):
            keys.add((section, line.split(" =")[0]))
    assert keys == set(config.defaults())
    assert config.parse(uncommented, "example") == config.defaults()


def test_man_page_documents_commands_and_keys():
    with open(os.path.join(SYSTEMD, "azure-firstboot.8"), encoding="utf-8") as f:
        man = f.read().replace("\\-", "-")
    for command in cli.COMMANDS:
        assert any(m + command in man for m in (".B ", ".BR ", "\\fB")), command
    for flags in cli.COMMAND_FLAGS.values():
        for flag in flags:
            assert flag in man, flag
    for section, key in config.defaults():
        assert ".B [%s] %s" % (section, key) in man, (section, key)
    for name in UNITS:
        assert name in man
