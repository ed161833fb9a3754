"""systemd-networkd: publishing the host name (networkctl reconfigure) and
waiting for the address and the WireServer to be back."""

from azure_firstboot import log, protocol
from azure_firstboot.commands import run

REPUBLISH_WAIT = 10.0  # s: how long to wait for networkd's new lease


def republish(indexes, probe):
    """systemd-networkd (252..257 checked) copies the host name into its DHCP
    client only when it configures the client: "networkctl renew" repeats the
    old name (systemd issues 23244, 36792). "networkctl reconfigure" restarts
    the client with the new name, which releases the lease: the address is
    gone for ~0.2 s. So we watch netlink for the link's IPv4 address to come
    back (RTM_NEWADDR, also sent when networkd only refreshes a kept address)
    and for the WireServer to accept a connection before returning: the next
    unit (report-ready) never starts inside that gap."""
    import time

    from azure_firstboot import netlink

    started = time.monotonic()
    end = started + REPUBLISH_WAIT
    with netlink.Watcher() as watcher:  # opened before the restart: nothing missed
        results, last = [], {}
        for index in indexes:
            ok, output = run(["networkctl", "reconfigure", index])
            results.append("%s%s" % (index, "" if ok else " failed: " + output))
            if ok:
                last[protocol.wire_number(index, 10)] = None
        restarted = time.monotonic()
        summary = "systemd-networkd reconfigure of link %s (%.2f s)" % (
            ", ".join(results), restarted - started)
        if not last:
            return summary
        if watcher.sock is None:
            return summary + "; not waiting for the new lease (no netlink: %s)" % watcher.problem
        while True:
            back = all(kind == netlink.RTM_NEWADDR for kind in last.values())
            if back and probe:
                error = watcher.connect(probe[0], probe[1], max(0.05, min(1.0, end - time.monotonic())))
                back = error is None  # on netlink.Changed the wait below returns at once
            if back:
                return summary + "; address%s back %.2f s later" % (
                    " and WireServer" if probe else "", time.monotonic() - restarted)
            if time.monotonic() >= end:
                log.warning("the new DHCP lease is not there after %.0f s; continuing" % REPUBLISH_WAIT)
                return summary + "; no new lease within %.0f s" % REPUBLISH_WAIT
            for event in watcher.wait(min(0.25, max(0.0, end - time.monotonic()))):
                if event and event[0] in (netlink.RTM_NEWADDR, netlink.RTM_DELADDR) \
                        and event[1] == netlink.AF_INET and event[2] in last:
                    last[event[2]] = event[0]
