"""dhclient (ifupdown): dhclient.conf's ``send host-name`` line and
publishing the host name by restarting ifupdown's unit for the interface."""

from azure_firstboot import log
from azure_firstboot.commands import run, which
from azure_firstboot.netstack import listdir
from azure_firstboot.state import describe, read_bytes, write_atomic

DHCLIENT_CONF_LIMIT = 1024 * 1024


def dhclient_conf_sends_hostname(data):
    """True when dhclient.conf content (bytes or str) has a ``send host-name``
    statement outside comments; only ``\n`` separates lines."""
    if isinstance(data, bytes):
        data = data.decode("latin-1")
    for line in data.split("\n"):
        words = line.split("#", 1)[0].split()
        if words[:2] == ["send", "host-name"]:
            return True
    return False


def dhclient_conf_with_hostname(data):
    """dhclient.conf bytes -> the same bytes plus our one ``send host-name``
    line (after a newline when the file lacks a final one); None when it
    already sends the host name."""
    if dhclient_conf_sends_hostname(data):
        return None
    sep = b"\n" if data and not data.endswith(b"\n") else b""
    return data + sep + b"send host-name = gethostname();\n"


def ensure_dhclient_sends_hostname(paths):
    """Make dhclient.conf send the host name; keeps every byte of the file.
    A file that is too large or not a regular file is left alone with a
    warning."""
    path = paths.own("/etc/dhcp/dhclient.conf")
    try:
        data = read_bytes(path, DHCLIENT_CONF_LIMIT, own=True) or b""
    except OSError as exc:
        log.warning("dhclient.conf left alone: %s" % describe(exc))
        return
    updated = dhclient_conf_with_hostname(data)
    if updated is not None:
        write_atomic(path, updated)


def dhclient_interfaces(pid_files, ifupdown_states):
    """Interfaces whose dhclient ifupdown started: /run/dhclient.IFACE.pid
    names (as ifupdown writes them) whose interface ifupdown holds up
    (/run/network/ifstate.IFACE); (ifupdown's, others)."""
    ifaces = sorted(n[len("dhclient."):-len(".pid")] for n in pid_files
                    if n.startswith("dhclient.") and n.endswith(".pid")
                    and len(n) > len("dhclient..pid"))
    ours = [i for i in ifaces if "ifstate." + i in ifupdown_states]
    return ours, [i for i in ifaces if i not in ours]


def ifupdown_restart_unit(iface, active):
    """The systemd unit whose restart makes ifupdown run ifdown + ifup (with its
    own dhclient arguments) on ``iface``, given ``active``: {unit: is-active
    answer}.  ifup@IFACE.service (allow-hotplug interfaces) when it is active,
    else networking.service (auto interfaces; restarting it cycles all of
    them), else None."""
    unit = "ifup@%s.service" % iface
    if active.get(unit) == "active":
        return unit
    if active.get("networking.service") == "active":
        return "networking.service"
    return None


def publish(paths):
    """Make dhclient.conf send the host name and have ifupdown restart its
    dhclient; returns a one-line summary."""
    ensure_dhclient_sends_hostname(paths)
    ifaces, others = dhclient_interfaces(listdir("/run"), listdir("/run/network"))
    results = ["%s: not restarted (dhclient not started by ifupdown)" % i for i in others]
    if ifaces and which("systemctl"):
        units = ["ifup@%s.service" % i for i in ifaces] + ["networking.service"]
        _, output = run(["systemctl", "is-active"] + units, timeout=30, raw=True)
        active = dict(zip(units, output.split()))
        restart = []
        for iface in ifaces:
            unit = ifupdown_restart_unit(iface, active)
            if unit is None:
                results.append("%s: not restarted (no active ifupdown unit)" % iface)
            elif unit not in restart:
                restart.append(unit)
        for unit in restart:
            # PID 1 runs ifdown/ifup in the distro's own unit: the new dhclient
            # lives in that unit's cgroup, never in ours; systemctl returns when
            # ifup has its lease again
            ok, output = run(["systemctl", "restart", unit], timeout=120)
            results.append("%s%s" % (unit, "" if ok else " failed: " + output))
    return "ifupdown restart of " + ", ".join(results)
