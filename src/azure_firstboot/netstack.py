"""The network stacks behind one small interface: where the WireServer is
(DHCP option 245 from the leases of systemd-networkd, dhclient or
NetworkManager; or the configured or default address) and publishing a new
host name through whichever DHCP client runs.  One module per stack
(net_networkd, net_nm, net_dhclient), imported only when that stack is asked.
With ``--root`` only files under the root are read; nothing is published."""

import os

from azure_firstboot import log, protocol
from azure_firstboot.state import describe, read_text

NETWORKD_LEASES = "/run/systemd/netif/leases"
DHCLIENT_LEASE_DIRS = ("/var/lib/dhcp", "/var/lib/dhclient", "/var/lib/NetworkManager")
NETWORKD_LEASE_LIMIT = 65536
DHCLIENT_LEASE_LIMIT = 1024 * 1024
NO_LEASE_YET = "default address; no DHCP lease yet"


def listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _lease_text(path, limit):
    try:
        return read_text(path, limit) or ""
    except OSError as exc:
        log.warning("lease file ignored: %s" % describe(exc))
        return ""


def lease_endpoint(paths, now, deadline=None):
    """Option 245 from the DHCP leases on disk (networkd first), or None.
    Reads only regular files under the root, each bounded in size, and
    stops when ``deadline`` (anything with ``remaining()``) has passed."""
    for name in listdir(paths(NETWORKD_LEASES)):
        if deadline is not None and deadline.remaining() <= 0:
            return None
        address = protocol.networkd_option_245(
            _lease_text(paths(NETWORKD_LEASES + "/" + name), NETWORKD_LEASE_LIMIT))
        if address:
            return address
    for directory in DHCLIENT_LEASE_DIRS:
        for name in listdir(paths(directory)):
            if ".lease" in name:
                if deadline is not None and deadline.remaining() <= 0:
                    return None
                text = _lease_text(paths(directory + "/" + name), DHCLIENT_LEASE_LIMIT)
                address = protocol.dhclient_option_245(text, now)
                if address:
                    return address
    return None


def any_lease(paths):
    """True when any DHCP lease file exists (so option 245 was not in it)."""
    if listdir(paths(NETWORKD_LEASES)):
        return True
    return any(".lease" in name for d in DHCLIENT_LEASE_DIRS for name in listdir(paths(d)))


def wireserver_endpoint(configured, paths, deadline=None):
    """(host, port, source) of the WireServer: ``configured`` ([wireserver]
    endpoint) unless it is "auto", else DHCP option 245 from the leases
    (files; NetworkManager's own view when its internal client holds the
    lease), else 168.63.129.16 (source NO_LEASE_YET while there is no lease
    at all).  Lease files are read within ``deadline``."""
    import time

    if configured != "auto":
        host, port = protocol.split_endpoint(configured)
        return host, port, "configuration"
    address = lease_endpoint(paths, time.time(), deadline)
    if address:
        return address, 80, "DHCP option 245"
    if not any_lease(paths):
        return protocol.WIRESERVER_DEFAULT, 80, NO_LEASE_YET
    from azure_firstboot import net_nm

    address = net_nm.nm_lease_endpoint(paths)
    if address:
        return address, 80, "DHCP option 245 (NetworkManager)"
    return protocol.WIRESERVER_DEFAULT, 80, "default address"


def recorded_endpoint(state, configured, paths, deadline=None):
    """The WireServer network-wait reached in this boot (its boot flag),
    else a fresh wireserver_endpoint() lookup within ``deadline``."""
    text = state.boot_flag("endpoint")
    if text:
        try:
            host, port = protocol.split_endpoint(text)
            return host, port, "network-wait"
        except ValueError:
            pass
    return wireserver_endpoint(configured, paths, deadline)


def publish_hostname(paths, name, probe=None):
    """Make the running DHCP client send a request carrying the (new) host
    name, so that Azure DNS registers it.  Returns a one-line summary.
    ``probe``: (host, port) of the WireServer; where publishing takes the
    address away for a moment (systemd-networkd), return only once it is
    back and the WireServer accepts connections again."""
    if not paths.is_host:
        return "not published (--root)"
    from azure_firstboot import net_dhclient, net_networkd, net_nm
    from azure_firstboot.commands import which

    leases = [n for n in listdir(NETWORKD_LEASES) if protocol.wire_number(n, 10) is not None]
    if leases and which("networkctl"):
        return net_networkd.republish(leases, probe)
    if net_nm.nm_running(paths):
        return net_nm.publish(name)
    if any(n.startswith("dhclient.") and n.endswith(".pid") for n in listdir("/run")):
        return net_dhclient.publish(paths)
    return "no DHCP client found to publish the host name"
