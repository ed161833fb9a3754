"""The one HTTP transport: HTTP/1.1 over a plain socket, to IP literals.

Why not http.client: importing it pulls in email and ssl, ~0.5 s in a
TCG-booted VM, for a client that only ever needs one request per connection
to a fixed address.  This module owns everything that can go wrong on the
wire: per-request timeouts, one overall deadline, retries with exponential
backoff and jitter, Retry-After, a minimum interval per endpoint once it has
failed, a response size cap, strict response parsing (a pure function of
the bytes; every number through protocol.wire_number; interim 1xx answers
skipped), and "never use a proxy" (there is no proxy support to switch off:
the socket goes straight to the address it is given, whatever http_proxy
says).  It uses the C module
``_socket`` directly: ``socket.py`` would add selectors, enum and functools
to every unit's start-up for conveniences not needed here.
"""

import _socket
import os
import time

from azure_firstboot import __version__, log, protocol

MAX_BODY = 1024 * 1024
MAX_HEADER = 64 * 1024
USER_AGENT = "azure-firstboot/" + __version__
RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))
# every client and server error: what the WireServer calls are retried on (issue 11)
ERROR_STATUSES = frozenset(range(400, 600))
# The least time between two requests to an endpoint once it has failed:
# WALinuxAgent waits a flat 1 s once throttled, cloud-init 1 s between tries.
MIN_INTERVAL = 1.0
RETRY_AFTER_MAX = 120


class TransportError(Exception):
    """One request failed before a complete HTTP response arrived."""


class BodyTooLarge(TransportError):
    """The response is larger than the cap: not worth asking again."""


class DeadlineExceeded(Exception):
    """Retries ran out of time; the message says what was tried last.
    ``last`` is the last answer or error seen (None: nothing was tried)."""

    def __init__(self, message, last=None):
        Exception.__init__(self, message)
        self.last = last


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


# ------------------------------------------------------------ numbers

def parse_number(text, what, digits=10, base=10):
    """protocol.wire_number (the one number parser for the wire: 1..``digits``
    ASCII digits, hex with ``base=16``, nothing else: no sign, '_', space or
    '²') for transport use: -> int; TransportError naming ``what`` otherwise."""
    value = protocol.wire_number(text, digits, base)
    if value is None:
        raw = text.encode("latin-1", "replace") if isinstance(text, str) else bytes(text)
        raise TransportError("malformed %s %s" % (what, _shown(raw)))
    return value


def _shown(raw, limit=20):
    """bytes -> a short printable quotation for messages."""
    text = "".join(chr(b) if 32 <= b < 127 and b not in (0x27, 0x5C) else "\\x%02x" % b
                   for b in bytearray(raw[:limit]))
    return "'%s'%s" % (text, "..." if len(raw) > limit else "")


# ------------------------------------------------------- response head

MAX_INTERIM = 8
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def parse_head(head):
    """One response head (bytes, without the blank line) -> (status, reason,
    {lower-case name: value}).  Pure; TransportError for anything that is not
    ``HTTP/1.0|1.1 SP 3DIGIT [SP reason]`` followed by ``name: value`` lines.

    The status is three ASCII digits, 100-599; the reason is kept printable
    ASCII ('?' for anything else), at most 80 characters.  A header repeated
    with different values is refused for Content-Length and Transfer-Encoding
    (the framing must be unambiguous); otherwise the last one wins."""
    lines = bytes(head).split(b"\r\n")
    status_line = lines[0]
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    status = protocol.wire_number(code, 3) if len(code) == 3 else None
    if version not in (b"HTTP/1.0", b"HTTP/1.1") or status is None or not 100 <= status <= 599:
        raise TransportError("malformed status line %s" % _shown(status_line, 60))
    reason = "".join(chr(b) if 32 <= b < 127 else "?" for b in bytearray(reason[:80])).strip()
    fields = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or not set(name) <= _TOKEN:
            raise TransportError("malformed header line %s" % _shown(line, 40))
        name = name.decode("ascii").lower()
        value = value.strip(b" \t").decode("latin-1")
        if name in ("content-length", "transfer-encoding") and fields.get(name, value) != value:
            raise TransportError("conflicting %s headers" % name)
        fields[name] = value
    return status, reason, fields


# ------------------------------------------------------- response body

class _Buffer(object):
    """Bytes from ``recv()`` (b'' at end of stream) with a read position;
    at most ``cap`` bytes are ever accepted from the peer."""

    def __init__(self, recv, cap):
        self.recv = recv
        self.cap = cap
        self.total = 0
        self.data = bytearray()
        self.pos = 0

    def fill(self):
        chunk = self.recv()
        if not chunk:
            return False
        self.total += len(chunk)
        if self.total > self.cap:
            raise BodyTooLarge("response larger than %d bytes" % self.cap)
        if self.pos > 65536:                       # keep memory bounded, copies amortized
            del self.data[:self.pos]
            self.pos = 0
        self.data += chunk
        return True

    def until(self, sep, limit, too_long, closed):
        """The bytes up to ``sep`` (excluded, at most ``limit``); moves past it."""
        scanned = 0
        while True:
            i = self.data.find(sep, self.pos + scanned)
            if i >= 0 and i - self.pos <= limit:
                line = bytes(self.data[self.pos:i])
                self.pos = i + len(sep)
                return line
            if len(self.data) - self.pos > limit + len(sep):
                raise TransportError(too_long)
            scanned = max(0, len(self.data) - self.pos - len(sep) + 1)
            if not self.fill():
                raise TransportError(closed)

    def take(self, size, closed):
        while len(self.data) - self.pos < size:
            if not self.fill():
                have = len(self.data) - self.pos
                raise TransportError(closed % have if "%d" in closed else closed)
        data = bytes(self.data[self.pos:self.pos + size])
        self.pos += size
        return data


def _dechunk(buf, max_body):
    body = bytearray()
    while True:
        line = buf.until(b"\r\n", 256, "malformed chunked body (chunk-size line too long)",
                         "connection closed inside a chunked body")
        size = parse_number(line.split(b";", 1)[0].strip(b" \t"), "chunk size", 8, 16)
        if size == 0:
            return bytes(body)
        if len(body) + size > max_body:
            raise BodyTooLarge("response body larger than %d bytes" % max_body)
        body += buf.take(size, "connection closed inside a chunk (%d bytes of it received)")
        if buf.take(2, "connection closed inside a chunked body") != b"\r\n":
            raise TransportError("malformed chunked body (no CRLF after a chunk)")


def read_response(recv, max_body=MAX_BODY):
    """Read one response through ``recv()`` (bytes per call, b'' at end of
    stream) -> Response.  Pure apart from ``recv``, so it is tested without
    sockets.  Interim 1xx responses (100 Continue, 102, 103) are skipped, at
    most MAX_INTERIM of them; 101 Switching Protocols is an error (nothing
    here asks to switch).  The body is framed by chunked encoding, else a
    strict Content-Length, else the end of the stream; 204 and 304 have none.
    TransportError (BodyTooLarge over ``max_body``) otherwise."""
    buf = _Buffer(recv, MAX_HEADER * (MAX_INTERIM + 1) + 2 * max_body + 65536)
    for _ in range(MAX_INTERIM + 1):
        if not buf.data and not buf.fill():
            raise TransportError("connection closed without a response")
        head = buf.until(b"\r\n\r\n", MAX_HEADER, "response header larger than %d bytes" % MAX_HEADER,
                         "connection closed before a complete response")
        status, reason, fields = parse_head(head)
        if status == 101:
            raise TransportError("unexpected HTTP 101 %s" % reason)
        if status >= 200:
            break
    else:
        raise TransportError("more than %d interim (1xx) responses" % MAX_INTERIM)
    coding = fields.get("transfer-encoding")
    if status in (204, 304):
        payload = b""
    elif coding is not None:
        if coding.lower() != "chunked":
            raise TransportError("unsupported Transfer-Encoding %s" % _shown(coding.encode("latin-1")))
        payload = _dechunk(buf, max_body)
    elif "content-length" in fields:
        size = parse_number(fields["content-length"], "Content-Length", 18)
        if size > max_body:
            raise BodyTooLarge("response body of %d bytes is larger than %d" % (size, max_body))
        payload = buf.take(size, "connection closed after %%d of %d body bytes" % size)
    else:
        while len(buf.data) - buf.pos <= max_body and buf.fill():
            pass
        if len(buf.data) - buf.pos > max_body:
            raise BodyTooLarge("response body larger than %d bytes" % max_body)
        payload = bytes(buf.data[buf.pos:])
    return Response(status, reason, fields, payload)


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

    def recv():
        left = end - time.monotonic()
        if left <= 0:
            raise TransportError("timed out waiting for the response")
        sock.settimeout(left)
        try:
            return sock.recv(65536)
        except _socket.timeout:
            raise TransportError("timed out waiting for the response")

    try:
        sock.sendall(data)
        return read_response(recv, max_body)
    except OSError as exc:
        if isinstance(exc, _socket.timeout):
            raise TransportError("timed out talking to %s:%d" % (host, port))
        raise TransportError("connection to %s:%d failed: %s" % (host, port, exc.strerror or exc))
    finally:
        sock.close()


# ------------------------------------------------------------- retries

def _jitter():
    return int.from_bytes(os.urandom(2), "big") / 65535.0


def retry_after(headers):
    """Retry-After in seconds (at most RETRY_AFTER_MAX), or None when absent
    or not plain ASCII digits (an HTTP-date, '²', '-1': all ignored)."""
    try:
        return min(parse_number(headers.get("retry-after", ""), "Retry-After", 10), RETRY_AFTER_MAX)
    except TransportError:
        return None


# (host, port) -> monotonic start of the last request, for every endpoint
# that has failed once in this process: from then on its requests are spaced
_spaced = {}
# (host, port) -> monotonic time before which no request to it starts (hold())
_held = {}


def _plural(n, word):
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


_republish_lock = None
REPUBLISH_BOUND = 60.0  # s: the longest a request waits for our own DHCP restart


def guard_requests(path):
    """From now on every request holds the flock ``path`` shared while it
    runs: the hostname step holds it exclusively while its DHCP restart may
    take the address away (state.REPUBLISH_LOCK), so no request of ours is
    cut off by our own restart.  Set by the command line on the host only."""
    global _republish_lock
    _republish_lock = path


def _guarded_request(host, port, method, path, headers, body, timeout):
    lock = None
    if _republish_lock is not None:
        from azure_firstboot import state

        lock = state.hold_lock(_republish_lock, False, min(REPUBLISH_BOUND, timeout))
    try:
        return request(host, port, method, path, headers, body, timeout)
    finally:
        if lock is not None:
            os.close(lock)


def call(host, port, method, path, what, deadline, headers=(), body=b"",
         retry_statuses=RETRY_STATUSES, request_timeout=15.0, min_interval=MIN_INTERVAL,
         first_delay=0.3, max_delay=5.0, sleep=time.sleep):
    """Send a request until it yields a status outside ``retry_statuses``.

    Connection errors, timeouts and the retry statuses are retried with
    exponential backoff (``first_delay`` doubling up to ``max_delay``, with
    jitter between 50 and 100 %), or after Retry-After (plus up to 10 %
    jitter) when the server says so, as long as ``deadline`` allows.  Once
    an endpoint has failed (no answer, or any status >= 400, retried or
    not), every later request to it in this process starts at least
    ``min_interval`` after the previous one, whatever Retry-After says: a
    server answering 503 + ``Retry-After: 0`` forever gets one request a
    second, not thousands.  An oversized response is not retried
    (TransportError).  Returns the final Response; raises DeadlineExceeded
    naming the attempts, the time and the last answer when time runs out.
    """
    key = (host, port)
    delay = first_delay
    made = 0
    wait = 0.0
    problem = None
    began = time.monotonic()

    def give_up():
        if problem is None:
            return DeadlineExceeded("%s: no time left for a request" % what)
        last = ("last answer " if problem.startswith("HTTP ") else "last error: ") + problem
        return DeadlineExceeded("%s: gave up after %s in %.0f s; %s" % (
            what, _plural(made, "attempt"), time.monotonic() - began, last), last)

    while True:
        if key in _spaced:
            wait = max(wait, _spaced[key] + min_interval - time.monotonic())
        if key in _held:
            wait = max(wait, _held[key] - time.monotonic())
        if wait > 0:
            if wait >= deadline.remaining():
                raise give_up()
            if problem is not None:
                log.info("%s: %s; retrying in %.1f s" % (what, problem, wait))
            sleep(wait)
        left = deadline.remaining()
        if left <= 0:
            raise give_up()
        started = time.monotonic()
        if key in _spaced:
            _spaced[key] = started
        made += 1
        try:
            response = _guarded_request(host, port, method, path, headers, body,
                                         min(request_timeout, left))
        except BodyTooLarge as exc:
            _spaced[key] = started
            raise TransportError("%s: %s" % (what, exc))
        except TransportError as exc:
            problem, wait = str(exc), None
        else:
            if response.status >= 400:
                _spaced[key] = started
            if response.status not in retry_statuses:
                if made > 1:
                    log.info("%s: HTTP %d after %s" % (what, response.status, _plural(made, "attempt")))
                return response
            problem = "HTTP %d %s" % (response.status, response.reason)
            wait = retry_after(response.headers)
            if wait is not None:
                wait += wait * 0.1 * _jitter()
        _spaced[key] = started
        if wait is None:
            wait = delay * (0.5 + 0.5 * _jitter())
            delay = min(delay * 2, max_delay)


def hold(host, port, seconds):
    """No request to host:port starts in the next ``seconds`` (a caller's
    backoff between rounds of requests, e.g. report-ready's growing delay
    between re-posts of a refused report); a call whose deadline ends
    before then raises DeadlineExceeded at once instead of waiting."""
    _held[(host, port)] = time.monotonic() + seconds


def note_failure(host, port):
    """Tell the transport that an answer from host:port was unusable even
    though its status was fine (e.g. a broken document): its later requests
    are spaced like after any other failure."""
    _spaced[(host, port)] = time.monotonic()


IMDS_RETRY = RETRY_STATUSES | frozenset((404, 410))


def imds_instance(endpoint, timeout):
    """The IMDS instance document (bytes) from ``endpoint`` ('host[:port]'),
    the one IMDS request of the hostname and user steps: ``Metadata: true``,
    at most 5 requests a second, 404/410 retried as well (IMDS answers them
    for a while after boot) until ``timeout`` seconds have passed.  Raises
    DeadlineExceeded, TransportError, or ImdsAnswer (a protocol.ProtocolError)
    for a final answer other than 200."""
    host, port = protocol.split_endpoint(endpoint)
    response = call(host, port, "GET", protocol.IMDS_INSTANCE_PATH, "IMDS instance metadata",
                    Deadline(timeout), headers=[("Metadata", "true")],
                    retry_statuses=IMDS_RETRY, min_interval=0.2)
    if response.status != 200:
        raise ImdsAnswer(response.status, response.reason)
    return response.body


class ImdsAnswer(protocol.ProtocolError):
    """IMDS gave a final answer other than 200; ``status`` is its code (400:
    an IMDS that does not know our api-version, as an older Azure Stack Hub)."""

    def __init__(self, status, reason):
        protocol.ProtocolError.__init__(self, "IMDS answered HTTP %d %s" % (status, reason))
        self.status = status


def can_connect(host, port, timeout):
    """True when a TCP connection to host:port is accepted within timeout."""
    try:
        sock = connect(host, port, timeout)
    except OSError:
        return False
    sock.close()
    return True
