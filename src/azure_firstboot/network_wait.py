"""Unit 1, network-wait: find the WireServer and wait (bounded) until it
accepts a TCP connection.  Records the endpoint for the later units.

Path: this file -> netlink (wake-ups, connect) -> system.lease_endpoint.
"""

import time

from azure_firstboot import log, protocol, system, transport

STEP = "network-wait"


NO_LEASE_YET = "default address; no DHCP lease yet"
UNREACHABLE = frozenset((101, 113, 99))  # ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL (Linux)


def _from_leases(ctx, deadline=None):
    """(address, source) from the DHCP leases; None while there is no lease."""
    address = system.lease_endpoint(ctx.paths, time.time(), deadline)
    if address:
        return address, "DHCP option 245"
    if not system.any_lease(ctx.paths):
        return None
    address = system.nm_lease_endpoint(ctx.paths)
    if address:
        return address, "DHCP option 245 (NetworkManager)"
    return protocol.WIRESERVER_DEFAULT, "default address"


def wireserver_endpoint(ctx, wait=False, deadline=None):
    """(host, port, source): the configured endpoint, else DHCP option 245
    from the leases (files; NetworkManager's own view when its internal client
    holds the lease), else 168.63.129.16.  With ``wait``, give a lease up to
    one second to appear when there is none at all (then the source is
    NO_LEASE_YET and run() looks again while it waits).  Lease files are read
    within ``deadline``."""
    configured = ctx.config[("wireserver", "endpoint")]
    if configured != "auto":
        host, port = protocol.split_endpoint(configured)
        return host, port, "configuration"
    end = time.monotonic() + (1.0 if wait else 0.0)
    if deadline is not None:
        end = min(end, time.monotonic() + max(0.0, deadline.remaining()))
    while True:
        found = _from_leases(ctx, deadline)
        if found:
            return found[0], 80, found[1]
        if time.monotonic() >= end or (deadline is not None and deadline.remaining() <= 0):
            return protocol.WIRESERVER_DEFAULT, 80, NO_LEASE_YET
        time.sleep(0.1)


def recorded_endpoint(ctx, deadline=None):
    """The endpoint network-wait found in this boot, else a fresh lookup
    (within ``deadline``)."""
    text = ctx.state.boot_flag("endpoint")
    if text:
        try:
            host, port = protocol.split_endpoint(text)
            return host, port, "network-wait"
        except ValueError:
            pass
    return wireserver_endpoint(ctx, wait=False, deadline=deadline)


def run(ctx):
    """Starts before network-online.target, usually before the DHCP lease:
    re-reads the endpoint (a lease may announce option 245) and tries it on
    every address/route change the kernel reports, and every 0.25 s while the
    network is up but the WireServer does not answer yet."""
    from azure_firstboot import netlink

    state = ctx.state
    limit = ctx.config[("provisioning", "network_timeout")]
    deadline = transport.Deadline(limit)  # the lease files are read within it
    started = time.monotonic()
    last_note = started
    attempts = 0
    endpoint = None
    with netlink.Watcher() as watcher:  # opened first: no change slips by
        if watcher.problem:
            log.warning("no netlink (%s); polling every %.1f s" % (watcher.problem, netlink.POLL))
        while True:
            host, port, source = wireserver_endpoint(ctx, deadline=deadline)
            if (host, port) != endpoint:
                endpoint = (host, port)
                log.info("waiting up to %g s for the WireServer at %s:%d (%s)" % (
                    limit, host, port, source))
            attempts += 1
            error = watcher.connect(host, port, min(1.0, max(0.05, deadline.remaining())))
            if error is None:
                break
            if isinstance(error, netlink.Changed) and deadline.remaining() > 0:
                watcher.wait(0)  # take the queued events, then try again at once
                continue
            if deadline.remaining() <= 0:
                reason = "WireServer %s:%d not reachable within %g s (%s)" % (
                    host, port, limit, error.strerror or error)
                state.record(STEP, "failed", reason=reason, endpoint="%s:%d" % (host, port))
                log.error(reason)
                return 1
            if time.monotonic() - last_note >= 5:
                last_note = time.monotonic()
                log.info("still waiting for %s:%d to accept a connection (%.0f s: %s)" % (
                    host, port, last_note - started, error.strerror or error))
            # No route or address yet: only a netlink event can change that
            # (the 1 s is a safety net). Refused: again in 0.25 s. Timed out:
            # the time is already spent, try again at once.
            code = getattr(error, "errno", None)
            quiet = 1.0 if code in UNREACHABLE else (0.0 if code == 110 else 0.25)  # 110: ETIMEDOUT
            watcher.wait(min(quiet, max(0.0, deadline.remaining())))
    text = "%s:%d" % endpoint
    waited = time.monotonic() - started
    state.set_boot_flag("endpoint", text)
    state.record(STEP, "ok", endpoint=text, source=source, waited=round(waited, 3), attempts=attempts)
    log.info("WireServer %s reachable after %.1f s (%d attempts)" % (text, waited, attempts))
    return 0
