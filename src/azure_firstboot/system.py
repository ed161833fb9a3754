"""What the agent reads from and changes on the machine: DMI identity, the
host name, the DHCP client.  With ``--root`` only files under the root are
touched; no command runs and no kernel state changes.

Commands are always run as argument lists (never through a shell), and only
with values that passed validation.
"""

import os

from azure_firstboot import log, protocol
from azure_firstboot.state import read_text, write_atomic

DMI = "/sys/class/dmi/id/"


class Identity(object):
    __slots__ = ("on_azure", "asset_tag", "vm_id", "problem")

    def __init__(self, on_azure, asset_tag, vm_id, problem):
        self.on_azure = on_azure
        self.asset_tag = asset_tag
        self.vm_id = vm_id
        self.problem = problem


def read_identity(paths):
    tag = (read_text(paths(DMI + "chassis_asset_tag"), 256) or "").strip()
    raw = read_text(paths(DMI + "product_uuid"), 256)
    if raw is None:
        vm_id, problem = None, "cannot read %s (not root?)" % paths(DMI + "product_uuid")
    else:
        vm_id = protocol.normalize_vm_id(raw)
        problem = None if vm_id else "%s does not hold a UUID: %r" % (
            paths(DMI + "product_uuid"), raw.strip()[:60])
    return Identity(tag == protocol.AZURE_ASSET_TAG, tag, vm_id, problem)


# ----------------------------------------------------------------- commands

def _which(name):
    for directory in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


def run(argv, timeout=30):
    """Run a command (argument list, no shell); return (ok, one-line output)."""
    import subprocess

    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
    except OSError as exc:
        return False, "%s: %s" % (argv[0], exc.strerror)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return False, "%s timed out after %d s" % (" ".join(argv), timeout)
    text = " ".join(out.decode("utf-8", "replace").split())[:300]
    return proc.returncode == 0, text


# ----------------------------------------------------------------- hostname

def hosts_with_name(text, name):
    """/etc/hosts text -> text whose Debian-style 127.0.1.1 line names
    ``name``; None when there is no such line (then the file is left alone)."""
    lines = text.splitlines(True)
    changed = False
    for i, line in enumerate(lines):
        fields = line.split("#", 1)[0].split()
        if fields and fields[0] == "127.0.1.1":
            newline = "\n" if line.endswith("\n") else ""
            lines[i] = "127.0.1.1\t%s%s" % (name, newline)
            changed = True
    return "".join(lines) if changed else None


def _systemd_running(paths):
    return paths.is_host and os.path.isdir("/run/systemd/system")


def set_hostname(paths, name):
    """Make ``name`` the static and the running host name; returns how."""
    how = None
    if _systemd_running(paths) and _which("hostnamectl"):
        ok, output = run(["hostnamectl", "set-hostname", name])
        if ok:
            how = "hostnamectl"
        else:
            log.warning("hostnamectl set-hostname failed (%s); writing /etc/hostname instead" % output)
    if how is None:
        write_atomic(paths("/etc/hostname"), name + "\n")
        how = "/etc/hostname"
        if paths.is_host:
            import _socket

            _socket.sethostname(name)
            how += " + sethostname"
    hosts = read_text(paths("/etc/hosts"), 1024 * 1024)
    if hosts is not None:
        updated = hosts_with_name(hosts, name)
        if updated is not None and updated != hosts:
            write_atomic(paths("/etc/hosts"), updated)
            how += ", /etc/hosts 127.0.1.1"
    return how


def current_hostname(paths):
    if paths.is_host:
        import _socket

        return _socket.gethostname()
    return (read_text(paths("/etc/hostname")) or "").strip()


# --------------------------------------------------------------- DHCP client

NETWORKD_LEASES = "/run/systemd/netif/leases"
DHCLIENT_LEASE_DIRS = ("/var/lib/dhcp", "/var/lib/dhclient", "/var/lib/NetworkManager")


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def lease_endpoint(paths, now):
    """Option 245 from the DHCP leases on disk (networkd first), or None."""
    for name in _listdir(paths(NETWORKD_LEASES)):
        address = protocol.networkd_option_245(read_text(paths(NETWORKD_LEASES + "/" + name)) or "")
        if address:
            return address
    for directory in DHCLIENT_LEASE_DIRS:
        for name in _listdir(paths(directory)):
            if ".lease" in name:
                text = read_text(paths(directory + "/" + name), 1024 * 1024) or ""
                address = protocol.dhclient_option_245(text, now)
                if address:
                    return address
    return None


def any_lease(paths):
    """True when any DHCP lease file exists (so option 245 was not in it)."""
    if _listdir(paths(NETWORKD_LEASES)):
        return True
    return any(".lease" in name for d in DHCLIENT_LEASE_DIRS for name in _listdir(paths(d)))


def dhclient_conf_sends_hostname(text):
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words[:2] == ["send", "host-name"]:
            return True
    return False


def publish_hostname(paths):
    """Make the running DHCP client send a request carrying the (new) host
    name, so that Azure DNS registers it.  Returns a one-line summary."""
    if not paths.is_host:
        return "not published (--root)"
    leases = [n for n in _listdir(NETWORKD_LEASES) if n.isdigit()]
    if leases and _which("networkctl"):
        # reconfigure restarts the DHCP client, which reads the host name
        # afresh; a plain renew would repeat the old one.
        results = []
        for index in leases:
            ok, output = run(["networkctl", "reconfigure", index])
            results.append("%s%s" % (index, "" if ok else " failed: " + output))
        return "systemd-networkd reconfigure of link " + ", ".join(results)
    if os.path.isdir("/run/NetworkManager") and _which("nmcli"):
        ok, output = run(["nmcli", "-t", "-f", "DEVICE,STATE", "device"])
        devices = [line.split(":")[0] for line in output.split() if line.endswith(":connected")] if ok else []
        results = []
        for device in devices:
            ok, output = run(["nmcli", "device", "reapply", device])
            results.append("%s%s" % (device, "" if ok else " failed: " + output))
        return "NetworkManager reapply of " + (", ".join(results) or "no device")
    pids = [n for n in _listdir("/run") if n.startswith("dhclient.") and n.endswith(".pid")]
    if pids and _which("dhclient"):
        conf = "/etc/dhcp/dhclient.conf"
        text = read_text(conf) or ""
        if not dhclient_conf_sends_hostname(text):
            write_atomic(conf, text + ("" if text.endswith("\n") or not text else "\n")
                         + "send host-name = gethostname();\n")
        results = []
        for pid in pids:
            iface = pid[len("dhclient."):-len(".pid")]
            lease = "/var/lib/dhcp/dhclient.%s.leases" % iface
            run(["dhclient", "-x", "-pf", "/run/" + pid])
            ok, output = run(["dhclient", "-4", "-pf", "/run/" + pid, "-lf", lease, iface], timeout=60)
            results.append("%s%s" % (iface, "" if ok else " failed: " + output))
        return "dhclient restarted on " + ", ".join(results)
    return "no DHCP client found to publish the host name"
