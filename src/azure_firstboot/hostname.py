"""Unit 2, hostname: IMDS compute.osProfile.computerName -> validated ->
set -> published to Azure DNS through the DHCP client.  A failure is
recorded for report-ready, which reports ProvisioningFailed with the reason.

Path: this file -> protocol (parse, validate) -> transport / system.
"""

from azure_firstboot import log, protocol, system, transport

STEP = "hostname"
IMDS_RETRY = transport.RETRY_STATUSES | frozenset((404, 410))


def _fail(state, reason, **details):
    state.record(STEP, "failed", reason=reason, **details)
    log.error(reason)
    return 1


def run(ctx):
    state = ctx.state
    if not ctx.config[("hostname", "enabled")]:
        state.record(STEP, "skipped", reason="hostname.enabled = no")
        log.info("host name management is disabled in the configuration")
        return 0
    host, port = protocol.split_endpoint(ctx.config[("imds", "endpoint")])
    deadline = transport.Deadline(ctx.config[("imds", "timeout")])
    try:
        response = transport.call(
            host, port, "GET", protocol.IMDS_INSTANCE_PATH, "IMDS instance metadata", deadline,
            headers=[("Metadata", "true")], retry_statuses=IMDS_RETRY, min_interval=0.2)
        if response.status != 200:
            raise protocol.ProtocolError("IMDS answered HTTP %d %s" % (response.status, response.reason))
        name, imds_vm_id = protocol.parse_imds_instance(response.body)
    except (transport.DeadlineExceeded, transport.TransportError, protocol.ProtocolError) as exc:
        return _fail(state, "cannot get the host name from IMDS: %s" % exc)
    if imds_vm_id and not protocol.same_vm(state.vm_id, imds_vm_id):
        log.warning("IMDS vmId %s does not match SMBIOS id %s" % (imds_vm_id, state.vm_id))
    problem = protocol.hostname_problem(name)
    if problem:
        return _fail(state, problem)
    previous = system.current_hostname(ctx.paths)
    try:
        how = system.set_hostname(ctx.paths, name)
    except OSError as exc:
        return _fail(state, "cannot set host name %s: %s" % (name, exc))
    if ctx.config[("hostname", "publish")]:
        published = system.publish_hostname(ctx.paths)
    else:
        published = "not published (hostname.publish = no)"
    state.record(STEP, "ok", hostname=name, previous=previous, how=how, published=published)
    log.info("host name %s set (was %s) via %s; %s" % (name, previous or "unset", how, published))
    return 0
