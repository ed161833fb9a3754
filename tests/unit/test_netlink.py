"""netlink.py (address/route wake-ups) and network-wait started before the network
exists: run in a private network namespace (unshare -n), where only loopback exists
and starts down, so nothing on the host's network is touched."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from azure_firstboot import netlink

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AZURE_TAG = "7783-7084-3265-9085-8269-3286-77"
VM_ID = "5c9f1c56-64f7-4d55-9a0b-6c2f0e8b7a31"


def nlmsg(kind, body):
    length = 16 + len(body)
    head = length.to_bytes(4, sys.byteorder) + kind.to_bytes(2, sys.byteorder) + bytes(10)
    return head + body + bytes((4 - length % 4) % 4)


def test_parse_address_route_and_link_messages():
    addr = bytes((2, 24, 0, 0)) + (7).to_bytes(4, sys.byteorder)
    route = bytes((2, 0, 0, 0, 254, 3, 0, 1)) + bytes(4)
    link = bytes((0, 0)) + (1).to_bytes(2, sys.byteorder) + (3).to_bytes(4, sys.byteorder) + bytes(8)
    data = nlmsg(netlink.RTM_NEWADDR, addr) + nlmsg(netlink.RTM_DELROUTE, route) + nlmsg(netlink.RTM_NEWLINK, link)
    assert netlink.parse(data) == [(netlink.RTM_NEWADDR, 2, 7), (netlink.RTM_DELROUTE, 2, 0),
                                   (netlink.RTM_NEWLINK, 0, 3)]


@pytest.mark.parametrize("data", [b"", b"\x01" * 15, nlmsg(3, b""),  # NLMSG_DONE
                                  (9999).to_bytes(4, sys.byteorder) + bytes(12),  # length past the end
                                  nlmsg(netlink.RTM_NEWADDR, b"\x02")])  # short body
def test_parse_skips_what_it_does_not_know(data):
    assert netlink.parse(data) == []


def test_watcher_times_out_quietly():
    with netlink.Watcher() as watcher:
        if watcher.sock is None:
            pytest.skip("no netlink here: %s" % watcher.problem)
        assert isinstance(watcher.wait(0.01), list)


def _netns_problem():
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare and ip"
    probe = subprocess.run(["unshare", "-n", "true"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if probe.returncode != 0:
        return "cannot make a network namespace: %s" % probe.stdout.decode(errors="replace").strip()
    return None


SCRIPT = textwrap.dedent("""
    import os, socket, subprocess, sys, time
    sys.path.insert(0, %(src)r)
    from azure_firstboot import netlink
    root, config = %(root)r, %(config)r
    with netlink.Watcher() as watcher:
        agent = subprocess.Popen([sys.executable, "-m", "azure_firstboot", "--config", config,
                                  "--root", root, "network-wait"], env=dict(os.environ, PYTHONPATH=%(src)r),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(1.5)  # the agent waits on netlink: loopback is down, connects fail at once
        subprocess.check_call(["ip", "link", "set", "lo", "up"])
        events = watcher.wait(2.0)
    server = socket.socket()
    server.bind(("127.0.0.1", 8080))
    server.listen(5)
    out = agent.communicate(timeout=30)[0].decode()
    print("EVENTS %%r" %% (events,))
    print("RC %%d" %% agent.returncode)
    print(out)
""")


def test_network_wait_sleeps_until_the_network_comes_up(tmp_path):
    """network-wait started before any address exists: no error, woken by netlink
    when loopback comes up, done once the listener accepts; few attempts (no busy poll)."""
    problem = _netns_problem()
    if problem:
        pytest.skip(problem)
    root = tmp_path / "root"
    for rel, text in (("sys/class/dmi/id/chassis_asset_tag", AZURE_TAG + "\n"),
                      ("sys/class/dmi/id/product_uuid", VM_ID + "\n"),
                      ("proc/sys/kernel/random/boot_id", "11111111-0000-4000-8000-000000000001\n")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    config = tmp_path / "agent.conf"
    config.write_text("[wireserver]\nendpoint = 127.0.0.1:8080\n[provisioning]\nnetwork_timeout = 20\n")
    script = SCRIPT % {"src": os.path.join(TOP, "src"), "root": str(root), "config": str(config)}
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", script], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
    out = proc.stdout
    assert proc.returncode == 0, out
    assert "RC 0" in out and "WireServer 127.0.0.1:8080 reachable after" in out, out
    assert "EVENTS [" in out and "(%d, 2, 1)" % netlink.RTM_NEWADDR in out, out  # 127.0.0.1 on lo
    record = (root / "var/lib/azure-firstboot").glob("*")
    text = "".join(p.read_text() for p in record if p.is_file())
    attempts = int(text.split("attempts=")[1].split()[0])
    # before lo is up every connect fails at once (ENETUNREACH): the agent then sleeps
    # on netlink (1 s safety net), so a handful of attempts, never a busy loop
    assert 2 <= attempts <= 12, text


PENDING = textwrap.dedent("""
    import subprocess, sys, threading, time
    sys.path.insert(0, %(src)r)
    from azure_firstboot import netlink
    subprocess.check_call(["ip", "link", "set", "lo", "up"])
    # a link route without an answer: the SYN goes out and nothing ever comes back
    subprocess.check_call(["ip", "route", "add", "192.0.2.1/32", "dev", "lo", "scope", "link"])
    with netlink.Watcher() as watcher:
        threading.Timer(0.5, subprocess.check_call, [["ip", "addr", "add", "10.9.9.9/32", "dev", "lo"]]).start()
        error = watcher.connect("192.0.2.1", 80, 20.0)
        print("ERROR %%s %%s" %% (type(error).__name__, error))
        print("EVENTS %%r" %% (watcher.wait(0),))
""")


def test_a_pending_connect_is_abandoned_when_an_address_appears():
    """With a link route but no address Linux sends the SYN from 0.0.0.0 and no answer
    ever comes: the attempt must end when the address appears, not at its timeout."""
    problem = _netns_problem()
    if problem:
        pytest.skip(problem)
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", PENDING % {"src": os.path.join(TOP, "src")}],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
    assert proc.returncode == 0, proc.stdout
    assert "ERROR Changed" in proc.stdout, proc.stdout
    assert "(%d, 2, 1)" % netlink.RTM_NEWADDR in proc.stdout, proc.stdout
