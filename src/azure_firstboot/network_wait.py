"""Unit 1, network-wait: find the WireServer and wait (bounded) until it
accepts a TCP connection.  Records the endpoint for the later units.

Path: this file -> netlink (wake-ups, connect) -> netstack.wireserver_endpoint (leases).
"""

import time

from azure_firstboot import log, netstack, transport

STEP = "network-wait"


UNREACHABLE = frozenset((101, 113, 99))  # ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL (Linux)


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
            host, port, source = netstack.wireserver_endpoint(
                ctx.config[("wireserver", "endpoint")], ctx.paths, deadline=deadline)
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
