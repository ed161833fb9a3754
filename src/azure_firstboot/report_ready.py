"""Unit 3, report-ready: goal state -> Health document -> WireServer.

Ready when provisioning went well, NotReady/ProvisioningFailed with the
reason when a step failed.  The "provisioned" marker is written only after
the WireServer acknowledged Ready.  On 410 Gone (the goal state changed
under us) a fresh goal state is fetched and the report rebuilt.

Path: this file -> protocol (parse, build) -> transport (netstack.recorded_endpoint: the
WireServer network-wait reached).
"""

import os
import time

from azure_firstboot import __version__, identity, log, netstack, protocol, transport, units
from azure_firstboot.state import REQUIRED_BEFORE_READY, describe

STEP = "report-ready"
GOAL_STATE_TRIES = 6

# What a WireServer answer means (issue 18; docs/design.md "Retry rules"): the
# policy is this data, report() and fetch_goal_state() only look it up.
OK = frozenset((200, 201, 202))
# the goal state is stale (410) or the report was refused (400; waagent reads
# 400 InvalidContainerConfiguration so): fetch a fresh goal state, rebuild
# the report and post it again, each round later than the one before
REFETCH = frozenset((400, 410))
# transient: the same request again (transport backoff, Retry-After, at least
# transport.MIN_INTERVAL apart): what WALinuxAgent (403 429 500-504 507) or
# azure-init (404 429 500 503) retry, and 408 Request Timeout
RETRY = frozenset((403, 404, 408, 429, 500, 501, 502, 503, 504, 507))
# every other 4xx/5xx (401, 405, 413, 505 ...) no agent retries: the report
# ends at once with the answer as its reason, not after the deadline
FAIL = transport.ERROR_STATUSES - REFETCH - RETRY
# growing delay before refetch round n (1 s, 2 s, 4 s ... at most 60 s)
REFETCH_FIRST = 1.0
REFETCH_MAX = 60.0


def answer_action(status):
    """A WireServer status -> "ok", "refetch", "retry" or "fail" (pure)."""
    if status in OK:
        return "ok"
    if status in REFETCH:
        return "refetch"
    if status in RETRY:
        return "retry"
    return "fail"


def refetch_delay(rounds):
    """Seconds to hold the WireServer before refetch round ``rounds`` (1, 2,
    ...): doubling from REFETCH_FIRST up to REFETCH_MAX (pure)."""
    return min(REFETCH_MAX, REFETCH_FIRST * 2 ** min(max(rounds - 1, 0), 16))


def refused(what, status, reason, detail=None):
    """The one-line reason for an answer in FAIL."""
    return "the WireServer answered the %s with HTTP %d %s%s, which no agent retries" % (
        what, status, reason, " (%s)" % detail if detail else "")


def _headers():
    return [("x-ms-version", protocol.WIRE_PROTOCOL_VERSION),
            ("x-ms-agent-name", "azure-firstboot/" + __version__)]


def fetch_goal_state(host, port, deadline):
    """The current goal state with a RoleInstance.  An answer in RETRY or
    REFETCH is asked again by the transport until the deadline (backoff,
    Retry-After, jitter, at least transport.MIN_INTERVAL apart), one in FAIL
    ends at once (ProtocolError); a document that is unusable or has no
    RoleInstance is fetched again (spaced the same way), up to
    GOAL_STATE_TRIES times."""
    problem = None
    for attempt in range(1, GOAL_STATE_TRIES + 1):
        if attempt > 1:
            log.info("goal state: %s; fetching again (%d/%d)" % (problem, attempt, GOAL_STATE_TRIES))
            transport.note_failure(host, port)
        try:
            response = transport.call(host, port, "GET", protocol.GOAL_STATE_PATH, "goal state",
                                      deadline, headers=_headers(),
                                      retry_statuses=RETRY | REFETCH)
        except transport.DeadlineExceeded as exc:
            if problem is None or exc.last:
                raise
            raise transport.DeadlineExceeded("goal state: %s; no time left to fetch it again" % problem,
                                             problem)
        if response.status in FAIL:
            raise protocol.ProtocolError(refused("goal state request", response.status, response.reason,
                                                 protocol.parse_error_body(response.body)))
        if response.status != 200:
            problem = "HTTP %d %s" % (response.status, response.reason)
            continue
        try:
            goal_state = protocol.parse_goal_state(response.body)
        except protocol.ProtocolError as exc:
            problem = str(exc)
            continue
        if goal_state.instance_id is None:
            problem = "no RoleInstance in the document"
            continue
        return goal_state
    raise protocol.ProtocolError("no usable goal state: %s" % problem)


def report(host, port, deadline, failure, before_post=None, posted=None):
    """Post the health report until the WireServer accepts it; returns the
    goal state it was built from.  ``failure`` is the Description of a
    failure report (None: Ready).

    What each answer does is the data above: OK ends, RETRY is retried by
    the transport until the deadline, REFETCH fetches a fresh goal state and
    posts a report rebuilt from it (round n held back refetch_delay(n)), FAIL
    ends at once (ProtocolError naming the answer).  When the deadline ends
    the rounds the error names the last answer."""
    began = time.monotonic()
    rounds = 0
    refetches = 0
    last = None
    while True:
        try:
            goal_state = fetch_goal_state(host, port, deadline)
            if failure is None and posted is not None and posted(goal_state):
                log.info("Ready for incarnation %s was already acknowledged in this boot; "
                         "not posted again" % goal_state.incarnation)
                return goal_state
            body = protocol.health_document(goal_state, failure)
            if before_post is not None:
                before_post()  # the KVP record: the host reads it when the report arrives
            response = transport.call(
                host, port, "POST", protocol.HEALTH_PATH, "health report", deadline,
                headers=_headers() + [("Content-Type", "text/xml;charset=utf-8")], body=body,
                retry_statuses=RETRY)
        except transport.DeadlineExceeded as exc:
            if last is None or exc.last:
                raise
            # time ran out between rounds: say what the WireServer last answered
            raise transport.DeadlineExceeded("health report: gave up after %d reports in %.0f s; last answer %s" % (
                rounds, time.monotonic() - began, last), last)
        rounds += 1
        action = answer_action(response.status)
        if action == "ok":
            return goal_state
        detail = protocol.parse_error_body(response.body)
        last = "HTTP %d %s%s" % (response.status, response.reason, " (%s)" % detail if detail else "")
        if action == "refetch":
            refetches += 1
            delay = refetch_delay(refetches)
            log.info("health report for incarnation %s %s: %s; fetching a fresh goal state in %.0f s" % (
                goal_state.incarnation, "is stale" if response.status == 410 else "refused", last, delay))
            transport.hold(host, port, delay)
            continue
        # "fail" (a RETRY answer comes back only from the transport's last try: DeadlineExceeded)
        raise protocol.ProtocolError(refused("health report", response.status, response.reason, detail))


READY_POSTED = "ready-posted"  # /run/azure-firstboot: "VM-ID INCARNATION" Ready was acknowledged for


def _posted_text(state, goal_state):
    return "%s %s" % (state.vm_id, goal_state.incarnation)


def unit_name(step):
    return "azure-firstboot-%s.service" % step


def why_not_ready(ctx):
    """Ready only when it is true: one reason per step of
    REQUIRED_BEFORE_READY that did not finish successfully in this boot.
    A step that started and left no result (crashed, killed, or could not
    record) counts as failed; so does one that is enabled (its unit is
    pulled in at boot and the configuration does not disable it) but left
    no record at all.  A step the admin disabled does not count."""
    state = ctx.state
    reasons = []
    for step in REQUIRED_BEFORE_READY:
        entry = state.outcome(step)
        if entry and entry.get("result") == "started":
            entry = _after_running(ctx, step, entry)
        result = entry.get("result") if entry else None
        if result in ("ok", "skipped"):
            continue
        if result == "failed":
            reasons.append("%s: %s" % (step, entry.get("reason") or "failed"))
        elif entry is not None:
            reasons.append("%s: started but did not finish (crashed or killed)" % step)
        elif ctx.config.get((step, "enabled"), True) and units.unit_enabled(ctx.paths, unit_name(step)):
            why = "enabled but left no result in this boot"
            net = state.outcome("network-wait")
            if net and net.get("result") != "ok":
                why += " (network-wait: %s)" % (net.get("reason") or net.get("result"))
            reasons.append("%s: %s" % (step, why))
    if state.problem:
        reasons.append("%s: %s" % (STEP, state.problem))
    marker = ctx.paths.state("provisioned")
    if os.path.isdir(marker):  # a rename cannot replace it: Ready would not be remembered
        reasons.append("%s: cannot write the marker: %s is a directory" % (STEP, marker))
    return reasons


def _after_running(ctx, step, entry):
    """A step recorded "started": if a run of it still holds its lock (run
    by hand while the units run), wait for it (bounded) and read again; a
    free lock means the run that started is gone (crashed or killed)."""
    from azure_firstboot import state as st

    fd = st.hold_lock(st.step_lock_path(ctx.paths, step), True, st.STEP_LOCK_WAIT)
    if fd is None:
        return entry
    os.close(fd)
    return ctx.state.outcome(step)


def _finish(state, result, **details):
    """Record report-ready's result; a failure to do so is logged (the
    WireServer already has the report).  Returns False when not recorded."""
    try:
        state.record(STEP, result, **details)
        return True
    except OSError as exc:
        log.error("%s" % (exc.strerror or exc))
        return False


def encoded_report(ctx, failure, limit=None):
    """The encoded report ``result=...|reason=...|agent=...|vm_id=...|
    timestamp=...`` (kvp.encode_report): the KVP record's value and, cut to
    ``limit`` characters, a failure health report's Description."""
    from azure_firstboot import kvp, state

    return kvp.encode_report("error" if failure else "success", azure_vm_id(ctx),
                             state.now_iso(), __version__, failure, limit or kvp.MAX_VALUE)


def azure_vm_id(ctx):
    """This VM's id as Azure reports it: IMDS compute.vmId as the hostname
    step recorded it in this boot, else the SMBIOS id in Gen1 or Gen2 byte
    order (protocol.azure_vm_id)."""
    hostname = ctx.state.outcome("hostname") or {}
    return protocol.azure_vm_id(ctx.state.vm_id, identity.firmware_is_uefi(ctx.paths),
                                hostname.get("imds_vm_id"))


def _kvp_report(ctx, failure):
    """The PROVISIONING_REPORT record in the Hyper-V KVP pool (if there is one)."""
    from azure_firstboot import kvp

    value = encoded_report(ctx, failure)
    problem = kvp.write_report(ctx.paths, value)
    if problem:
        log.warning("KVP report not written: %s" % problem)


def run(ctx):
    state = ctx.state
    # One deadline from the start: finding the endpoint may read lease files.
    deadline = transport.Deadline(ctx.config[("provisioning", "deadline")])
    reasons = why_not_ready(ctx)
    broken = ctx.config_failure()  # a broken configuration is never Ready
    if broken:
        reasons = [broken] + [r for r in reasons if "configuration: " not in r]
    failure = "; ".join(reasons) if reasons else None
    host, port, source = netstack.recorded_endpoint(
        ctx.state, ctx.config[("wireserver", "endpoint")], ctx.paths, deadline)
    what = "Ready" if failure is None else "NotReady/ProvisioningFailed"
    log.info("reporting %s to the WireServer at %s:%d (%s)" % (what, host, port, source))
    started = time.monotonic()
    if failure is not None:
        _kvp_report(ctx, failure)  # at once: the host shows it even if the WireServer is unreachable
    try:
        description = None if failure is None else encoded_report(ctx, failure, protocol.DESCRIPTION_MAX)
        goal_state = report(host, port, deadline, description, lambda: _kvp_report(ctx, failure),
                            lambda gs: state.boot_flag(READY_POSTED) == _posted_text(state, gs))
    except (transport.DeadlineExceeded, transport.TransportError, protocol.ProtocolError) as exc:
        reason = "could not report %s: %s" % (what, exc)
        _kvp_report(ctx, failure or reason)
        log.error(reason)
        _finish(state, "failed", reason=reason, endpoint="%s:%d" % (host, port))
        return 1
    details = dict(endpoint="%s:%d" % (host, port), incarnation=goal_state.incarnation,
                   container_id=goal_state.container_id, instance_id=goal_state.instance_id,
                   reported=what, seconds=round(time.monotonic() - started, 3))
    if failure is not None:
        log.error("reported ProvisioningFailed (incarnation %s): %s" % (goal_state.incarnation, failure))
        _finish(state, "failed", reason="reported ProvisioningFailed: " + failure, **details)
        return 1
    try:  # Ready at most once per incarnation: a run after a failed marker sees this
        state.set_boot_flag(READY_POSTED, _posted_text(state, goal_state))
    except OSError as exc:
        log.warning("cannot record that Ready was posted: %s" % describe(exc))
    try:
        state.mark_provisioned(goal_state.incarnation)
    except OSError as exc:
        reason = ("Ready was acknowledged for incarnation %s, but the marker could not be written: "
                  "%s; this VM is not marked provisioned and will report Ready again at its next "
                  "boot" % (goal_state.incarnation, describe(exc)))
        log.error(reason)
        _finish(state, "failed", reason=reason, **details)
        return 1
    ok = _finish(state, "ok", **details)
    log.info("Ready acknowledged for incarnation %s (container %s, instance %s) in %.1f s" % (
        goal_state.incarnation, goal_state.container_id, goal_state.instance_id,
        time.monotonic() - started))
    return 0 if ok else 1
