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
    resp = t.call("127.0.0.1", srv.port, "GET", "/", "test", t.Deadline(30), min_interval=0,
                  sleep=waits.append)
    assert resp.body == b"done" and len(srv.requests) == 4
    # connection drop: backoff 0.3 s with jitter; 503 Retry-After: 0 (no wait); 500: doubled backoff
    assert len(waits) == 2 and 0.15 <= waits[0] <= 0.3 and 0.3 <= waits[1] <= 0.6


def test_min_interval_holds_whatever_retry_after_says():
    busy = b"HTTP/1.1 503 Busy\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n"
    srv = RawServer([busy, busy, ok(b"done"), ok(b"again")])
    waits = []
    resp = t.call("127.0.0.1", srv.port, "GET", "/", "test", t.Deadline(30), sleep=waits.append)
    assert resp.body == b"done" and len(waits) == 2
    assert all(0.8 < w <= t.MIN_INTERVAL for w in waits)
    # the endpoint failed once: a later call to it is spaced too, even a first attempt
    resp = t.call("127.0.0.1", srv.port, "GET", "/", "test", t.Deadline(30), sleep=waits.append)
    assert resp.body == b"again" and len(waits) == 3 and 0.8 < waits[2] <= t.MIN_INTERVAL


def test_call_returns_non_retry_status_at_once():
    srv = RawServer([b"HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n"])
    resp = t.call("127.0.0.1", srv.port, "GET", "/", "test", t.Deadline(30), sleep=lambda s: None)
    assert resp.status == 410


def test_call_honours_deadline():
    srv = RawServer([b"HTTP/1.1 503 Busy\r\nRetry-After: 100\r\nContent-Length: 0\r\n\r\n"])
    with pytest.raises(t.DeadlineExceeded, match="gave up after 1 attempt in 0 s; last answer HTTP 503 Busy"):
        t.call("127.0.0.1", srv.port, "GET", "/", "test", t.Deadline(5), sleep=lambda s: None)


def test_call_spaces_requests_by_min_interval():
    srv = RawServer([b"HTTP/1.1 429 Slow\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n", ok(b"")])
    waits = []
    t.call("127.0.0.1", srv.port, "GET", "/", "test", t.Deadline(30), min_interval=0.2, sleep=waits.append)
    assert 0.1 < waits[0] <= 0.2


# ------------------------------------------- the one number parser (issue 8)

def feed(data, size=7):
    """A recv() handing out ``data`` ``size`` bytes at a time."""
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    return lambda: pieces.pop(0) if pieces else b""


@pytest.mark.parametrize("value", ["-1", "+5", "1_0", " 5", "5 ", "0x5", "²", "٣", "1" * 5000, ""])
def test_parse_number_is_ascii_digits_only(value):
    with pytest.raises(t.TransportError, match="malformed Content-Length"):
        t.parse_number(value, "Content-Length", 18)


@pytest.mark.parametrize("head, message", [
    (b"HTTP/1.1 2\xc2\xb20 OK", "malformed status line"),
    (b"HTTP/1.1 " + b"2" * 5000 + b" OK", "malformed status line"),
    (b"HTTP/1.1 099 Low", "malformed status line"),
    (b"HTTP/1.1 600 High", "malformed status line"),
    (b"HTTP/2 200 OK", "malformed status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\n folded: x", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2", "conflicting content-length"),
])
def test_parse_head_rejects(head, message):
    with pytest.raises(t.TransportError, match=message):
        t.parse_head(head)


def test_parse_head_reason_is_printable():
    status, reason, fields = t.parse_head(b"HTTP/1.1 200 O\x1b[2JK\x85\r\nX-A:  b \r\nContent-Length: 0")
    assert (status, reason, fields) == (200, "O?[2JK?", {"x-a": "b", "content-length": "0"})


@pytest.mark.parametrize("length", [b"-1", b"+3", b"1_0", b"3 3", b"\xc2\xb3", b"9" * 5000])
def test_content_length_must_be_plain_digits(length):
    with pytest.raises(t.TransportError, match="malformed Content-Length"):
        t.read_response(feed(b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\nabcdefghij"))


def test_interim_responses_are_skipped():
    data = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
            b"HTTP/1.1 503 Busy\r\nContent-Length: 2\r\n\r\nno")
    resp = t.read_response(feed(data, 5))
    assert (resp.status, resp.reason, resp.body) == (503, "Busy", b"no")
    with pytest.raises(t.TransportError, match="interim"):
        t.read_response(feed(b"HTTP/1.1 100 Continue\r\n\r\n" * 20))
    with pytest.raises(t.TransportError, match="101"):
        t.read_response(feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"))


@pytest.mark.parametrize("body, message", [
    (b"-1\r\nx\r\n0\r\n\r\n", "malformed chunk size"),
    (b"0x3\r\nabc\r\n0\r\n\r\n", "malformed chunk size"),
    (b"1_0\r\n", "malformed chunk size"),
    (b"\xc2\xb3\r\nabc\r\n0\r\n\r\n", "malformed chunk size"),
    (b"123456789\r\n", "malformed chunk size"),
    (b"3\r\nabcX\r\n0\r\n\r\n", "no CRLF after a chunk"),
    (b"3\r\nab", "inside a chunk"),
    (b"3" * 300, "chunk-size line too long"),
])
def test_chunked_framing_is_strict(body, message):
    with pytest.raises(t.TransportError, match=message):
        t.read_response(feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body))


def test_many_tiny_chunks_are_linear():
    body = b"1\r\nx\r\n" * 150000 + b"0\r\n\r\n"
    resp = t.read_response(feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body, 65536))
    assert resp.body == b"x" * 150000


@pytest.mark.parametrize("value, expected", [("5", 5), ("0", 0), ("²", None), ("-1", None), ("1.5", None),
                                             ("Wed, 21 Oct 2015 07:28:00 GMT", None), ("99999", 120),
                                             ("1" * 5000, None)])
def test_retry_after(value, expected):
    assert t.retry_after({"retry-after": value}) == expected


def test_loopback_100_continue_then_answer():
    srv = RawServer([b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final")])
    resp = t.request("127.0.0.1", srv.port, "GET", "/", timeout=5)
    assert (resp.status, resp.body) == (200, b"final")


def test_call_final_error_names_the_last_status():
    gone = b"HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n"
    srv = RawServer([gone] * 3)
    clock = []
    with pytest.raises(t.DeadlineExceeded, match=r"gave up after 3 attempts in \d+ s; last answer HTTP 410 Gone"):
        t.call("127.0.0.1", srv.port, "GET", "/", "test", t.Deadline(2.5), retry_statuses=t.ERROR_STATUSES,
               sleep=lambda s: (clock.append(s), time.sleep(s)))
    assert len(srv.requests) == 3 and all(0.5 < s <= 1.0 for s in clock)
