"""Unit 1, network-wait: find the WireServer and wait (bounded) until it
accepts a TCP connection.  Records the endpoint for the later units.

Path: this file -> transport.can_connect -> system.lease_endpoint.
"""

import time

from azure_firstboot import log, protocol, system, transport

STEP = "network-wait"


NO_LEASE_YET = "default address; no DHCP lease yet"


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


def wireserver_endpoint(ctx, wait, deadline=None):
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
    state = ctx.state
    limit = ctx.config[("provisioning", "network_timeout")]
    deadline = transport.Deadline(limit)  # the lease files are read within it
    started = time.monotonic()
    host, port, source = wireserver_endpoint(ctx, wait=True, deadline=deadline)
    last_note = started
    log.info("waiting up to %d s for the WireServer at %s:%d (%s)" % (limit, host, port, source))
    while not transport.can_connect(host, port, min(2.0, max(0.05, deadline.remaining()))):
        if deadline.remaining() <= 0:
            reason = "WireServer %s:%d not reachable within %d s" % (host, port, limit)
            state.record(STEP, "failed", reason=reason, endpoint="%s:%d" % (host, port))
            log.error(reason)
            return 1
        if time.monotonic() - last_note >= 5:
            last_note = time.monotonic()
            log.info("still waiting for %s:%d to accept a connection (%.0f s)" % (
                host, port, last_note - started))
        time.sleep(min(0.25, max(0.0, deadline.remaining())))
        if source == NO_LEASE_YET:
            # the lease came after we started: it may name another WireServer
            found = _from_leases(ctx, deadline)
            if found:
                source = found[1]
                if found[0] != host:
                    host, port = found[0], 80
                    log.info("DHCP lease names the WireServer %s:%d (%s)" % (host, port, source))
    endpoint = "%s:%d" % (host, port)
    state.set_boot_flag("endpoint", endpoint)
    state.record(STEP, "ok", endpoint=endpoint, source=source,
                 waited=round(time.monotonic() - started, 3))
    log.info("WireServer %s reachable after %.1f s" % (endpoint, time.monotonic() - started))
    return 0
