"""The one HTTP transport: HTTP/1.1 over a plain socket, to IP literals.

Why not http.client: importing it pulls in email and ssl, ~0.5 s in a
TCG-booted VM, for a client that only ever needs one request per connection
to a fixed address.  This module owns everything that can go wrong on the
wire: per-request timeouts, one overall deadline, retries with exponential
backoff and jitter, Retry-After, a response size cap, and "never use a
proxy" (there is no proxy support to switch off: the socket goes straight to
the address it is given, whatever http_proxy says).  It uses the C module
``_socket`` directly: ``socket.py`` would add selectors, enum and functools
to every unit's start-up for conveniences not needed here.
"""

import _socket
import os
import time

from azure_firstboot import __version__, log

MAX_BODY = 1024 * 1024
MAX_HEADER = 64 * 1024
USER_AGENT = "azure-firstboot/" + __version__
RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))


class TransportError(Exception):
    """One request failed before a complete HTTP response arrived."""


class BodyTooLarge(TransportError):
    """The response is larger than the cap: not worth asking again."""


class DeadlineExceeded(Exception):
    """Retries ran out of time; the message says what was tried last."""


class Deadline(object):
    """A point in monotonic time that several calls share."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def remaining(self):
        return self.end - time.monotonic()


class Response(object):
    __slots__ = ("status", "reason", "headers", "body")

    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body


def connect(host, port, timeout):
    """A connected TCP socket (with ``timeout`` set), or OSError."""
    error = None
    # bytes, not str: a str host is run through the "idna" codec, whose import
    # (encodings.idna, stringprep, unicodedata) costs more than the rest of a unit
    for family, kind, proto, _, address in _socket.getaddrinfo(
            host.encode("ascii"), port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError("no address for %s" % host)


def _recv(sock, end):
    left = end - time.monotonic()
    if left <= 0:
        raise TransportError("timed out waiting for the response")
    sock.settimeout(left)
    try:
        return sock.recv(65536)
    except _socket.timeout:
        raise TransportError("timed out waiting for the response")


def _read_exact(sock, buf, size, end):
    while len(buf) < size:
        chunk = _recv(sock, end)
        if not chunk:
            raise TransportError("connection closed after %d of %d body bytes" % (len(buf), size))
        buf += chunk
    return buf


def _dechunk(sock, buf, end, max_body):
    body = bytearray()
    while True:
        while b"\r\n" not in buf:
            if len(buf) > 1024:
                raise TransportError("malformed chunked body")
            chunk = _recv(sock, end)
            if not chunk:
                raise TransportError("connection closed inside a chunked body")
            buf += chunk
        line, _, buf = bytes(buf).partition(b"\r\n")
        buf = bytearray(buf)
        try:
            size = int(line.split(b";")[0].strip() or b"x", 16)
        except ValueError:
            raise TransportError("malformed chunk size %r" % line[:20])
        if size == 0:
            return bytes(body)
        if len(body) + size > max_body:
            raise BodyTooLarge("response body larger than %d bytes" % max_body)
        buf = _read_exact(sock, buf, size + 2, end)
        body += buf[:size]
        buf = buf[size + 2:]


def request(host, port, method, path, headers=(), body=b"", timeout=10.0, max_body=MAX_BODY):
    """Send one request and return the Response; TransportError otherwise."""
    end = time.monotonic() + timeout
    lines = ["%s %s HTTP/1.1" % (method, path),
             "Host: %s" % (host if port == 80 else "%s:%d" % (host, port)),
             "User-Agent: " + USER_AGENT, "Connection: close"]
    lines.extend("%s: %s" % pair for pair in headers)
    if body or method in ("POST", "PUT"):
        lines.append("Content-Length: %d" % len(body))
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    try:
        sock = connect(host, port, max(0.05, timeout))
    except _socket.timeout:
        raise TransportError("timed out connecting to %s:%d" % (host, port))
    except OSError as exc:
        raise TransportError("cannot connect to %s:%d: %s" % (host, port, exc.strerror or exc))
    try:
        sock.sendall(data)
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            if len(buf) > MAX_HEADER:
                raise TransportError("response header larger than %d bytes" % MAX_HEADER)
            chunk = _recv(sock, end)
            if not chunk:
                raise TransportError("connection closed before a complete response"
                                     if buf else "connection closed without a response")
            buf += chunk
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        status_line, _, header_block = head.decode("latin-1").partition("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise TransportError("malformed status line %r" % status_line[:60])
        status, reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
        fields = {}
        for line in header_block.split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        rest = bytearray(rest)
        if fields.get("transfer-encoding", "").lower() == "chunked":
            payload = _dechunk(sock, rest, end, max_body)
        elif "content-length" in fields:
            try:
                size = int(fields["content-length"])
            except ValueError:
                raise TransportError("malformed Content-Length %r" % fields["content-length"][:20])
            if size > max_body:
                raise BodyTooLarge("response body of %d bytes is larger than %d" % (size, max_body))
            payload = bytes(_read_exact(sock, rest, size, end)[:size])
        else:
            while True:
                if len(rest) > max_body:
                    raise BodyTooLarge("response body larger than %d bytes" % max_body)
                chunk = _recv(sock, end)
                if not chunk:
                    break
                rest += chunk
            payload = bytes(rest)
        return Response(status, reason, fields, payload)
    except OSError as exc:
        if isinstance(exc, _socket.timeout):
            raise TransportError("timed out talking to %s:%d" % (host, port))
        raise TransportError("connection to %s:%d failed: %s" % (host, port, exc.strerror or exc))
    finally:
        sock.close()


def _jitter():
    return int.from_bytes(os.urandom(2), "big") / 65535.0


def _retry_after(headers):
    value = headers.get("retry-after", "")
    if value.isdigit():
        return min(float(value), 120.0)
    return None


def call(host, port, method, path, what, deadline, headers=(), body=b"",
         retry_statuses=RETRY_STATUSES, request_timeout=15.0, min_interval=0.0,
         first_delay=0.3, max_delay=5.0, sleep=time.sleep):
    """Send a request until it yields a status outside ``retry_statuses``.

    Connection errors, timeouts and the retry statuses are retried with
    exponential backoff (``first_delay`` doubling up to ``max_delay``, with
    jitter between 50 and 100 %), or after Retry-After when the server says
    so, as long as ``deadline`` allows.  An oversized response is not retried
    (TransportError).  ``min_interval`` spaces request
    starts (IMDS allows 5 requests a second).  Returns the final Response;
    raises DeadlineExceeded when time runs out.
    """
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        started = time.monotonic()
        left = deadline.remaining()
        if left <= 0:
            raise DeadlineExceeded("%s: no time left for attempt %d" % (what, attempt))
        try:
            response = request(host, port, method, path, headers, body, min(request_timeout, left))
        except BodyTooLarge as exc:
            raise TransportError("%s: %s" % (what, exc))
        except TransportError as exc:
            problem, wait = str(exc), None
        else:
            if response.status not in retry_statuses:
                if attempt > 1:
                    log.info("%s: HTTP %d after %d attempts" % (what, response.status, attempt))
                return response
            problem, wait = "HTTP %d %s" % (response.status, response.reason), _retry_after(response.headers)
        if wait is None:
            wait = delay * (0.5 + 0.5 * _jitter())
            delay = min(delay * 2, max_delay)
        wait = max(wait, min_interval - (time.monotonic() - started))
        if wait >= deadline.remaining():
            raise DeadlineExceeded("%s: gave up after %d attempts: %s" % (what, attempt, problem))
        log.info("%s: %s; retrying in %.1f s" % (what, problem, wait))
        sleep(wait)


def can_connect(host, port, timeout):
    """True when a TCP connection to host:port is accepted within timeout."""
    try:
        sock = connect(host, port, timeout)
    except OSError:
        return False
    sock.close()
    return True
