"""Property-based tests of every wire parser and writer (Hypothesis, profile
"ci" from conftest.py: derandomized, fixed budget), plus the regression
corpus of issue 8.

Properties: a parser raises nothing but its documented error type
(ProtocolError, TransportError, or None/'' where documented); what we write
is always well-formed and parses back; the pathological inputs of issue 8
finish (1 MB each, under a 10 s alarm; they took 33-160 s before).
"""

import calendar
import json
import re
import signal
import socket
import threading
from contextlib import contextmanager

import pytest
from hypothesis import given, settings, strategies as st

from azure_firstboot import log, protocol as p, transport as t

# ------------------------------------------------------------------ helpers


@contextmanager
def alarm(seconds=10):
    """Fail (not hang) when the block takes longer than ``seconds``: a
    generous bound for 1 MB inputs that finish in well under a second."""
    def expired(*_):
        raise AssertionError("took longer than %d s" % seconds)

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def feed(data, sizes):
    """A recv() handing out ``data`` in pieces of the given sizes (cycled)."""
    pieces, i, k = [], 0, 0
    while i < len(data):
        size = max(1, sizes[k % len(sizes)]) if sizes else len(data)
        pieces.append(data[i:i + size])
        i, k = i + size, k + 1
    pieces.reverse()
    return lambda: pieces.pop() if pieces else b""


IPV4 = st.binary(min_size=4, max_size=4)
ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=200)
NASTY = st.sampled_from(["\r", "\n", "\x1b", "\x85", "\x9b", "\u2028", "\u2029", "\x00", "\x7f", "\ufeff",
                         "\u200e", "²", "٣", "¹", "\udcff", "<", "&", "]]>", '"', "'", "\t", "\\"])
MIXED_TEXT = st.lists(NASTY | st.text(max_size=5), max_size=30).map("".join)


def dotted(raw):
    return ".".join(str(b) for b in raw)


# --------------------------------------------------------------------- JSON

_JSON_SCALARS = (st.none() | st.booleans() | st.integers(-10 ** 30, 10 ** 30)
                 | st.floats(allow_nan=False, allow_infinity=False) | st.text())
JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30)


@given(JSON_VALUES, st.booleans())
def test_json_round_trips_what_json_writes(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only, indent=None if ascii_only else 1)
    assert p.parse_json(text.encode("utf-8")) == value


@given(st.binary(max_size=300) | st.text(alphabet='{}[]",:0123456789.eE+-\\u tfrnalsx\x00\ud800',
                                         max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_json_garbage_gives_protocol_error_or_what_json_gives(data):
    try:
        value = p.parse_json(data)
    except p.ProtocolError as exc:
        assert str(exc).isprintable()
        return
    assert value == json.loads(data.decode("utf-8"))


@given(st.integers(1, 5000), st.sampled_from("[{"))
def test_json_depth_is_a_protocol_error_never_recursion(depth, opener):
    doc = (opener + ('"k":' if opener == "{" else "")) * depth
    with pytest.raises(p.ProtocolError) as err:
        p.parse_json(doc)
    assert ("nested deeper" in str(err.value)) == (depth > p.JSON_MAX_DEPTH)


@given(JSON_VALUES)
def test_imds_compute_accepts_any_compute_object_and_nothing_else(value):
    doc = json.dumps({"compute": value}).encode()
    if isinstance(value, dict):
        assert p.parse_imds_compute(doc) == value
    else:
        with pytest.raises(p.ProtocolError, match="no compute object"):
            p.parse_imds_compute(doc)


@given(JSON_VALUES)
def test_imds_instance_never_raises_anything_else(name):
    doc = json.dumps({"compute": {"osProfile": {"computerName": name}, "vmId": name}}).encode()
    try:
        got, _ = p.parse_imds_instance(doc)
    except p.ProtocolError:
        assert not (isinstance(name, str) and name)
    else:
        assert got == name


# ---------------------------------------------------------------- goal state

def goal_state_xml(incarnation, container, instance, declaration=""):
    return ('%s<GoalState xmlns:xsi="x"><Version>2010-12-15</Version><Incarnation>%s</Incarnation>'
            "<Container><ContainerId>%s</ContainerId><RoleInstanceList><RoleInstance>"
            "<InstanceId>%s</InstanceId></RoleInstance></RoleInstanceList></Container></GoalState>" % (
                declaration, p.xml_escape(incarnation), p.xml_escape(container), p.xml_escape(instance)))


@given(st.text(max_size=12) | st.integers(0, 10 ** 12).map(str), MIXED_TEXT, MIXED_TEXT)
def test_goal_state_fields_are_valid_or_refused(incarnation, container, instance):
    doc = goal_state_xml(incarnation, container, instance).encode("utf-8", "surrogatepass")
    try:
        gs = p.parse_goal_state(doc)
    except p.ProtocolError as exc:
        assert str(exc).isprintable()
        return
    assert re.fullmatch("[0-9]{1,10}", gs.incarnation)
    for value in (gs.container_id, gs.instance_id or "x"):
        assert value.isprintable() and 0 < len(value) <= 1024
    assert gs.container_id == p.xml_valid_text(container).strip()   # as written


@given(st.binary(max_size=400))
def test_goal_state_arbitrary_bytes(data):
    try:
        p.parse_goal_state(data)
    except p.ProtocolError:
        pass


@given(st.integers(0, 600), st.binary(min_size=1, max_size=8),
       st.sampled_from(["", '<?xml version="1.0" encoding="utf-7"?>', '<?xml version="1.0" encoding="nope"?>',
                        '<?xml version="1.0" encoding="utf-16"?>', '<?xml version="1.0" encoding="UTF-32"?>',
                        '<?xml version="1.0" encoding="latin-1"?>', '<?xml version="1.0" encoding="cp500"?>',
                        '<?xml version="1.0" encoding="x-\u00b2"?>', '<!DOCTYPE x [<!ENTITY a "b">]>']))
def test_goal_state_damaged_documents(position, junk, declaration):
    doc = goal_state_xml("3", "c-1", "i-1", declaration).encode("utf-8")
    position = min(position, len(doc))
    for data in (doc, doc[:position] + junk + doc[position:], doc[:position]):
        try:
            gs = p.parse_goal_state(data)
        except p.ProtocolError:
            continue
        assert gs.incarnation.isdigit() and gs.container_id.isprintable()


@given(st.integers(0, 3000), st.integers(0, 3000))
def test_goal_state_nesting_is_only_a_protocol_error(depth_inside, depth_outside):
    doc = (b"<GoalState>" + b"<Container>" * depth_inside + b"</Container>" * depth_inside
           + b"<a>" * depth_outside + b"</a>" * depth_outside
           + b"<Incarnation>1</Incarnation><Container><ContainerId>c</ContainerId></Container></GoalState>")
    gs = p.parse_goal_state(doc)
    assert (gs.incarnation, gs.container_id) == ("1", "c")


@given(MIXED_TEXT, MIXED_TEXT)
def test_error_body_is_one_printable_line_or_empty(code, message):
    body = ("<Error><Code>%s</Code><Message>%s</Message></Error>" % (
        p.xml_escape(code), p.xml_escape(message))).encode("utf-8", "surrogatepass")
    text = p.parse_error_body(body)
    assert text == "" or (text.isprintable() and len(text) <= 200)


@given(st.binary(max_size=300))
def test_error_body_never_raises(data):
    assert p.parse_error_body(data).isprintable() or p.parse_error_body(data) == ""


# --------------------------------------------------------------- Health XML

def _health_fields(doc):
    return p._collect(doc, {
        ("Health", "GoalStateIncarnation"): "incarnation",
        ("Health", "Container", "ContainerId"): "container",
        ("Health", "Container", "RoleInstanceList", "Role", "InstanceId"): "instance",
        ("Health", "Container", "RoleInstanceList", "Role", "Health", "State"): "state",
        ("Health", "Container", "RoleInstanceList", "Role", "Health", "Details", "Description"): "desc",
    })


IDS = MIXED_TEXT.map(lambda s: "".join(c for c in s if c.isprintable()).strip() or "x")


@given(st.integers(0, 10 ** 10).map(str), IDS, IDS, st.none() | MIXED_TEXT | ANY_TEXT)
def test_health_document_is_well_formed_and_parses_back(incarnation, container, instance, failure):
    gs = p.GoalState(incarnation, container.strip(), instance.strip())
    doc = p.health_document(gs, failure)
    assert doc.decode("utf-8")                     # valid UTF-8
    fields = _health_fields(doc)                   # well-formed XML (expat)
    assert fields["incarnation"] == incarnation
    assert fields["container"] == gs.container_id and fields["instance"] == gs.instance_id
    if failure is None:
        assert fields["state"] == "Ready" and "desc" not in fields
    else:
        assert fields["state"] == "NotReady"
        desc = fields.get("desc", "")
        assert len(desc) <= p.DESCRIPTION_MAX and (desc == "" or desc.isprintable())


# ---------------------------------------------------------------- host names

_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def reference_hostname_ok(name):
    labels = name.split(".")
    return (len(name) <= 64 and all(_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit())


HOSTNAMEISH = st.text(alphabet="ab0189-._ \n\x85\u2028²Ü", max_size=70) | st.lists(
    st.integers(0, 300).map(str), min_size=1, max_size=5).map(".".join) | ANY_TEXT


@given(HOSTNAMEISH)
def test_hostname_rule(name):
    problem = p.hostname_problem(name)
    assert (problem is None) == reference_hostname_ok(name)
    assert problem is None or problem.isprintable()


# ------------------------------------------------------------ DHCP leases

def dhclient_escaped(raw):
    """How dhclient writes a non-printable option value: a quoted string."""
    out = []
    for b in bytearray(raw):
        if b in (0x22, 0x5C):
            out.append("\\" + chr(b))
        elif 32 <= b < 127:
            out.append(chr(b))
        else:
            out.append("\\%03o" % b)
    return '"%s"' % "".join(out)


EXPIRY = st.one_of(
    st.just("never"),
    st.tuples(st.integers(0, 6), st.integers(1990, 2100), st.integers(0, 13), st.integers(0, 32),
              st.integers(0, 25), st.integers(0, 61), st.integers(0, 61)).map(
        lambda t: "%d %04d/%02d/%02d %02d:%02d:%02d" % t),
    st.integers(0, 5 * 10 ** 9).map(lambda n: "epoch %d" % n),
    st.sampled_from(["4 2030/00/10 10:00:00", "4 2030/02/30 10:00:00", "x", "", "4 2030/1/1", "4 ²030/01/01 1:0:0"]),
)


def reference_expiry(text):
    if text == "never":
        return float("inf")
    m = re.fullmatch(r"epoch ([0-9]{1,12})", text)
    if m:
        return int(m.group(1))
    m = re.fullmatch(r"[0-9] ([0-9]{1,4})/([0-9]{1,4})/([0-9]{1,4}) ([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})", text)
    if not m:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups())
    if not 1 <= mo <= 12 or not 1 <= d <= calendar.monthrange(y, mo)[1] or h > 23 or mi > 59 or s > 60:
        return None
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))


@given(st.lists(st.tuples(IPV4, st.booleans(), EXPIRY), max_size=6), st.integers(0, 5 * 10 ** 9))
def test_dhclient_last_unexpired_lease_wins(leases, now):
    text, expected = "default-duid \"\\000\\001\";\n", None
    for raw, escaped, expiry in leases:
        value = dhclient_escaped(raw) if escaped else ":".join("%x" % b for b in bytearray(raw))
        text += 'lease {\n  interface "eth0";\n  option unknown-245 %s;\n  expire %s;\n}\n' % (value, expiry)
        when = reference_expiry(expiry)
        if when is not None and when > now:
            expected = dotted(raw)
    assert p.dhclient_option_245(text, now) == expected


LEASE_ALPHABET = 'lease{};"#\\ \n\toption unknown-245 expire never 0123456789/:abc'


@given(st.text(alphabet=LEASE_ALPHABET, max_size=400) | ANY_TEXT, st.integers(0, 2 ** 40))
def test_dhclient_garbage_never_raises(text, now):
    address = p.dhclient_option_245(text, now)
    assert address is None or re.fullmatch(r"(\d{1,3}\.){3}\d{1,3}", address)
    for lease in p.dhclient_leases(text):
        assert all(isinstance(v, list) for v in lease.values())


@given(IPV4, st.text(alphabet="ABCDEFabcdef0123456789 =\n_x²", max_size=40))
def test_networkd_and_networkmanager_key_value_leases(raw, noise):
    text = "# This is private data. Do not parse.\nADDRESS=10.0.0.4\nOPTION_245=%s\n" % raw.hex().upper()
    assert p.networkd_option_245(text) == dotted(raw)
    for garbage in (noise, "OPTION_245=" + noise):
        address = p.networkd_option_245(garbage)
        assert address is None or re.fullmatch(r"(\d{1,3}\.){3}\d{1,3}", address)
    # NetworkManager's internal client writes this key=value form too: the dhclient
    # reader finds no lease block in it, never an exception
    assert p.dhclient_option_245(text + noise, 0) is None


@given(IPV4)
def test_option_245_both_dhclient_forms(raw):
    assert p._decode_245(dhclient_escaped(raw)) == dotted(raw)
    assert p._decode_245(":".join("%x" % b for b in bytearray(raw))) == dotted(raw)


@given(st.text(max_size=30))
def test_option_245_garbage(value):
    address = p._decode_245(value)
    assert address is None or re.fullmatch(r"(\d{1,3}\.){3}\d{1,3}", address)


# --------------------------------------------------------- numbers and HTTP

@given(st.text(max_size=30) | st.integers(0, 10 ** 25).map(str))
def test_the_one_number_parser(text):
    value = p.wire_number(text, 18)
    assert value == (int(text) if re.fullmatch("[0-9]{1,18}", text, re.ASCII) else None)
    try:
        assert t.parse_number(text, "Content-Length", 18) == value
    except t.TransportError:
        assert value is None
    assert t.retry_after({"retry-after": text}) in (None, min(value or 0, t.RETRY_AFTER_MAX))


@given(st.binary(max_size=300))
def test_parse_head_arbitrary_bytes(head):
    try:
        status, reason, fields = t.parse_head(head)
    except t.TransportError as exc:
        assert str(exc).isprintable()
        return
    assert 100 <= status <= 599 and reason.isprintable() and len(reason) <= 80


HEADER_NAMES = st.sampled_from(["Content-Type", "X-Ms-Request-Id", "Retry-After", "Server", "Date"])


@given(st.integers(200, 599).filter(lambda s: s not in (204, 304)), st.binary(max_size=3000),
       st.sampled_from(["length", "chunked", "close"]), st.lists(st.integers(1, 700), min_size=1, max_size=8),
       st.lists(st.integers(1, 200), max_size=5), st.integers(0, 3),
       st.lists(st.tuples(HEADER_NAMES, st.text(alphabet="abc 123;=", max_size=10)), max_size=4))
def test_read_response_round_trip(status, body, framing, chunks, splits, interim, headers):
    head = b"HTTP/1.1 %d Some Reason\r\n" % status
    head += b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in headers)
    if framing == "length":
        data = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        data, i, k = head + b"Transfer-Encoding: chunked\r\n\r\n", 0, 0
        while i < len(body):
            piece = body[i:i + chunks[k % len(chunks)]]
            data += b"%x\r\n%s\r\n" % (len(piece), piece)
            i, k = i + len(piece), k + 1
        data += b"0\r\n\r\n"
    else:
        data = head + b"\r\n" + body
    data = b"HTTP/1.1 100 Continue\r\n\r\n" * interim + data
    resp = t.read_response(feed(data, splits))
    assert (resp.status, resp.reason, resp.body) == (status, "Some Reason", body)


@given(st.binary(max_size=600), st.lists(st.integers(1, 50), max_size=4))
def test_read_response_arbitrary_bytes(data, splits):
    for prefix in (b"", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                   b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n"):
        try:
            resp = t.read_response(feed(prefix + data, splits), max_body=1000)
        except t.TransportError as exc:
            assert str(exc).isprintable()
            continue
        assert len(resp.body) <= 1000 and 100 <= resp.status <= 599


@settings(max_examples=25)
@given(st.binary(max_size=2000), st.sampled_from(["length", "chunked", "close"]))
def test_loopback_bodies(body, framing):
    """The same parser behind a real socket: bodies arrive intact."""
    if framing == "length":
        reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
            b"%x\r\n%s\r\n" % (len(body[i:i + 333]), body[i:i + 333]) for i in range(0, len(body), 333)) + b"0\r\n\r\n"
    else:
        reply = b"HTTP/1.0 200 OK\r\n\r\n" + body
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            for i in range(0, len(reply), 97):
                conn.sendall(reply[i:i + 97])
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        resp = t.request("127.0.0.1", server.getsockname()[1], "GET", "/", timeout=5)
    finally:
        thread.join(5)
        server.close()
    assert resp.body == body


# -------------------------------------------------------------------- log

@given(ANY_TEXT | MIXED_TEXT)
def test_log_lines_are_one_printable_line(text):
    line = log.printable(text)
    assert line.isprintable() and "\n" not in line and "\r" not in line
    if text.isprintable():
        assert line == text


# ---------------------------------------------------- regression corpus

CORPUS = [
    # (what, function, input, expected: a value, or an exception type and message fragment)
    ("goal state utf-7", p.parse_goal_state,
     b'<?xml version="1.0" encoding="utf-7"?><GoalState><Incarnation>1</Incarnation></GoalState>',
     (p.ProtocolError, "encoding")),
    ("goal state unknown encoding", p.parse_goal_state,
     b'<?xml version="1.0" encoding="x-nope"?><GoalState/>', (p.ProtocolError, "encoding")),
    ("error body utf-7", p.parse_error_body,
     b'<?xml version="1.0" encoding="utf-7"?><Error><Code>X</Code></Error>', ""),
    ("incarnation superscript one", p.parse_goal_state,
     "<GoalState><Incarnation>\u00b9</Incarnation><Container><ContainerId>c</ContainerId></Container>"
     "</GoalState>".encode(), (p.ProtocolError, "not a number")),
    ("incarnation of 5000 digits", p.parse_goal_state,
     b"<GoalState><Incarnation>" + b"9" * 5000 + b"</Incarnation><Container><ContainerId>c</ContainerId>"
     b"</Container></GoalState>", (p.ProtocolError, "not a number")),
    ("C1 control in container id", p.parse_goal_state,
     "<GoalState><Incarnation>1</Incarnation><Container><ContainerId>a\u009b2Jb</ContainerId></Container>"
     "</GoalState>".encode(), (p.ProtocolError, "unexpected characters")),
    ("NEL in instance id", p.parse_goal_state,
     "<GoalState><Incarnation>1</Incarnation><Container><ContainerId>c</ContainerId><RoleInstanceList>"
     "<RoleInstance><InstanceId>i\u0085error: forged</InstanceId></RoleInstance></RoleInstanceList>"
     "</Container></GoalState>".encode(), (p.ProtocolError, "unexpected characters")),
    ("IMDS [ x 995", p.parse_imds_instance, b"[" * 995, (p.ProtocolError, "nested deeper")),
    ("IMDS { x 995", p.parse_imds_instance, b'{"a":' * 995, (p.ProtocolError, "nested deeper")),
    ("IMDS huge number", p.parse_imds_instance, b'{"compute": ' + b"9" * 5000 + b"}", (p.ProtocolError, "number")),
    ("impossible lease date", lambda text: p.dhclient_option_245(text, 0),
     "lease {\n option unknown-245 a:0:0:5;\n expire 4 2030/00/10 10:00:00;\n}\n", None),
    ("unparseable lease expiry", lambda text: p.dhclient_option_245(text, 0),
     "lease {\n option unknown-245 a:0:0:5;\n expire soon;\n}\n", None),
    ("dotted-decimal host name", p.hostname_problem, "10.0.0.5", (None, "all digits")),
    ("Content-Length -1", lambda h: t.read_response(feed(h, [])),
     b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc", (t.TransportError, "malformed Content-Length")),
    ("Content-Length +3", lambda h: t.read_response(feed(h, [])),
     b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc", (t.TransportError, "malformed Content-Length")),
    ("Content-Length 1_0", lambda h: t.read_response(feed(h, [])),
     b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\nabc", (t.TransportError, "malformed Content-Length")),
    ("status 2\u00b20", t.parse_head, "HTTP/1.1 2\u00b20 OK".encode(), (t.TransportError, "malformed status")),
    ("status of 5000 digits", t.parse_head, b"HTTP/1.1 " + b"2" * 5000 + b" OK",
     (t.TransportError, "malformed status")),
    ("Retry-After \u00b2", t.retry_after, {"retry-after": "\u00b2"}, None),
    ("100 Continue is not final", lambda h: t.read_response(feed(h, [])).status,
     b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n", 410),
    ("log line forging", log.printable, "ok\r\nerror: forged\x1b[2J\x85\u2028",
     "ok\\r\\nerror: forged\\x1b[2J\\x85\\u2028"),
]


@pytest.mark.parametrize("what, function, data, expected", CORPUS, ids=[c[0] for c in CORPUS])
def test_regression_corpus(what, function, data, expected):
    if isinstance(expected, tuple) and expected[0] is None:
        assert expected[1] in function(data)
    elif isinstance(expected, tuple):
        with pytest.raises(expected[0], match=expected[1]):
            function(data)
    else:
        assert function(data) == expected


MB = 1024 * 1024
PATHOLOGICAL = [
    ("goal state of 340,000 nested elements", lambda: p.parse_goal_state(
        b"<GoalState>" + b"<a>" * 150000 + b"</a>" * 150000 + b"<Incarnation>1</Incarnation><Container>"
        b"<ContainerId>c</ContainerId></Container></GoalState>")),
    ("goal state nested along a wanted path", lambda: p.parse_goal_state(
        b"<GoalState>" + b"<Container>" * 80000 + b"</Container>" * 80000 + b"</GoalState>")),
    ("unterminated lease blocks", lambda: p.dhclient_option_245("lease {\n" * (MB // 8), 0)),
    ("lease blocks without a closing brace", lambda: p.dhclient_option_245(
        "lease { option unknown-245 a:0:0:5; expire never;\n" * (MB // 50), 0)),
    ("lease of escaped quotes", lambda: p.dhclient_option_245('lease { x "' + '\\"' * (MB // 2), 0)),
    ("JSON of a million brackets", lambda: p.parse_json(b"[" * MB)),
    ("JSON string of escapes", lambda: p.parse_json(b'"' + b"\\n" * (MB // 2 - 1) + b'"')),
    ("JSON of many numbers", lambda: p.parse_json(b"[" + b"1," * (MB // 2 - 1) + b"1]")),
    ("one-byte chunks", lambda: t.read_response(feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                                     + b"1\r\nx\r\n" * (MB // 6), [65536]))),
    ("header of a million bytes", lambda: t.read_response(feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * MB, [1024]))),
]


@pytest.mark.parametrize("what, run", PATHOLOGICAL, ids=[c[0] for c in PATHOLOGICAL])
def test_pathological_inputs_finish(what, run):
    with alarm(10):
        try:
            run()
        except (p.ProtocolError, t.TransportError):
            pass


# what XML 1.0 cannot carry (its Char production), as a table built here independently
_NOT_XML_CHAR = dict.fromkeys([c for c in range(32) if c not in (9, 10, 13)] + [0xFFFE, 0xFFFF]
                              + list(range(0xD800, 0xE000)), "?")


@given(st.text() | MIXED_TEXT | st.sampled_from(["\ud7ff\ud800\udfff\ue000", "\ufffd\ufffe\uffff\U00010000"]))
def test_xml_valid_text_replaces_exactly_what_xml_cannot_carry(text):
    assert p.xml_valid_text(text) == text.translate(_NOT_XML_CHAR)
