"""Unit 2, hostname: IMDS compute.osProfile.computerName (ovf-env.xml's
HostName when IMDS is unavailable) -> validated -> set -> published to Azure
DNS through the DHCP client.  A specialized VM's host name is left alone
(skipped), a pre-provisioned VM is refused (creation).  A failure is
recorded for report-ready, which reports ProvisioningFailed with the reason.

Path: this file -> creation, protocol (decide, parse, validate) -> transport /
hostfiles (set) / netstack (publish).
"""

import os

from azure_firstboot import creation, hostfiles, log, netstack, protocol, transport
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


def _ovf_env(ctx):
    """(OvfEnv of ovf-env.xml on the provisioning medium, '') or (None, why).
    Only when IMDS is unavailable; the medium is left in the drive (the user
    step does not eject it either then)."""
    from azure_firstboot import accounts, medium

    data, device, why = medium.read_ovf_env(ctx.paths, medium.MEDIA_WAIT)
    if data is None:
        return None, why
    try:
        ovf = accounts.parse_ovf_env(data)
    except ValueError as exc:
        return None, "%s on %s" % (exc, device)
    log.info("read ovf-env.xml (%d bytes) from %s" % (len(data), device))
    return ovf, ""


def run(ctx):
    state = ctx.state
    if not ctx.config[("hostname", "enabled")]:
        state.record(STEP, "skipped", reason="hostname.enabled = no")
        log.info("host name management is disabled in the configuration")
        return 0
    # gather: IMDS; ovf-env.xml only when IMDS is unavailable
    try:
        body = transport.imds_instance(ctx.config[("imds", "endpoint")], ctx.config[("imds", "timeout")])
        doc = protocol.parse_imds_document(body)
    except (transport.DeadlineExceeded, transport.ImdsAnswer) as exc:
        if isinstance(exc, transport.ImdsAnswer) and exc.status != 400:
            return _fail(state, "cannot get the host name from IMDS: %s" % exc)
        # no answer in time, or 400: an IMDS that does not know our api-version
        doc, (ovf, why) = None, _ovf_env(ctx)
        if ovf is None:  # one line says both
            return _fail(state, "cannot get the host name: IMDS unavailable (%s) and no "
                                "provisioning medium with ovf-env.xml (%s)" % (exc, why))
        log.warning("IMDS unavailable (%s): the host name comes from ovf-env.xml" % exc)
    except (transport.TransportError, protocol.ProtocolError) as exc:
        return _fail(state, "cannot get the host name from IMDS: %s" % exc)
    ids = {}  # for report-ready's KVP record: the id in Azure's byte order (protocol.azure_vm_id)
    if doc is not None:
        ovf = None
        imds_vm_id = protocol.json_get(doc, "compute", "vmId")
        imds_vm_id = imds_vm_id.lower() if isinstance(imds_vm_id, str) else None
        if imds_vm_id and not protocol.same_vm(state.vm_id, imds_vm_id):
            log.warning("IMDS vmId %s does not match SMBIOS id %s" % (
                ascii(imds_vm_id[:40]), state.vm_id))
        elif imds_vm_id:
            ids["imds_vm_id"] = imds_vm_id
    # decide
    try:
        how, why = creation.mode(doc, ovf)
    except creation.Refused as exc:
        return _fail(state, str(exc), **ids)
    if how == creation.SPECIALIZED:
        state.record(STEP, "skipped", reason=why, **ids)
        log.info("host name left alone: %s" % why)
        return 0
    try:
        name, source, _notes = creation.computer_name(doc, ovf)
    except ValueError as exc:
        return _fail(state, "cannot get the host name from %s: %s" % (
            "IMDS" if doc is not None else "ovf-env.xml", exc), **ids)
    problem = protocol.hostname_problem(name)
    if problem:
        return _fail(state, problem, **ids)
    previous = hostfiles.current_hostname(ctx.paths)
    try:
        how = hostfiles.set_hostname(ctx.paths, name)
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
            published = netstack.publish_hostname(ctx.paths, name, _wireserver(state))
            if ctx.paths.is_host:
                _wait_for_wireserver(ctx)
        finally:
            if lock is not None:
                os.close(lock)
    else:
        published = "not published (hostname.publish = no)"
    state.record(STEP, "ok", hostname=name, source=source, previous=previous, how=how,
                 published=published, **ids)
    log.info("host name %s (from %s) set (was %s) via %s; %s" % (
        name, source, previous or "unset", how, published))
    return 0
