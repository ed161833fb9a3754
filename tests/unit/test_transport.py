"""The HTTP transport against raw loopback servers that misbehave on purpose."""

import socket
import threading
import time

import pytest

from azure_firstboot import transport as t


class RawServer(object):
    """Accepts connections and answers each with the next scripted reply:
    bytes to send then close, None to close without a word, or a callable."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.replies:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            reply = self.replies.pop(0)
            data = b""
            conn.settimeout(2)
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        size = int(line.split(b":")[1])
                        while len(body) < size:
                            body += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + body)
                if callable(reply):
                    reply(conn)
                elif reply is not None:
                    conn.sendall(reply)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self):
        self.sock.close()


def ok(body, extra=b""):
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_content_length_body_and_request_shape(monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # must be ignored
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    srv = RawServer([ok(b"hello")])
    resp = t.request("127.0.0.1", srv.port, "POST", "/machine?comp=health",
                     [("x-ms-version", "2012-11-30")], b"<Health/>", timeout=5)
    assert (resp.status, resp.body) == (200, b"hello")
    sent = srv.requests[0]
    assert sent.startswith(b"POST /machine?comp=health HTTP/1.1\r\n")
    assert b"\r\nx-ms-version: 2012-11-30\r\n" in sent and b"Content-Length: 9\r\n" in sent
    assert sent.endswith(b"<Health/>")


def test_chunked_and_close_delimited():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
    srv = RawServer([chunked, b"HTTP/1.0 200 OK\r\n\r\nuntil close"])
    assert t.request("127.0.0.1", srv.port, "GET", "/", timeout=5).body == b"abcde"
    assert t.request("127.0.0.1", srv.port, "GET", "/", timeout=5).body == b"until close"


@pytest.mark.parametrize("reply, message", [
    (None, "without a response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "closed after 3 of 10"),
    (b"garbage\r\n\r\n", "malformed status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n", "larger than"),
    (b"HTTP/1.1 200 OK\r\nContent-Len", "before a complete response"),
])
def test_broken_responses(reply, message):
    srv = RawServer([reply])
    with pytest.raises(t.TransportError, match=message):
        t.request("127.0.0.1", srv.port, "GET", "/", timeout=5)


def test_oversized_close_delimited_body_is_capped():
    def flood(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
        try:
            for _ in range(64):
                conn.sendall(b"x" * 65536)
        except OSError:
            pass

    srv = RawServer([flood])
    with pytest.raises(t.BodyTooLarge):
        t.request("127.0.0.1", srv.port, "GET", "/", timeout=5, max_body=100000)


def test_timeout_on_silent_server():
    srv = RawServer([lambda conn: time.sleep(1.5)])
    started = time.monotonic()
    with pytest.raises(t.TransportError, match="timed out"):
        t.request("127.0.0.1", srv.port, "GET", "/", timeout=0.3)
    assert time.monotonic() - started < 1.4


def test_refused_connection():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(t.TransportError, match="cannot connect"):
        t.request("127.0.0.1", port, "GET", "/", timeout=1)
    assert not t.can_connect("127.0.0.1", port, 0.5)


def test_call_retries_then_returns_final_status():
    srv = RawServer([None, b"HTTP/1.1 503 Busy\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n",
                     b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", ok(b"done")])
    waits = []
    resp = t.call("127.0.0.1", srv.port, "GET", "/", "test", t.Deadline(30), sleep=waits.append)
    assert resp.body == b"done" and len(srv.requests) == 4
    # connection drop: backoff 0.3 s with jitter; 503 Retry-After: 0; 500: doubled backoff
    assert 0.15 <= waits[0] <= 0.3 and waits[1] == 0 and 0.3 <= waits[2] <= 0.6


def test_call_returns_non_retry_status_at_once():
    srv = RawServer([b"HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n"])
    resp = t.call("127.0.0.1", srv.port, "GET", "/", "test", t.Deadline(30), sleep=lambda s: None)
    assert resp.status == 410


def test_call_honours_deadline():
    srv = RawServer([b"HTTP/1.1 503 Busy\r\nRetry-After: 100\r\nContent-Length: 0\r\n\r\n"])
    with pytest.raises(t.DeadlineExceeded, match="gave up after 1 attempts: HTTP 503"):
        t.call("127.0.0.1", srv.port, "GET", "/", "test", t.Deadline(5), sleep=lambda s: None)


def test_call_spaces_requests_by_min_interval():
    srv = RawServer([b"HTTP/1.1 429 Slow\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n", ok(b"")])
    waits = []
    t.call("127.0.0.1", srv.port, "GET", "/", "test", t.Deadline(30), min_interval=0.2, sleep=waits.append)
    assert 0.1 < waits[0] <= 0.2
