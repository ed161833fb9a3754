"""VM side of the benchmark: variant images and one measured boot, on tests/vm/harness.py.

Everything QEMU/emulator/image related comes from helper-3's harness library; this module
only adds (through the harness's ``customize`` hook, never by editing it):

* the variant layers on the same cached base image:
  ours (our .deb as shipped), sample (the seed document's script + unit, verbatim in
  bench/sample/), waagent (Debian's package + the documented harness fixes) and
  cloud-init (Debian's package, Azure datasource, ovf-env.xml seed, isc-dhcp-client);
* bench instrumentation in every variant alike: bench-taskstats (per-process CPU and
  peak RSS from the kernel's taskstats exit records, no wrapper around the units) and
  bench-collect (runs before vm-report, prints its JSON between BENCH markers on the
  serial console);
* a host -> guest "Ready seen" signal: "BENCHGO" written at the start of the report disk
  once the emulator accepted Ready, so a daemon agent is not powered off early.

Timing sources (host clock): QEMU start = harness BootResult.t_start (time.time() just
before Popen); Ready = emulator record "t" (monotonic since emulator start) + the
emulator's ready-file mtime (written just after it started; bias: a few ms, same for all
variants); DHCP = timestamp of the first DHCPACK in the NIC pcap (filter-dump, host time).
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "vm"))
import harness as h  # noqa: E402

VARIANTS = ("ours", "sample", "waagent", "cloud-init")
# experiments (not in the default set): ours with the units' sandboxing reset by drop-ins,
# to measure what the sandbox setup costs at boot under TCG
EXPERIMENTS = ("ours-nosandbox", "ours-nouserns", "ours-nice", "ours-early", "ours-nopoll")
# bump when a customize function below changes (it is part of the image cache tag)
BENCH_LAYER = "4"
# every unit of ours that runs the agent (the user unit may not be in the harness' list)
OURS_UNITS = list(h.UNITS) + [u for u in ("azure-firstboot-user.service",) if u not in h.UNITS]
AGENT_UNITS = {
    "ours": OURS_UNITS,
    "ours-nosandbox": OURS_UNITS,
    "ours-nouserns": OURS_UNITS,
    "ours-nice": OURS_UNITS,
    "ours-early": OURS_UNITS,
    "ours-nopoll": OURS_UNITS,
    "sample": ["azure-provisioning.service"],
    "waagent": ["walinuxagent.service"],
    "cloud-init": ["cloud-init-local.service", "cloud-init.service", "cloud-config.service",
                   "cloud-final.service"],
}
COMPUTER_NAME = "bench-vm"
# Every variant is served the same admin user and key (IMDS: the emulator's defaults,
# adminUsername azureuser + the test key; the provisioning medium: OVF_ENV below) and
# must create them the way it does on Azure; the host then logs in with the private half.
ADMIN = "azureuser"
TEST_KEY = os.path.join(REPO, "tests", "vm", "test_id_ed25519")
# variants whose agent creates no user: no SSH login to wait for (the seed's sample)
NO_USER = ("sample",)
# experiments that boot another variant's image unchanged (only the host side differs):
# ours-nopoll is ours without the SSH login polling, to check that the polling does not
# slow the guest
SAME_IMAGE = {"ours-nopoll": "ours"}


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _layer_hash(variant):
    parts = [BENCH_LAYER, variant, _bytes(os.path.abspath(__file__))]
    for d in ("guest", "sample"):
        for n in sorted(os.listdir(os.path.join(HERE, d))):
            if os.path.isfile(os.path.join(HERE, d, n)) and not n.endswith(".pyc"):
                parts.append(_bytes(os.path.join(HERE, d, n)))
    return h._hash(*parts)[:8]


def _write(root, rel, text, mode=0o644):
    path = os.path.join(root, rel.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def _apt_install(root, pkgs, lf):
    """apt-get install in the image chroot from the image's own sources (the mirror)."""
    shutil.copy("/etc/resolv.conf", os.path.join(root, "etc/resolv.conf.bench"))
    rc = os.path.join(root, "etc/resolv.conf")
    saved = os.readlink(rc) if os.path.islink(rc) else (_bytes(rc) if os.path.exists(rc) else None)
    if os.path.lexists(rc):
        os.unlink(rc)
    os.rename(os.path.join(root, "etc/resolv.conf.bench"), rc)
    _write(root, "usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
    try:
        h._chroot(root, ["apt-get", "update", "-q"], lf)
        h._chroot(root, ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
                  + list(pkgs), lf)
        h._chroot(root, ["apt-get", "clean"], lf)
    finally:
        os.unlink(os.path.join(root, "usr/sbin/policy-rc.d"))
        os.unlink(rc)
        if isinstance(saved, str):
            os.symlink(saved, rc)
        elif saved is not None:
            with open(rc, "wb") as f:
                f.write(saved)
        shutil.rmtree(os.path.join(root, "var/lib/apt/lists"), ignore_errors=True)
        os.makedirs(os.path.join(root, "var/lib/apt/lists/partial"), exist_ok=True)


def _instrument(root, variant, lf):
    for n in ("bench-taskstats", "bench-collect"):
        shutil.copy(os.path.join(HERE, "guest", n), os.path.join(root, "usr/local/sbin", n))
        os.chmod(os.path.join(root, "usr/local/sbin", n), 0o755)
        shutil.copy(os.path.join(HERE, "guest", n + ".service"),
                    os.path.join(root, "etc/systemd/system", n + ".service"))
    _write(root, "etc/bench/bench.json", json.dumps({"variant": variant,
                                                    "units": AGENT_UNITS[variant]}) + "\n")
    shutil.copy(os.path.join(HERE, "guest", "bench-key.service"),
                os.path.join(root, "etc/systemd/system", "bench-key.service"))
    with open(os.path.join(HERE, "guest", "bench-key.path")) as f:  # the admin's name: ADMIN
        _write(root, "etc/systemd/system/bench-key.path", f.read().replace("@ADMIN@", ADMIN))
    h._chroot(root, ["systemctl", "enable", "bench-taskstats.service",
                     "bench-collect.service", "bench-key.path"], lf)


def _custom_sample(root, lf):
    # The seed document's steps, in order, on our Debian 12 base:
    # 1. "sudo apt purge -y waagent; sudo rm -rf /var/lib/waagent /etc/waagent.conf
    #    /var/log/waagent.log" (waagent is not installed in the base: a no-op, run anyway)
    h._chroot(root, ["apt-get", "purge", "-y", "waagent"], lf, check=False)
    h._chroot(root, ["rm", "-rf", "/var/lib/waagent", "/etc/waagent.conf",
                     "/var/log/waagent.log"], lf)
    # The unit's second ExecStart needs curl, which the document's Debian marketplace
    # image has and our minbase does not.
    _apt_install(root, ["curl", "ca-certificates"], lf)
    # 2. the Python script at /usr/local/azure-provisioning.py, 3. the unit in
    #    /etc/systemd/system, 4. "sudo systemctl enable azure-provisioning.service"
    shutil.copy(os.path.join(HERE, "sample", "azure-provisioning.py"),
                os.path.join(root, "usr/local/azure-provisioning.py"))
    shutil.copy(os.path.join(HERE, "sample", "azure-provisioning.service"),
                os.path.join(root, "etc/systemd/system/azure-provisioning.service"))
    h._chroot(root, ["systemctl", "enable", "azure-provisioning.service"], lf)


def _set_conf(path, key, value):
    text = open(path).read()
    pat = re.compile(r"^#?\s*%s\s*=.*$" % re.escape(key), re.M)
    if pat.search(text):
        text = pat.sub("%s=%s" % (key, value), text, count=1)
    else:
        text += "\n%s=%s\n" % (key, value)
    with open(path, "w") as f:
        f.write(text)


def _custom_waagent(root, lf):
    # eject: waagent ejects the provisioning DVD after copying ovf-env.xml and fails the
    # provisioning without it (Debian's waagent does not depend on it; images have it)
    _apt_install(root, ["waagent", "eject"], lf)
    conf = os.path.join(root, "etc/waagent.conf")
    # waagent provisions the VM itself, as on Azure without cloud-init: host name, the
    # admin user and its key from ovf-env.xml on the provisioning DVD
    _set_conf(conf, "Provisioning.Agent", "waagent")
    _set_conf(conf, "ResourceDisk.Format", "n")
    # The unit has ConditionVirtualization=microsoft: clear it (QEMU is not Hyper-V).
    _write(root, "etc/systemd/system/walinuxagent.service.d/bench.conf",
           "# bench harness: this VM is QEMU, not Hyper-V\n[Unit]\nConditionVirtualization=\n")
    # Debian 12's waagent 2.7.3 calls traceback.format_exception(etype=...), which
    # Python >= 3.10 rejects: a harmless warning becomes "Error fetching goal state".
    patched = []
    for dirpath, _dirs, files in os.walk(os.path.join(root, "usr/lib/python3/dist-packages",
                                                      "azurelinuxagent")):
        for n in files:
            if n.endswith(".py"):
                p = os.path.join(dirpath, n)
                t = open(p).read()
                if "format_exception(etype=" in t:
                    with open(p, "w") as f:
                        f.write(t.replace("format_exception(etype=", "format_exception("))
                    patched.append(os.path.relpath(p, root))
    lf.write("bench: patched traceback.format_exception(etype=) in %s\n" % patched)
    if not patched:
        raise RuntimeError("waagent: the traceback call to patch was not found")
    h._chroot(root, ["systemctl", "enable", "walinuxagent.service"], lf)


OVF_ENV = """<?xml version="1.0" encoding="utf-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" xmlns:oe="http://schemas.dmtf.org/ovf/environment/1" xmlns:wa="http://schemas.microsoft.com/windowsazure" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
  <wa:ProvisioningSection>
    <wa:Version>1.0</wa:Version>
    <LinuxProvisioningConfigurationSet xmlns="http://schemas.microsoft.com/windowsazure" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
      <ConfigurationSetType>LinuxProvisioningConfiguration</ConfigurationSetType>
      <HostName>%(host)s</HostName>
      <UserName>%(admin)s</UserName>
      <DisableSshPasswordAuthentication>true</DisableSshPasswordAuthentication>
      <SSH>
        <PublicKeys>
          <PublicKey>
            <Fingerprint>%(fingerprint)s</Fingerprint>
            <Path>/home/%(admin)s/.ssh/authorized_keys</Path>
            <Value>%(key)s</Value>
          </PublicKey>
        </PublicKeys>
      </SSH>
    </LinuxProvisioningConfigurationSet>
  </wa:ProvisioningSection>
  <wa:PlatformSettingsSection>
    <wa:Version>1.0</wa:Version>
    <PlatformSettings xmlns="http://schemas.microsoft.com/windowsazure" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
      <ProvisionGuestAgent>false</ProvisionGuestAgent>
    </PlatformSettings>
  </wa:PlatformSettingsSection>
</Environment>
"""


def ovf_env():
    """The provisioning medium's ovf-env.xml: host name, admin user and its key (Value, as
    Azure writes it, with the key's fingerprint)."""
    import hashlib
    with open(TEST_KEY + ".pub") as f:
        key = f.read().strip()
    return OVF_ENV % {"host": COMPUTER_NAME, "admin": ADMIN, "key": key,
                      "fingerprint": hashlib.sha1(key.encode()).hexdigest().upper()}


def medium(workdir):
    """The UDF provisioning DVD Azure attaches to every VM (tests/vm/harness.udf_medium)."""
    return h.udf_medium(os.path.join(workdir, "ovf-env.udf"), {"ovf-env.xml": ovf_env().encode()})


def _custom_cloudinit(root, lf):
    _apt_install(root, ["cloud-init", "isc-dhcp-client"], lf)
    _write(root, "etc/cloud/cloud.cfg.d/99-bench.cfg",
           "# bench harness: Azure only (the VM's DMI asset tag says Azure)\n"
           "datasource_list: [ Azure ]\n")
    _write(root, "var/lib/cloud/seed/azure/ovf-env.xml", ovf_env(), 0o600)


NOSANDBOX = """# bench experiment only: reset the sandbox to measure its cost at boot
[Service]
PrivateUsers=no
PrivateTmp=no
PrivateDevices=no
PrivateMounts=no
ProtectSystem=no
ProtectHome=no
ProtectClock=no
ProtectHostname=no
ProtectKernelTunables=no
ProtectKernelModules=no
ProtectKernelLogs=no
ProtectControlGroups=no
ProtectProc=default
ProcSubset=all
RestrictNamespaces=no
MemoryDenyWriteExecute=no
SystemCallFilter=
RestrictAddressFamilies=
IPAddressDeny=
IPAddressAllow=
DevicePolicy=auto
ReadWritePaths=
ReadOnlyPaths=
"""


def _custom_nosandbox(root, lf):
    for u in OURS_UNITS:
        _write(root, "etc/systemd/system/%s.d/bench-nosandbox.conf" % u, NOSANDBOX)


def _custom_nouserns(root, lf):
    for u in OURS_UNITS:
        _write(root, "etc/systemd/system/%s.d/bench-nouserns.conf" % u,
               "# bench experiment only: no user namespace (the (sd-userns) helper)\n"
               "[Service]\nPrivateUsers=no\n")


def _custom_nice(root, lf):
    for u in OURS_UNITS:
        _write(root, "etc/systemd/system/%s.d/bench-nice.conf" % u,
               "# bench experiment only: CPU priority over the rest of the boot\n"
               "[Service]\nNice=-10\n")


def _custom_early(root, lf):
    # network-wait without its ordering after the network managers' services (issue 10
    # decision 1 keeps it): its sandbox and interpreter start with sysinit.target, long
    # before systemd-networkd is up; an override in /etc replaces the packaged unit
    unit = "azure-firstboot-network-wait.service"
    with open(os.path.join(root, "lib/systemd/system", unit)) as f:
        lines = [l for l in f if not l.startswith("After=systemd-networkd.service")]
    _write(root, "etc/systemd/system/" + unit,
           "# bench experiment only: not After= the network managers' services\n" + "".join(lines))


CUSTOM = {"ours": None, "ours-nosandbox": _custom_nosandbox, "ours-nouserns": _custom_nouserns,
          "ours-nice": _custom_nice, "ours-early": _custom_early, "ours-nopoll": None,
          "sample": _custom_sample, "waagent": _custom_waagent, "cloud-init": _custom_cloudinit}


# Every variant gets the same generalization, so first-boot work outside the agents is
# alike: machine-id and /etc/hostname emptied (what `azure-firstboot deprovision
# --machine-id --hostname` does for ours). SSH host keys are kept in every variant:
# `--ssh-host-keys` would leave ours with no host keys and ssh.service failing and
# restarting during our units (nothing on Debian 12 regenerates them; see README).
OURS_DEPROVISION = ("--machine-id", "--hostname")


def _generalize(root, lf):
    for rel in ("etc/machine-id", "etc/hostname"):
        with open(os.path.join(root, rel), "w"):
            pass
    dbus = os.path.join(root, "var/lib/dbus/machine-id")
    if os.path.isfile(dbus) and not os.path.islink(dbus):
        os.unlink(dbus)
    lf.write("bench: generalized (machine-id, hostname emptied)\n")


def build(variant):
    """The variant's image (cached by the harness, keyed by our layer's inputs too)."""
    variant = SAME_IMAGE.get(variant, variant)
    custom = CUSTOM[variant]

    def customize(root, lf):
        if custom:
            custom(root, lf)
        if not variant.startswith("ours"):
            _generalize(root, lf)
        _instrument(root, variant, lf)

    tag = "bench-%s-%s" % (variant, _layer_hash(variant))
    if variant.startswith("ours"):
        deb = h.find_deb()
        if not deb:
            raise RuntimeError("no dist/azure-firstboot_*_all.deb: run 'make deb' first")
        return h.build_image("networkd", deb=deb, deprovision=OURS_DEPROVISION,
                             customize=customize, tag=tag)
    return h.build_image("networkd", deb=None, deprovision=None, customize=customize, tag=tag)


# --------------------------------------------------------------------------- boot

class TimedFabric(h.Fabric):
    """harness.Fabric plus the host wall-clock time of the emulator's t=0."""

    def start(self, timeout=20):
        r = h.Fabric.start(self, timeout)
        # the ready file is written right after the emulator set its t0 and bound
        self.t0_wall = os.stat(self.ready_file).st_mtime
        return r

    def ready_accepted(self):
        """Host time of the first health POST with State Ready that got 200, or None."""
        for r in self.records():
            if r.get("service") == "wireserver" and r.get("method") == "POST" \
                    and "comp=health" in (r.get("path") or "") and r.get("status") == 200 \
                    and "<State>Ready</State>" in (r.get("body") or ""):
                return self.t0_wall + r["t"]
        return None


def scenario(vm_id):
    # same fabric for every variant: default names (compute.name is the scale-set
    # style "myvmss_3", as the emulator ships it); config URLs on the real address so
    # waagent can fetch HostingEnvironmentConfig/SharedConfig through the guestfwd.
    return {"vm_id": vm_id, "computer_name": COMPUTER_NAME,
            "config_url_base": "http://%s" % h.WIRESERVER_IP}


def _go(report_disk):
    with open(report_disk, "r+b") as f:
        f.write(b"BENCHGO\n")
        f.flush()
        os.fsync(f.fileno())


def parse_bench(serial_text):
    m = re.search(r"=====BENCH-BEGIN=====\r?\n(.*?)\r?\n=====BENCH-END=====", serial_text, re.S)
    if not m:
        return None
    try:
        return json.loads(m.group(1))
    except ValueError:
        return None


class KeySignal(object):
    """The guest's "admin key written" signal, read from its serial log: bench-key.path
    (PID 1's own inotify watch on the admin's authorized_keys, no process) starts
    bench-key.service, one /bin/echo of a marker line to ttyS0. Calling it reads what
    the log gained since the last call; ``t`` is the host time the marker was first seen
    (None before)."""

    MARK = b"=====BENCH-KEY====="

    def __init__(self, serial_log):
        self.path = serial_log
        self.pos = 0
        self.tail = b""
        self.t = None

    def __call__(self):
        if self.t is not None:
            return True
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return False
        self.pos += len(data)
        lines = (self.tail + data).split(b"\n")
        self.tail = lines.pop()  # an incomplete last line is read again next time
        if any(self.MARK in ln for ln in lines):
            self.t = time.time()
        return self.t is not None


class SshLogin(object):
    """Polls a real SSH login as the admin with the test key through the QEMU hostfwd
    port on 127.0.0.1 (`ssh -o BatchMode=yes ... true`) until the first success: host time
    of that success (the login and `true` completed). Bounded: at most MAX_ATTEMPTS, one
    at a time. The first attempt waits for ``started()``: the guest's signal that the
    admin's authorized_keys exists (KeySignal: PID 1's watch, then one echo). Before that
    no login can succeed, and every attempt that reaches sshd costs the guest a
    re-executed sshd and a key exchange, ~0.3 s of CPU under TCG: polling from QEMU's
    start slowed ours' DHCP -> Ready by 1-3 s, and polling from the agent's first request
    to the fabric still by ~1.4 s (ours creates the user before Ready, so those attempts
    fell right into its critical path). Then an attempt that fails fast (e.g. sshd not
    started yet) is repeated after 0.5 s, one that reached sshd after 1 s."""

    MAX_ATTEMPTS = 400

    def __init__(self, port, user, key, deadline_s, started=lambda: True):
        import threading
        self.argv = ["ssh", "-F", "/dev/null", "-p", str(port), "-i", key, "-o", "IdentitiesOnly=yes",
                     "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                     "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
                     "-o", "LogLevel=ERROR", "-o", "PasswordAuthentication=no",
                     "-o", "KbdInteractiveAuthentication=no", "%s@127.0.0.1" % user, "true"]
        self.deadline_s = deadline_s
        self.started = started
        self.success_t = None
        self.attempts = 0
        self.last = ""
        self.errors = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        end = time.time() + self.deadline_s
        while not self.stop.is_set() and time.time() < end and not self.started():
            self.stop.wait(0.1)
        while not self.stop.is_set() and self.attempts < self.MAX_ATTEMPTS and time.time() < end:
            self.attempts += 1
            t0 = time.time()
            try:
                p = subprocess.run(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=60)
                rc, self.last = p.returncode, p.stdout.decode("utf-8", "replace").strip()[-200:]
            except subprocess.TimeoutExpired:
                rc, self.last = None, "ssh timed out"
            if rc == 0:
                self.success_t = time.time()
                return
            if self.last not in self.errors and len(self.errors) < 4:
                self.errors.append(self.last)  # why logins failed after the key existed
            self.stop.wait(0.5 if time.time() - t0 < 1.0 else 1.0)

    @property
    def done(self):
        return self.success_t is not None or not self.thread.is_alive()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.thread.join(40)


def _key_copy(workdir):
    key = os.path.join(workdir, "id_ed25519")
    shutil.copyfile(TEST_KEY, key)
    os.chmod(key, 0o600)  # ssh refuses a private key others can read
    return key


def measure_boot(image, variant, workdir, name, vm_id, overlay=None, expect_ready=True,
                 timeout=360, cdrom=None):
    """One boot; returns a dict of figures (None where not measurable) + artefact paths.
    First boots of a variant whose agent creates the admin user also measure boot -> the
    first SSH login as that user (SshLogin); the guest is told to finish (BENCHGO) once
    Ready was accepted and that login worked (or the polling gave up)."""
    os.makedirs(workdir, exist_ok=True)
    report_disk = os.path.join(workdir, name + ".report.raw")
    state = {"go": False}
    poll = expect_ready and variant not in NO_USER and variant != "ours-nopoll"
    port = h.free_port() if poll else None
    serial_log = h.serial_log_path(workdir, name)
    if os.path.exists(serial_log):
        os.unlink(serial_log)  # a stale log of an earlier run would give a false signal
    key_signal = KeySignal(serial_log)
    with TimedFabric(workdir, scenario(vm_id), name=name + ".fabric") as fab:
        login = SshLogin(port, ADMIN, _key_copy(workdir), timeout,
                         started=key_signal) if poll else None

        def stop_when(f):
            if not state["go"] and os.path.exists(report_disk) and \
                    (not expect_ready or f.ready_accepted() is not None) and \
                    (login is None or login.done):
                _go(report_disk)
                state["go"] = True
            return False

        if login:
            login.__enter__()
        try:
            res = h.boot(image, workdir, name, vm_id, fabric=fab, overlay=overlay,
                         timeout=timeout, stop_when=stop_when, poll=0.2, hostfwd=port,
                         cdrom=cdrom)
        finally:
            if login:
                login.__exit__()
        records = fab.records()
        ready_t = fab.ready_accepted()
    out = {"variant": variant, "name": name, "how": res.how, "boot_s": round(res.duration, 2),
           "workdir": workdir, "overlay": res.overlay, "vm_id": vm_id}
    out["ssh_polled"] = bool(login)
    out["boot_to_ssh_s"] = round(login.success_t - res.t_start, 3) if login and login.success_t else None
    out["ready_to_ssh_s"] = (round(login.success_t - ready_t, 3)
                             if login and login.success_t and ready_t else None)
    if login:
        out["ssh_attempts"] = login.attempts
        out["boot_to_key_s"] = round(key_signal.t - res.t_start, 3) if key_signal.t else None
        out["ssh_errors"] = login.errors
        if not login.success_t:
            out["ssh_last_error"] = login.last or "no admin key signal on the console"
    acks = [p for p in h.dhcp_packets(res.pcap) if p["type"] == "ACK"]
    out["boot_to_dhcp_s"] = round(acks[0]["t"] - res.t_start, 3) if acks else None
    out["boot_to_ready_s"] = round(ready_t - res.t_start, 3) if ready_t else None
    out["dhcp_to_ready_s"] = (round(out["boot_to_ready_s"] - out["boot_to_dhcp_s"], 3)
                              if ready_t and acks else None)
    health = [r for r in records if "comp=health" in (r.get("path") or "")]
    out["health_posts"] = [(r.get("status"), re.findall(r"<State>(\w+)</State>",
                                                         r.get("body") or "")) for r in health]
    out["wireserver_requests"] = sum(1 for r in records if r.get("service") == "wireserver")
    out["imds_requests"] = sum(1 for r in records if r.get("service") == "imds")
    bench = parse_bench(res.serial())
    out["guest"] = summarize_guest(bench) if bench else None
    if bench:
        with open(os.path.join(workdir, name + ".bench.json"), "w") as f:
            json.dump(bench, f, indent=1, sort_keys=True)
    return out


def _exec_names(execstart):
    """Process names a unit's ExecStart= lines start: each binary, plus the commands named
    inside a shell -c string (bash execs its last command in place, e.g. hostnamectl)."""
    names = set()
    for cmd in execstart.split("path=")[1:]:
        path = cmd.split(";", 1)[0].strip()
        names.add(os.path.basename(path)[:15])
        argv = cmd.split("argv[]=", 1)[1].split(" ; ", 1)[0] if "argv[]=" in cmd else ""
        for tok in re.split(r"[\s\"'$()`|;&]+", argv):
            if tok and "/" not in tok and tok not in ("true", "false") and shutil.which(tok):
                names.add(tok[:15])
    return names


def attribute(b):
    """{unit: [process dicts]} from the guest's raw exit records (all_procs) and its live
    processes. A process started by PID 1 belongs to the unit that was activating when it
    started (the latest such unit start; its ExecMainPID wins) if its name is one the
    unit's ExecStart= runs; its descendants follow it. Live processes come from the
    unit's cgroup (collected in the guest)."""
    units = b.get("units", {})
    procs = {}
    for pid, ppid, comm, start, end, cpu, rss in b.get("all_procs", []):
        procs[pid] = {"pid": pid, "ppid": ppid, "comm": comm, "start_mono": start,
                      "exit_mono": end, "cpu_s": cpu, "rss_kb": rss}
    win = {}
    for u, d in units.items():
        s = int(d.get("InactiveExitTimestampMonotonic") or 0) / 1e6
        ends = [int(d.get(k) or 0) / 1e6 for k in ("ActiveEnterTimestampMonotonic",
                                                  "InactiveEnterTimestampMonotonic")]
        e = max([x for x in ends if x > s] or [1e12])
        win[u] = (s, e, int(d.get("ExecMainPID") or 0), _exec_names(d.get("ExecStart", "")))
    owner = {}
    for p in procs.values():
        if p["ppid"] != 1:
            continue
        cands = [u for u, (s, e, main, names) in win.items()
                 if s > 0 and (p["pid"] == main or (p["comm"] in names and
                                                    s - 0.5 <= p["start_mono"] <= e + 0.5))]
        mains = [u for u in cands if win[u][2] == p["pid"]]
        if mains or cands:
            owner[p["pid"]] = mains[0] if mains else max(cands, key=lambda u: win[u][0])
    live = {}
    for u, lst in (b.get("procs") or {}).items():  # live processes (cgroup members)
        for p in lst:
            if p.get("live") and u in units and p["pid"] not in owner:
                live[p["pid"]] = (u, p)
                owner[p["pid"]] = u
                procs.setdefault(p["pid"], p)
    grew = True
    while grew:
        grew = False
        for p in procs.values():
            if p["pid"] not in owner and p["ppid"] in owner:
                owner[p["pid"]] = owner[p["ppid"]]
                grew = True
    out = {u: [] for u in units}
    for pid, u in owner.items():
        out[u].append(procs[pid])
    for u in out:
        out[u].sort(key=lambda p: p["start_mono"])
    return out


def summarize_guest(b):
    """Agent CPU / peak RSS / time in units from the guest's bench-collect document."""
    s = {"wait": b.get("wait"), "hostname": b.get("hostname"),
         "taskstats_ok": b.get("taskstats_ok"), "baseline": b.get("baseline")}
    cpu = 0.0
    rss = 0
    nproc = 0
    per_unit = {}
    in_units = 0.0
    attributed = attribute(b) if "all_procs" in b else b.get("procs", {})
    for u, info in sorted(b.get("units", {}).items()):
        procs = attributed.get(u, [])
        ucpu = sum(p.get("cpu_s", 0.0) for p in procs)
        urss = max([p.get("rss_kb", 0) for p in procs] or [0])
        a = int(info.get("InactiveExitTimestampMonotonic") or 0)
        e = int(info.get("ActiveEnterTimestampMonotonic") or 0)
        ie = int(info.get("InactiveEnterTimestampMonotonic") or 0)
        end = e if e >= a else (ie if ie >= a else 0)
        active_s = (end - a) / 1e6 if a and end else None
        if active_s:
            in_units += active_s
        cg = info.get("CPUUsageNSec")
        cg_s = int(cg) / 1e9 if cg and cg.isdigit() else None
        cons = _consumed_s(b.get("consumed", {}).get(u))
        # unit CPU: the cgroup's (exact, all processes incl. systemd's pre-exec setup);
        # journald's "Consumed" for units already stopped; else taskstats' sum
        ucpu_best = cg_s if cg_s is not None else (cons if cons is not None else ucpu)
        per_unit[u] = {"cpu_s": round(ucpu_best, 3), "taskstats_cpu_s": round(ucpu, 3),
                       "peak_rss_kb": urss, "processes": len(procs),
                       "activating_s": round(active_s, 3) if active_s is not None else None,
                       "cgroup_cpu_s": round(cg_s, 3) if cg_s is not None else None,
                       "consumed": b.get("consumed", {}).get(u),
                       "result": "%s/%s %s" % (info.get("ActiveState"), info.get("SubState"),
                                               info.get("Result")),
                       "condition": info.get("ConditionResult"),
                       "comms": sorted(set(p.get("comm") for p in procs))}
        cpu += ucpu_best
        rss = max(rss, urss)
        nproc += len(procs)
    s["units"] = per_unit
    s["cpu_s"] = round(cpu, 3)
    s["peak_rss_kb"] = rss
    s["processes"] = nproc
    s["time_in_units_s"] = round(in_units, 3)
    return s


def _consumed_s(vals):
    """journald's "Consumed 1min 2.345s CPU time" values -> seconds (last one)."""
    if not vals:
        return None
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)(min|ms|us|s|h)", vals[-1]):
        total += float(num) * {"h": 3600, "min": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    return total


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": round(statistics.median(v), 3), "min": round(min(v), 3),
            "max": round(max(v), 3), "n": len(v)}
