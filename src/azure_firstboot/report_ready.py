"""Unit 3, report-ready: goal state -> Health document -> WireServer.

Ready when provisioning went well, NotReady/ProvisioningFailed with the
reason when a step failed.  The "provisioned" marker is written only after
the WireServer acknowledged Ready.  On 410 Gone (the goal state changed
under us) a fresh goal state is fetched and the report rebuilt.

Path: this file -> protocol (parse, build) -> transport (system.recorded_endpoint: the
WireServer network-wait reached).
"""

import os
import time

from azure_firstboot import __version__, log, protocol, system, transport
from azure_firstboot.state import REQUIRED_BEFORE_READY, describe

STEP = "report-ready"
OK = (200, 201, 202)
GOAL_STATE_TRIES = 6
# every 4xx/5xx is retried; 400 and 410 go back to report() for a fresh goal state
HEALTH_RETRY = transport.ERROR_STATUSES - frozenset((400, 410))


def _headers():
    return [("x-ms-version", protocol.WIRE_PROTOCOL_VERSION),
            ("x-ms-agent-name", "azure-firstboot/" + __version__)]


def fetch_goal_state(host, port, deadline):
    """The current goal state with a RoleInstance.  Every 4xx/5xx is retried
    by the transport until the deadline (backoff, Retry-After, jitter, at
    least transport.MIN_INTERVAL apart); a document that is unusable or has
    no RoleInstance is fetched again (spaced the same way), up to
    GOAL_STATE_TRIES times."""
    problem = None
    for attempt in range(1, GOAL_STATE_TRIES + 1):
        if attempt > 1:
            log.info("goal state: %s; fetching again (%d/%d)" % (problem, attempt, GOAL_STATE_TRIES))
            transport.note_failure(host, port)
        try:
            response = transport.call(host, port, "GET", protocol.GOAL_STATE_PATH, "goal state",
                                      deadline, headers=_headers(),
                                      retry_statuses=transport.ERROR_STATUSES)
        except transport.DeadlineExceeded as exc:
            if problem is None or exc.last:
                raise
            raise transport.DeadlineExceeded("goal state: %s; no time left to fetch it again" % problem,
                                             problem)
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


def report(host, port, deadline, failure, before_post=None):
    """Post the health report until the WireServer accepts it; returns the
    goal state it was built from.

    Every 4xx/5xx answer is retried until the deadline.  400 (WALinuxAgent
    reads 400 InvalidContainerConfiguration as a stale goal state) and 410
    Gone (the goal state changed under us) fetch a fresh goal state and post
    a report rebuilt from it; the transport keeps these rounds at least
    transport.MIN_INTERVAL apart per request, and when the deadline ends
    them the error names the last answer."""
    began = time.monotonic()
    rounds = 0
    last = None
    while True:
        try:
            goal_state = fetch_goal_state(host, port, deadline)
            body = protocol.health_document(goal_state, failure)
            if before_post is not None:
                before_post()  # the KVP record: the host reads it when the report arrives
            response = transport.call(
                host, port, "POST", protocol.HEALTH_PATH, "health report", deadline,
                headers=_headers() + [("Content-Type", "text/xml;charset=utf-8")], body=body,
                retry_statuses=HEALTH_RETRY)
        except transport.DeadlineExceeded as exc:
            if last is None or exc.last:
                raise
            # time ran out between rounds: say what the WireServer last answered
            raise transport.DeadlineExceeded("health report: gave up after %d reports in %.0f s; last answer %s" % (
                rounds, time.monotonic() - began, last), last)
        rounds += 1
        if response.status in OK:
            return goal_state
        detail = protocol.parse_error_body(response.body)
        last = "HTTP %d %s%s" % (response.status, response.reason, " (%s)" % detail if detail else "")
        if response.status in (400, 410):
            log.info("health report for incarnation %s %s: %s; fetching a fresh goal state" % (
                goal_state.incarnation, "is stale" if response.status == 410 else "refused", last))
            continue
        raise protocol.ProtocolError("WireServer refused the health report: %s" % last)


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
        result = entry.get("result") if entry else None
        if result in ("ok", "skipped"):
            continue
        if result == "failed":
            reasons.append("%s: %s" % (step, entry.get("reason") or "failed"))
        elif entry is not None:
            reasons.append("%s: started but did not finish (crashed or killed)" % step)
        elif ctx.config.get((step, "enabled"), True) and system.unit_enabled(ctx.paths, unit_name(step)):
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


def _finish(state, result, **details):
    """Record report-ready's result; a failure to do so is logged (the
    WireServer already has the report).  Returns False when not recorded."""
    try:
        state.record(STEP, result, **details)
        return True
    except OSError as exc:
        log.error("%s" % (exc.strerror or exc))
        return False


def _kvp_report(ctx, failure):
    """The PROVISIONING_REPORT record in the Hyper-V KVP pool (if there is one)."""
    from azure_firstboot import kvp, state

    value = kvp.encode_report("error" if failure else "success", ctx.state.vm_id,
                              state.now_iso(), __version__, failure)
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
    host, port, source = system.recorded_endpoint(
        ctx.state, ctx.config[("wireserver", "endpoint")], ctx.paths, deadline)
    what = "Ready" if failure is None else "NotReady/ProvisioningFailed"
    log.info("reporting %s to the WireServer at %s:%d (%s)" % (what, host, port, source))
    started = time.monotonic()
    if failure is not None:
        _kvp_report(ctx, failure)  # at once: the host shows it even if the WireServer is unreachable
    try:
        goal_state = report(host, port, deadline, failure, lambda: _kvp_report(ctx, failure))
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
