"""The network guard of conftest.py: the run is in a namespace with only
loopback, and a try at any other address is counted (so the run fails)."""
import os
import socket
import subprocess
import sys

import conftest  # tests/unit/conftest.py: the guard itself

HERE = os.path.dirname(os.path.abspath(__file__))

TRY_REAL_ADDRESSES = r"""
import socket, subprocess, sys
subprocess.check_call(["ip", "link", "set", "lo", "up"])
sys.path.insert(0, %(here)r)
import conftest  # tests/unit/conftest.py: the guard itself
before = conftest.no_route_counts()
for family, address in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((address, 80))
    except OSError as exc:
        print("refused", address, exc.errno)
    s.close()
after = conftest.no_route_counts()
print("delta", after[0] - before[0], after[1] - before[1])
"""


def test_the_run_is_in_a_private_namespace_with_only_loopback():
    assert os.environ.get(conftest.NETNS_FLAG) == "1"
    assert sorted(name for _, name in socket.if_nameindex()) == ["lo"]
    # loopback works (the emulator lives there) ...
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=5)
    client.close()
    server.close()


def test_a_try_at_a_real_address_fails_at_once_and_is_counted():
    # In a namespace of its own (its counters are not this run's): TEST-NET
    # addresses, which lead nowhere even outside.
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", TRY_REAL_ADDRESSES % {"here": HERE}],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert "refused 192.0.2.1 %d" % 101 in lines, proc.stdout  # ENETUNREACH, no wait
    assert "refused 2001:db8::1 %d" % 101 in lines, proc.stdout
    assert lines[-1] == "delta 1 1", proc.stdout
