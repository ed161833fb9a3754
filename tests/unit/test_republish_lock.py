"""The republish lock: the hostname step's DHCP restart (exclusive) and every
HTTP request of ours (shared) never overlap (state.hold_lock,
transport.guard_requests)."""

import os
import threading
import time

from azure_firstboot import state
from azure_firstboot import transport as t

from test_transport import RawServer, ok


def test_shared_holders_coexist_and_exclude_the_exclusive(tmp_path):
    path = str(tmp_path / "republish.lock")
    a = state.hold_lock(path, False, 0.0)
    b = state.hold_lock(path, False, 0.0)
    assert a is not None and b is not None
    began = time.monotonic()
    assert state.hold_lock(path, True, 0.2) is None  # bounded: gives up
    assert time.monotonic() - began >= 0.19
    os.close(a)
    os.close(b)
    c = state.hold_lock(path, True, 0.0)
    assert c is not None
    assert state.hold_lock(path, False, 0.05) is None
    os.close(c)


def test_not_a_regular_file_or_no_directory_means_no_lock(tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    assert state.hold_lock(fifo, True, 0.0) is None  # no blocking open, no lock
    os.symlink(str(tmp_path / "elsewhere"), str(tmp_path / "link"))
    assert state.hold_lock(str(tmp_path / "link"), True, 0.0) is None  # never followed
    assert not os.path.exists(str(tmp_path / "elsewhere"))
    assert state.hold_lock(str(tmp_path / "missing" / "x.lock"), False, 0.0) is None


def test_requests_wait_for_the_republish_and_then_go(tmp_path):
    path = str(tmp_path / "republish.lock")
    srv = RawServer([ok(b"one"), ok(b"two")])
    try:
        t.guard_requests(path)
        held = state.hold_lock(path, True, 0.0)  # the hostname step, restarting DHCP
        seen = []

        def release():
            time.sleep(0.5)
            seen.append(len(srv.requests))  # nothing reached the server meanwhile
            os.close(held)

        threading.Thread(target=release).start()
        began = time.monotonic()
        resp = t.call("127.0.0.1", srv.port, "GET", "/", "test", t.Deadline(10), min_interval=0)
        assert resp.body == b"one" and time.monotonic() - began >= 0.45 and seen == [0]
        # not held: no wait
        began = time.monotonic()
        assert t.call("127.0.0.1", srv.port, "GET", "/", "test", t.Deadline(10),
                      min_interval=0).body == b"two"
        assert time.monotonic() - began < 0.4
    finally:
        t.guard_requests(None)
        srv.close()


def test_the_restart_waits_for_a_request_in_flight(tmp_path):
    path = str(tmp_path / "republish.lock")
    reached = threading.Event()
    go = threading.Event()

    def slow(conn):
        reached.set()
        go.wait(5)
        conn.sendall(ok(b"late"))

    srv = RawServer([slow])
    result = []
    try:
        t.guard_requests(path)
        worker = threading.Thread(target=lambda: result.append(
            t.call("127.0.0.1", srv.port, "GET", "/", "test", t.Deadline(10), min_interval=0)))
        worker.start()
        assert reached.wait(5)
        assert state.hold_lock(path, True, 0.2) is None  # the request holds it
        go.set()
        worker.join(5)
        assert result and result[0].body == b"late"
        fd = state.hold_lock(path, True, 1.0)
        assert fd is not None
        os.close(fd)
    finally:
        t.guard_requests(None)
        srv.close()
