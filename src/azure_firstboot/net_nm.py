"""NetworkManager: option 245 as nmcli shows it, and publishing the host name
(ipv4.dhcp-hostname on the applied connection)."""

import os

from azure_firstboot import protocol
from azure_firstboot.commands import run, which
from azure_firstboot.netstack import listdir

NM_RUN = "/run/NetworkManager"
NM_LEASES = "/var/lib/NetworkManager"
# one call answers both questions: which devices NetworkManager runs DHCP on,
# and what their leases say (option 245 as private_245, or unknown_245 when
# NetworkManager drives dhclient)
NMCLI_SHOW = ["nmcli", "-t", "-f", "GENERAL.DEVICE,GENERAL.TYPE,GENERAL.STATE,DHCP4",
              "device", "show"]


def parse_nmcli_devices(text):
    """Terse multi-line ``nmcli -t -f GENERAL.DEVICE,GENERAL.TYPE,GENERAL.STATE,DHCP4
    device show`` output -> [{"device", "type", "state", "dhcp4": {option: value}}].

    In this mode nmcli prints one "FIELD:value" per line without escaping the
    value (which may hold colons); a record starts at GENERAL.DEVICE."""
    devices = []
    current = None
    for line in text.splitlines():
        field, sep, value = line.partition(":")
        if not sep:
            continue
        if field == "GENERAL.DEVICE":
            current = {"device": value, "type": "", "state": "", "dhcp4": {}}
            devices.append(current)
        elif current is None:
            continue
        elif field == "GENERAL.TYPE":
            current["type"] = value
        elif field == "GENERAL.STATE":
            current["state"] = value
        elif field.startswith("DHCP4.OPTION"):
            key, eq, option = value.partition("=")
            if eq:
                current["dhcp4"][key.strip()] = option.strip()
    return devices


def nm_dhcp_devices(devices):
    """The devices NetworkManager itself activated and runs DHCPv4 on: state
    exactly "100 (connected)" (not "connected (externally)", as lo and devices
    configured by another tool are), not loopback, with DHCPv4 lease options."""
    return [d for d in devices
            if d["state"].strip() == "100 (connected)" and d["type"] != "loopback"
            and d["device"] and d["dhcp4"]]


def _colon_hex_ip(value):
    """'a8:3f:81:10' (NetworkManager; dhclient may drop leading zeros: 'a:0:1:2')
    -> '168.63.129.16', None when it is not four bytes."""
    parts = value.strip().split(":")
    if len(parts) != 4:
        return None
    # the one number parser: 1-2 ASCII hex digits, no sign, space or '_'
    octets = [protocol.wire_number(p, 2, 16) for p in parts]
    if None in octets:
        return None
    if octets[0] in (0, 127, 255) or octets[0] >= 224:
        return None
    return ".".join(str(o) for o in octets)


def nm_option_245(devices):
    """Option 245 from the DHCPv4 options of NetworkManager's DHCP devices."""
    for d in nm_dhcp_devices(devices):
        for key in ("private_245", "unknown_245"):
            address = _colon_hex_ip(d["dhcp4"].get(key, ""))
            if address:
                return address
    return None


def nm_running(paths):
    return paths.is_host and os.path.isdir(NM_RUN) and which("nmcli") is not None


def nm_lease_endpoint(paths):
    """Option 245 as NetworkManager holds it (its internal DHCP client writes no
    option 245 to its lease file).  Asks nmcli only when NetworkManager runs and
    has a lease file of its own, so other stacks never pay for a process."""
    if not nm_running(paths):
        return None
    if not any(".lease" in name for name in listdir(NM_LEASES)):
        return None
    ok, output = run(NMCLI_SHOW, timeout=10, raw=True)
    return nm_option_245(parse_nmcli_devices(output)) if ok else None


def publish(name):
    """Restart NetworkManager's DHCP on its DHCP devices with ``name`` as the
    host name to send; returns a one-line summary."""
    ok, output = run(NMCLI_SHOW, timeout=30, raw=True)
    if not ok:
        return "NetworkManager: nmcli device show failed: %s" % " ".join(output.split())[:200]
    results = []
    for d in nm_dhcp_devices(parse_nmcli_devices(output)):
        # NetworkManager's DHCP client takes the name to send only when it
        # starts, and reapply restarts DHCP only when ipv4 settings differ:
        # set ipv4.dhcp-hostname on the applied connection (not the profile)
        ok, output = run(["nmcli", "device", "modify", d["device"],
                          "ipv4.dhcp-hostname", name], timeout=30)
        results.append("%s%s" % (d["device"], "" if ok else " failed: " + output))
    return "NetworkManager DHCP restart (applied ipv4.dhcp-hostname) of " + (
        ", ".join(results) or "no DHCP device")
