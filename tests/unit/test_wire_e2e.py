"""Issue 8 (network side), issue 11 items 4-5 and issue 18 item 5 with the
real CLI over loopback against the emulator: request storms are bounded by
the deadline and the per-endpoint minimum interval, transient 4xx/5xx on the
goal state and the health POST are retried, 400/410 fetch the goal state
again with a growing delay, statuses no agent retries (401, 405...) end the
report at once, the failure Description is the encoded report, and each
input that used to end in a traceback now gives one clear line and a
recorded failure."""

import time

import os

import pytest

from fabric_emulator import Fabric
from test_agent_e2e import Machine, assert_ok, ready_reports

from azure_firstboot import transport

STATE = "var/lib/azure-firstboot"


def result(m, step="report-ready"):
    return m.read("%s/%s.result" % (STATE, step))


def goal_state_requests(fab):
    return [r for r in fab.requests("wireserver") if "goalstate" in r["path"]]


def health_posts(fab):
    return [r for r in fab.requests("wireserver") if r["method"] == "POST"]


def report_ready(m):
    """report-ready alone (the endpoint is configured; no other step ran in
    this boot, so Ready depends on the WireServer only): one process, not three."""
    return m.agent("report-ready")


def assert_one_clean_error_line(proc, fragment):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and lines[0].isprintable(), lines


# ------------------------------------------------------------------- storms

def test_503_retry_after_0_forever_is_not_a_storm(tmp_path):
    """It drew 9,000-18,000 goal state requests in 6 s."""
    deadline = 4
    with Fabric({"goalstate_forever": [503, {"Retry-After": "0"}]}).start() as fab:
        m = Machine(tmp_path, fab, provisioning__deadline=str(deadline))
        rr = report_ready(m)
        requests = goal_state_requests(fab)
        assert 2 <= len(requests) <= deadline / transport.MIN_INTERVAL + 2, len(requests)
        times = [r["t"] for r in requests]
        assert all(b - a >= 0.8 * transport.MIN_INTERVAL for a, b in zip(times, times[1:]))
        assert_one_clean_error_line(rr, "last answer HTTP 503 Service Unavailable")
        assert "gave up after %d attempts" % len(requests) in rr.stderr
        assert "result=failed" in result(m) and "HTTP 503" in result(m)
        assert fab.health_reports() == []


def test_health_410_forever_is_bounded_and_named(tmp_path):
    """It drew 6,000-7,600 GET+POST pairs in 6 s, and the error did not say 410."""
    deadline = 4
    with Fabric({"health_forever": 410}).start() as fab:
        m = Machine(tmp_path, fab, provisioning__deadline=str(deadline))
        rr = report_ready(m)
        requests = fab.requests("wireserver")
        assert len(health_posts(fab)) >= 1
        assert len(requests) <= deadline / transport.MIN_INTERVAL + 2, len(requests)
        assert_one_clean_error_line(rr, "last answer HTTP 410")
        assert "ResourceNotAvailable" in rr.stderr
        assert "410" in result(m) and "result=failed" in result(m)
        assert not os.path.exists(m.path(STATE + "/provisioned"))


# ------------------------------------------------------- retry rules (issue 11)

def test_health_403_is_retried_until_accepted(tmp_path):
    with Fabric({"health_statuses": [403, 403, 403]}).start() as fab:
        m = Machine(tmp_path, fab)
        rr = report_ready(m)
        assert_ok([rr])
        posts = health_posts(fab)
        assert [p["status"] for p in posts] == [403, 403, 403, 200]
        times = [p["t"] for p in posts]
        assert all(b - a >= 0.8 * transport.MIN_INTERVAL for a, b in zip(times, times[1:]))
        assert len(ready_reports(fab)) == 1
        assert "HTTP 403" in rr.stdout


@pytest.mark.parametrize("status", [400, 404, 507])
def test_every_goal_state_error_status_is_retried(tmp_path, status):
    with Fabric({"goalstate_statuses": [status]}).start() as fab:
        m = Machine(tmp_path, fab)
        assert_ok([report_ready(m)])
        assert [r["status"] for r in goal_state_requests(fab)] == [status, 200]
        assert len(ready_reports(fab)) == 1


def test_400_invalid_container_configuration_refetches_the_goal_state(tmp_path):
    with Fabric({"health_invalid_container": 1}).start() as fab:
        first = dict(fab.goal_state_ids())
        m = Machine(tmp_path, fab)
        rr = report_ready(m)
        assert_ok([rr])
        assert [p["status"] for p in health_posts(fab)] == [400, 200]
        assert len(goal_state_requests(fab)) == 2
        ready = ready_reports(fab)
        ids = fab.goal_state_ids()
        assert len(ready) == 1 and ready[0]["container_id"] == ids["container_id"] != first["container_id"]
        assert str(ready[0]["incarnation"]) == "2"
        assert "InvalidContainerConfiguration" in rr.stdout


# ------------------------------------------------ retry rules (issue 18 item 5)

@pytest.mark.parametrize("key, status", [
    ("health_forever", 401), ("health_forever", 405), ("goalstate_forever", 401),
    ("goalstate_forever", 405), ("health_forever", 413)])
def test_status_no_agent_retries_ends_the_report_at_once(tmp_path, key, status):
    """401 and 405 were retried for the whole deadline (20 minutes on Azure)."""
    with Fabric({key: status}).start() as fab:
        m = Machine(tmp_path, fab, provisioning__deadline="60")
        began = time.monotonic()
        rr = report_ready(m)
        assert time.monotonic() - began < 10
        what = "health report" if key == "health_forever" else "goal state request"
        assert_one_clean_error_line(rr, "the WireServer answered the %s with HTTP %d" % (what, status))
        assert "which no agent retries" in rr.stderr
        posts = health_posts(fab)
        assert len(posts) == (1 if key == "health_forever" else 0)
        assert len(goal_state_requests(fab)) == 1
        assert "result=failed" in result(m) and "HTTP %d" % status in result(m)
        assert not os.path.exists(m.path(STATE + "/provisioned"))


def test_permanent_400_is_reposted_with_growing_delay_within_the_deadline(tmp_path):
    """A permanent 400 drew a fresh goal state and a re-post about once a second."""
    deadline = 12
    with Fabric({"health_forever": 400}).start() as fab:
        m = Machine(tmp_path, fab, provisioning__deadline=str(deadline))
        began = time.monotonic()
        rr = report_ready(m)
        took = time.monotonic() - began
        assert_one_clean_error_line(rr, "last answer HTTP 400")
        times = [p["t"] for p in health_posts(fab)]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert 3 <= len(times) <= 5, times
        assert all(b > a + 0.5 for a, b in zip(gaps, gaps[1:])), gaps  # each wait longer
        assert took < deadline + 2  # the round that no longer fits is not waited for
        assert "fetching a fresh goal state in 2 s" in rr.stdout
        assert "result=failed" in result(m)


def test_failure_description_is_the_encoded_report(tmp_path):
    """As cloud-init and azure-init send it: result=error|reason=...|agent=...|vm_id=...|timestamp=...,
    at most 512 characters (the cut: test_kvp.py)."""
    with Fabric({"computer_name": "a_b"}).start() as fab:
        m = Machine(tmp_path, fab)
        rr = m.boot()[2]
        assert rr.returncode == 1
        reports = fab.health_reports()
        assert len(reports) == 1 and reports[0]["substatus"] == "ProvisioningFailed"
        description, fields = reports[0]["description"], reports[0]["fields"]
        assert len(description) <= 512 and description.startswith("result=error|reason=hostname: ")
        assert list(fields) == ["result", "reason", "agent", "vm_id", "timestamp", "documentation_url"]
        assert fields["reason"].startswith("hostname: ") and len(fields["vm_id"]) == 36
        assert fields["agent"].startswith("azure-firstboot/")
        assert fields["documentation_url"] == "https://aka.ms/linuxprovisioningerror"


def test_interim_100_continue_is_not_the_answer(tmp_path):
    with Fabric({"ws_interim": 5}).start() as fab:
        m = Machine(tmp_path, fab)
        assert_ok([report_ready(m)])
        assert len(ready_reports(fab)) == 1


def test_retry_after_with_non_ascii_digits_is_ignored(tmp_path):
    with Fabric({"goalstate_statuses": [[503, {"Retry-After": "\u00b2"}]]}).start() as fab:
        m = Machine(tmp_path, fab)
        assert_ok([report_ready(m)])
        assert len(ready_reports(fab)) == 1


def test_error_body_in_utf7_is_no_traceback(tmp_path):
    body = '<?xml version="1.0" encoding="utf-7"?><Error><Code>X</Code></Error>'
    with Fabric({"health_statuses": [[400, {}, body], [410, {}, body]]}).start() as fab:
        m = Machine(tmp_path, fab)
        assert_ok([report_ready(m)])
        assert len(ready_reports(fab)) == 1


# ------------------------------------------- tracebacks become one clear line

@pytest.mark.parametrize("scenario, fragment", [
    ({"goalstate_body": "utf7_encoding"}, "encoding that cannot be read"),
    ({"goalstate_body": "unknown_encoding"}, "encoding that cannot be read"),
    ({"goalstate_body": "superscript_incarnation"}, "incarnation is not a number"),
    ({"goalstate_body": "c1_container_id"}, "container id has unexpected characters"),
    ({"goalstate_body": "deeply_nested"}, "malformed XML"),
    ({"ws_raw_forever": "HTTP/1.1 2\u00b20 OK\r\nContent-Length: 0\r\n\r\n"}, "malformed status line"),
    ({"ws_raw_forever": "HTTP/1.1 " + "2" * 5000 + " OK\r\n\r\n"}, "malformed status line"),
    ({"ws_raw_forever": "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc"}, "malformed Content-Length"),
    ({"ws_raw_forever": "HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\nabc"}, "malformed Content-Length"),
    ({"ws_raw_forever": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nabcde\r\n0\r\n\r\n"},
     "malformed chunk size"),
])
def test_hostile_wireserver_answers(tmp_path, scenario, fragment):
    with Fabric(scenario).start() as fab:
        m = Machine(tmp_path, fab, provisioning__deadline="2")
        rr = report_ready(m)
        assert_one_clean_error_line(rr, fragment)
        assert "result=failed" in result(m)
        assert fab.health_reports() == []
        assert not os.path.exists(m.path(STATE + "/provisioned"))


@pytest.mark.parametrize("scenario, fragment", [
    ({"imds_body": "deeply_nested"}, "nested deeper than"),
    ({"imds_body": "huge_number"}, "number longer than"),
    ({"computer_name": "10.0.0.5"}, "last label is all digits"),
    ({"imds_raw_responses": ["HTTP/1.1 2\u00b20 OK\r\n\r\n"] * 100}, "malformed status line"),
])
def test_hostile_imds_answers_report_provisioning_failed(tmp_path, scenario, fragment):
    with Fabric(scenario).start() as fab:
        m = Machine(tmp_path, fab, imds__timeout="2")
        net, host, rr = m.boot()
        assert net.returncode == 0
        assert_one_clean_error_line(host, fragment)
        assert "result=failed" in result(m, "hostname")
        reports = fab.health_reports()
        assert [r["state"] for r in reports] == ["NotReady"] and fragment in reports[0]["description"]
        assert m.read("etc/hostname") == "localhost\n"


def test_network_data_cannot_forge_log_lines(tmp_path):
    """C1 controls (NEL, CSI) are allowed in XML 1.0; they reach our messages only escaped."""
    body = ("<Error><Code>Forbidden</Code><Message>no&#x85;error: forged&#x9b;2J&#x2028;x</Message>"
            "</Error>")
    with Fabric({"health_forever": [410, {}, body]}).start() as fab:
        m = Machine(tmp_path, fab, provisioning__deadline="2")
        rr = report_ready(m)
        assert_one_clean_error_line(rr, "HTTP 410")
        for char in ("\x85", "\x9b", "\u2028", "\x1b", "\r"):
            assert char not in rr.stderr and char not in rr.stdout
            assert char not in result(m)


def test_impossible_lease_date_is_an_expired_lease(tmp_path):
    """`expire 4 2030/00/10` was a ValueError from calendar.timegm in network-wait."""
    if os.geteuid() != 0:
        pytest.skip("binding port 80 needs root")
    address = "127.10.11.14"
    try:
        fab = Fabric(host=address, wireserver_port=80).start()
    except OSError as exc:
        pytest.skip("cannot bind %s:80: %s" % (address, exc))
    try:
        m = Machine(tmp_path, fab, wireserver__endpoint="auto")
        m.write("var/lib/dhcp/dhclient.eth0.leases",
                "lease {\n  option unknown-245 7f:a:b:e;\n  expire never;\n}\n"
                "lease {\n  option unknown-245 7f:0:0:1;\n  expire 4 2030/00/10 10:00:00;\n}\n"
                "lease {\n" * 1000)
        procs = m.boot()
        assert_ok(procs)
        assert "%s:80 (DHCP option 245)" % address in procs[0].stdout
        assert len(ready_reports(fab)) == 1
    finally:
        fab.stop()
