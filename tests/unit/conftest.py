"""Put tests/ (fabric_emulator) and src/ (azure_firstboot) on sys.path, and
load the project's Hypothesis profile.

Profile "ci" (the default): derandomized (the same examples on every run),
no example database, no per-example deadline (a loaded 2-core machine must
not make a property flaky), 150 examples per property unless a test asks for
fewer.  HYPOTHESIS_PROFILE=thorough runs 2,000 random examples per property
for a manual fuzzing session.  Property tests import hypothesis themselves,
so a missing test dependency (.ci/requirements.txt) fails loudly there.

And the network guard (below): the whole run happens in a private network
namespace with only loopback, and fails when anything tried another address.
"""
import os
import sys

_TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for _p in (os.path.join(_TOP, "src"), os.path.join(_TOP, "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - the property suites fail on import instead
    pass
else:
    settings.register_profile(
        "ci", max_examples=150, deadline=None, derandomize=True, database=None,
        print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile(
        "thorough", max_examples=2000, deadline=None, derandomize=False, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# ---------------------------------------------------------------------------
# Network guard: every test in tests/unit, and every process a test starts (the
# agent, the emulator, helpers), runs in a private network namespace that has
# only loopback.  Nothing a test does can reach 168.63.129.16, 169.254.169.254
# or any other address of the machine's real network: such a connect fails at
# once with ENETUNREACH.  It also cannot pass unnoticed: the kernel counts every
# packet that found no route (Ip OutNoRoutes, Ip6OutNoRoutes, per namespace);
# the session fails when the count is not zero at its end.  A test that means
# to try an unreachable address does so in a namespace of its own (unshare -n,
# as test_netlink.py and test_netguard.py do), whose counters are its own.
#
# Nobody has to remember this: a pytest run that loads this conftest outside
# such a namespace re-executes pytest inside a fresh one (unshare -n, loopback up).

NETNS_FLAG = "AZURE_FIRSTBOOT_TEST_NETNS"


def no_route_counts():
    """(IPv4 OutNoRoutes, IPv6 Ip6OutNoRoutes) of this process's namespace."""
    v4 = v6 = 0
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Ip:")]
    if len(rows) >= 2:
        v4 = int(dict(zip(rows[0], rows[1])).get("OutNoRoutes", 0))
    try:
        with open("/proc/net/snmp6") as f:
            for line in f:
                words = line.split()
                if words and words[0] == "Ip6OutNoRoutes":
                    v6 = int(words[1])
    except OSError:  # no IPv6 in this kernel
        pass
    return v4, v6


def _interfaces():
    # this process's namespace (/sys/class/net shows the namespace sysfs was mounted in)
    import socket
    return sorted(name for _, name in socket.if_nameindex())


def _enter_private_netns(config):
    if os.environ.get(NETNS_FLAG) == "1":
        if _interfaces() != ["lo"]:
            sys.exit("tests/unit: %s=1 but this network namespace has %s, not only lo"
                     % (NETNS_FLAG, ", ".join(_interfaces())))
        return
    runner = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "netns-run")
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:  # give the new pytest the real stdout/stderr back
        capture.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(runner, [runner, sys.executable, "-m", "pytest"] + sys.argv[1:])
    except OSError as exc:
        sys.exit("tests/unit must run in a private network namespace: %s: %s" % (runner, exc))


_NO_ROUTE_AT_START = None


def pytest_configure(config):
    global _NO_ROUTE_AT_START
    _enter_private_netns(config)
    _NO_ROUTE_AT_START = no_route_counts()


def pytest_sessionfinish(session, exitstatus):
    v4, v6 = [b - a for a, b in zip(_NO_ROUTE_AT_START, no_route_counts())]
    if v4 or v6:
        session.config._azfb_netguard = (v4, v6)
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counts = getattr(config, "_azfb_netguard", None)
    if counts:
        terminalreporter.write_line(
            "NETWORK GUARD: %d IPv4 and %d IPv6 packet(s) of this test run were addressed "
            "outside loopback (kernel OutNoRoutes counters of the test namespace): a test or "
            "the agent tried a real address; the run fails" % counts, red=True)
