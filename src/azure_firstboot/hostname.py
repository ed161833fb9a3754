"""Unit 2, hostname: IMDS compute.osProfile.computerName -> validated ->
set -> published to Azure DNS through the DHCP client.  A failure is
recorded for report-ready, which reports ProvisioningFailed with the reason.

Path: this file -> protocol (parse, validate) -> transport / system.
"""

import os

from azure_firstboot import log, protocol, system, transport
from azure_firstboot import state as st

STEP = "hostname"
REQUESTS_BOUND = 20.0  # s: the longest the DHCP restart waits for requests in flight


def _fail(state, reason, **details):
    state.record(STEP, "failed", reason=reason, **details)
    log.error(reason)
    return 1


def _wait_for_wireserver(ctx, limit=60.0):
    """Publishing restarts the DHCP client, and the address may be gone for a
    moment: return only when the WireServer network-wait found accepts a
    connection again (bounded), so report-ready starts on a working network."""
    import time

    text = ctx.state.boot_flag("endpoint") or protocol.WIRESERVER_DEFAULT
    try:
        host, port = protocol.split_endpoint(text)
    except ValueError:
        return
    deadline = transport.Deadline(limit)
    started = time.monotonic()
    while not transport.can_connect(host, port, min(2.0, max(0.05, deadline.remaining()))):
        if deadline.remaining() <= 0:
            log.warning("WireServer %s:%d not reachable %d s after publishing the host name"
                        % (host, port, limit))
            return
        time.sleep(min(0.2, max(0.0, deadline.remaining())))
    waited = time.monotonic() - started
    if waited >= 0.1:
        log.info("WireServer %s:%d reachable again after %.1f s" % (host, port, waited))


def _wireserver(state):
    """(host, port) network-wait reached in this boot, or None."""
    try:
        return protocol.split_endpoint(state.boot_flag("endpoint") or "")
    except ValueError:
        return None


def run(ctx):
    state = ctx.state
    if not ctx.config[("hostname", "enabled")]:
        state.record(STEP, "skipped", reason="hostname.enabled = no")
        log.info("host name management is disabled in the configuration")
        return 0
    try:
        body = transport.imds_instance(ctx.config[("imds", "endpoint")], ctx.config[("imds", "timeout")])
        name, imds_vm_id = protocol.parse_imds_instance(body)
    except (transport.DeadlineExceeded, transport.TransportError, protocol.ProtocolError) as exc:
        return _fail(state, "cannot get the host name from IMDS: %s" % exc)
    ids = {}  # for report-ready's KVP record: the id in Azure's byte order (protocol.azure_vm_id)
    if imds_vm_id and not protocol.same_vm(state.vm_id, imds_vm_id):
        log.warning("IMDS vmId %s does not match SMBIOS id %s" % (imds_vm_id, state.vm_id))
    elif imds_vm_id:
        ids["imds_vm_id"] = imds_vm_id
    problem = protocol.hostname_problem(name)
    if problem:
        return _fail(state, problem, **ids)
    previous = system.current_hostname(ctx.paths)
    try:
        how = system.set_hostname(ctx.paths, name)
    except OSError as exc:
        return _fail(state, "cannot set host name %s: %s" % (name, st.describe(exc)), **ids)
    if ctx.config[("hostname", "publish")]:
        # Exclusive while the address may be gone: the user step's requests
        # (in parallel with this one) wait instead of failing, and the restart
        # waits for a request in flight (each holds the lock shared).
        lock = None
        if ctx.paths.is_host:
            lock = st.hold_lock(ctx.paths.run(st.REPUBLISH_LOCK), True, REQUESTS_BOUND)
            if lock is None:
                log.warning("publishing without %s (not had within %.0f s)" % (
                    st.REPUBLISH_LOCK, REQUESTS_BOUND))
        try:
            published = system.publish_hostname(ctx.paths, name, _wireserver(state))
            if ctx.paths.is_host:
                _wait_for_wireserver(ctx)
        finally:
            if lock is not None:
                os.close(lock)
    else:
        published = "not published (hostname.publish = no)"
    state.record(STEP, "ok", hostname=name, previous=previous, how=how, published=published, **ids)
    log.info("host name %s set (was %s) via %s; %s" % (name, previous or "unset", how, published))
    return 0
