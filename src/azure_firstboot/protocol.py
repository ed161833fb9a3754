"""The Azure protocol as pure functions: bytes and text in, values out.

Nothing here touches a socket, a file or the clock (callers pass ``now``),
so every rule of the wire format is tested without a network.
"""

AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
WIRESERVER_DEFAULT = "168.63.129.16"
IMDS_DEFAULT = "169.254.169.254"
WIRE_PROTOCOL_VERSION = "2012-11-30"
IMDS_API_VERSION = "2021-02-01"
GOAL_STATE_PATH = "/machine/?comp=goalstate"
HEALTH_PATH = "/machine?comp=health"
IMDS_INSTANCE_PATH = "/metadata/instance?api-version=" + IMDS_API_VERSION
DESCRIPTION_MAX = 512


class ProtocolError(Exception):
    """A document from the fabric (or a value in it) is unusable."""


# ---------------------------------------------------------------- XML input

_GOAL_STATE_FIELDS = {
    ("GoalState", "Incarnation"): "incarnation",
    ("GoalState", "Container", "ContainerId"): "container_id",
    ("GoalState", "Container", "RoleInstanceList", "RoleInstance", "InstanceId"): "instance_id",
}
_ERROR_FIELDS = {("Error", "Code"): "code", ("Error", "Message"): "message"}


def _refuse(*_args):
    raise ProtocolError("refusing XML with a DOCTYPE or entity declaration")


def _collect(data, fields, strip=True):
    """Return {name: text} of the first element at each path in ``fields``.

    Uses expat directly (cheap to import, no tree built).  Namespace prefixes
    are dropped, unknown elements, attributes, order and whitespace are
    ignored; DOCTYPE and entity declarations are refused outright.
    """
    from xml.parsers import expat

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    stack = []
    found = {}
    current = []

    def start(name, _attrs):
        stack.append(name.rpartition(":")[2])
        current.append([] if tuple(stack) in fields else None)

    def end(_name):
        key = tuple(stack)
        buf = current.pop()
        if buf is not None and fields[key] not in found:
            value = "".join(buf)
            found[fields[key]] = value.strip() if strip else value
        stack.pop()

    def text(chunk):
        if current and current[-1] is not None:
            current[-1].append(chunk)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise ProtocolError("malformed XML: %s" % exc)
    return found


# for other pure modules (accounts: ovf-env.xml)
xml_fields = _collect


class GoalState(object):
    __slots__ = ("incarnation", "container_id", "instance_id")

    def __init__(self, incarnation, container_id, instance_id):
        self.incarnation = incarnation
        self.container_id = container_id
        self.instance_id = instance_id

    def __repr__(self):
        return "GoalState(incarnation=%r, container_id=%r, instance_id=%r)" % (
            self.incarnation, self.container_id, self.instance_id)


_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def _id_ok(value):
    """Ids are echoed back (escaped) as they came; only refuse what cannot be
    an id at all: control characters, absurd lengths."""
    return 0 < len(value) <= 1024 and all(c >= " " and c != "\x7f" for c in value)


def parse_goal_state(data):
    """Goal state XML (bytes) -> GoalState.  ``instance_id`` is None when the
    document has no RoleInstance (the fabric sometimes sends that shape;
    the caller fetches again)."""
    found = _collect(data, _GOAL_STATE_FIELDS)
    for key in ("incarnation", "container_id"):
        if not found.get(key):
            raise ProtocolError("goal state has no %s" % key.replace("_", " "))
    if not found["incarnation"].isdigit():
        raise ProtocolError("goal state incarnation is not a number: %r" % found["incarnation"][:40])
    for key in ("container_id", "instance_id"):
        value = found.get(key)
        if value is not None and not _id_ok(value):
            raise ProtocolError("goal state %s has unexpected characters: %r" % (
                key.replace("_", " "), value[:80]))
    return GoalState(found["incarnation"], found["container_id"], found.get("instance_id") or None)


def parse_error_body(data):
    """A WireServer ``<Error>`` body -> short text, or '' when it is not one."""
    try:
        found = _collect(data, _ERROR_FIELDS)
    except ProtocolError:
        return ""
    return ": ".join(v for v in (found.get("code"), found.get("message")) if v)


# --------------------------------------------------------------- XML output

# characters XML 1.0 cannot carry, replaced by '?'
_XML_INVALID = dict.fromkeys([c for c in range(32) if c not in (9, 10, 13)] + [0xFFFE, 0xFFFF], "?")


def xml_escape(text):
    text = text.translate(_XML_INVALID)
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;"))


def health_document(goal_state, failure=None):
    """GoalState -> Health XML (bytes).  ``failure`` (a reason) turns the
    report into NotReady/ProvisioningFailed with the reason, cut to
    DESCRIPTION_MAX characters *before* escaping, as its Description."""
    if failure is None:
        health = "<State>Ready</State>"
    else:
        description = " ".join(failure.split())[:DESCRIPTION_MAX]
        health = ("<State>NotReady</State><Details><SubStatus>ProvisioningFailed</SubStatus>"
                  "<Description>%s</Description></Details>" % xml_escape(description))
    doc = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<Health xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        ' xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
        "<GoalStateIncarnation>%s</GoalStateIncarnation>"
        "<Container><ContainerId>%s</ContainerId><RoleInstanceList><Role>"
        "<InstanceId>%s</InstanceId><Health>%s</Health>"
        "</Role></RoleInstanceList></Container></Health>"
    ) % (xml_escape(goal_state.incarnation), xml_escape(goal_state.container_id),
         xml_escape(goal_state.instance_id), health)
    return doc.encode("utf-8")


# --------------------------------------------------------------------- JSON

JSON_MAX_SIZE = 1024 * 1024
JSON_MAX_DEPTH = 64
_JSON_WS = frozenset(" \t\n\r")
_JSON_DIGITS = frozenset("0123456789")
_JSON_NUMBER_CHARS = frozenset("0123456789+-.eE")
_JSON_NUMBER_MAX = 64
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_JSON_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_JSON_LITERALS = (("true", True), ("false", False), ("null", None))


class _JSONError(Exception):
    def __init__(self, message, offset):
        Exception.__init__(self, "%s at offset %d" % (message, offset))


def _json_ws(text, i, n):
    while i < n and text[i] in _JSON_WS:
        i += 1
    return i


def _json_string(text, i, n):
    """``text[i]`` is '"': (the decoded string, the offset after it).  Linear:
    str.find does the scanning, each character is looked at a bounded number
    of times."""
    start = i
    i += 1
    parts = []
    quote = -1
    while True:
        if quote < i:
            quote = text.find('"', i)
            if quote < 0:
                raise _JSONError("unterminated string", start)
        backslash = text.find("\\", i, quote)
        stop = quote if backslash < 0 else backslash
        segment = text[i:stop]
        if segment and min(segment) < " ":
            raise _JSONError("control character in a string", i + next(
                k for k, c in enumerate(segment) if c < " "))
        parts.append(segment)
        if backslash < 0:
            return "".join(parts), quote + 1
        kind = text[backslash + 1:backslash + 2]
        if kind in _JSON_ESCAPES:
            parts.append(_JSON_ESCAPES[kind])
            i = backslash + 2
            continue
        if kind != "u":
            raise _JSONError("invalid escape in a string", backslash)
        code, i = _json_hex4(text, backslash)
        if 0xD800 <= code < 0xDC00:
            low = -1
            if text[i:i + 2] == "\\u":
                low, after = _json_hex4(text, i)
            if not 0xDC00 <= low < 0xE000:
                raise _JSONError("unpaired surrogate in a string", backslash)
            code, i = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00), after
        elif 0xDC00 <= code < 0xE000:
            raise _JSONError("unpaired surrogate in a string", backslash)
        parts.append(chr(code))


def _json_hex4(text, i):
    digits = text[i + 2:i + 6]
    if len(digits) != 4 or not set(digits) <= _HEX_DIGITS:
        raise _JSONError("invalid \\u escape in a string", i)
    return int(digits, 16), i + 6


def _json_number(text, i, n):
    j = i
    while j < n and text[j] in _JSON_NUMBER_CHARS:
        j += 1
        if j - i > _JSON_NUMBER_MAX:
            raise _JSONError("number longer than %d characters" % _JSON_NUMBER_MAX, i)
    token = text[i:j]
    size = len(token)
    k = 1 if token.startswith("-") else 0
    if k < size and token[k] == "0":
        k += 1
    else:
        first = k
        while k < size and token[k] in _JSON_DIGITS:
            k += 1
        if k == first:
            raise _JSONError("malformed number", i)
    integral = True
    if k < size and token[k] == ".":
        k += 1
        first = k
        while k < size and token[k] in _JSON_DIGITS:
            k += 1
        if k == first:
            raise _JSONError("malformed number", i)
        integral = False
    if k < size and token[k] in "eE":
        k += 1
        if k < size and token[k] in "+-":
            k += 1
        first = k
        while k < size and token[k] in _JSON_DIGITS:
            k += 1
        if k == first:
            raise _JSONError("malformed number", i)
        integral = False
    if k != size:
        raise _JSONError("malformed number", i)
    if integral:
        return int(token), j
    value = float(token)
    if value in (float("inf"), float("-inf")):
        raise _JSONError("number out of range", i)
    return value, j


def _json_parse(text, max_depth):
    n = len(text)
    stack = []          # [container, pending key] per open object/array
    i = _json_ws(text, 0, n)
    while True:
        # -- one value at i
        if i >= n:
            raise _JSONError("unexpected end of document", i)
        c = text[i]
        opened = None
        if c == "{" or c == "[":
            if len(stack) >= max_depth:
                raise _JSONError("nested deeper than %d levels" % max_depth, i)
            closer = "}" if c == "{" else "]"
            j = _json_ws(text, i + 1, n)
            if text[j:j + 1] == closer:
                value, i = ({} if c == "{" else []), j + 1
            else:
                opened, i = ({} if c == "{" else []), j
        elif c == '"':
            value, i = _json_string(text, i, n)
        elif c == "-" or c in _JSON_DIGITS:
            value, i = _json_number(text, i, n)
        else:
            for word, literal in _JSON_LITERALS:
                if text.startswith(word, i):
                    value, i = literal, i + len(word)
                    break
            else:
                raise _JSONError("unexpected character %r" % c, i)
        if opened is not None:
            stack.append([opened, None])
            if isinstance(opened, dict):
                i = _json_key(text, i, n, stack[-1])
            continue
        # -- a complete value: store it, then close as many containers as end here
        while True:
            if not stack:
                i = _json_ws(text, i, n)
                if i != n:
                    raise _JSONError("data after the document", i)
                return value
            top = stack[-1]
            container = top[0]
            if isinstance(container, dict):
                container[top[1]] = value
            else:
                container.append(value)
            i = _json_ws(text, i, n)
            c = text[i:i + 1]
            if c == ",":
                i = _json_ws(text, i + 1, n)
                if isinstance(container, dict):
                    i = _json_key(text, i, n, top)
                break
            if c == ("}" if isinstance(container, dict) else "]"):
                stack.pop()
                value, i = container, i + 1
                continue
            raise _JSONError("expected ',' or '%s'" % ("}" if isinstance(container, dict) else "]"), i)


def _json_key(text, i, n, top):
    """Read '"key" :' at i into ``top``; returns the offset of the value."""
    if text[i:i + 1] != '"':
        raise _JSONError("expected a string key", i)
    top[1], i = _json_string(text, i, n)
    i = _json_ws(text, i, n)
    if text[i:i + 1] != ":":
        raise _JSONError("expected ':'", i)
    return _json_ws(text, i + 1, n)


def parse_json(data, what="JSON document", max_size=JSON_MAX_SIZE, max_depth=JSON_MAX_DEPTH):
    """JSON (UTF-8 bytes or str) -> dict/list/str/int/float/bool/None.

    A small strict parser (RFC 8259) that needs neither ``json`` nor ``re``:
    iterative, so depth is a checked number (``max_depth``), never a
    RecursionError; linear in the input; documents over ``max_size`` bytes,
    numbers over 64 characters, non-finite numbers and unpaired surrogates
    are refused.  Every problem is a ProtocolError naming ``what`` and the
    offset."""
    if isinstance(data, (bytes, bytearray)):
        if len(data) > max_size:
            raise ProtocolError("%s is larger than %d bytes" % (what, max_size))
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("%s is not UTF-8 (byte %d)" % (what, exc.start))
    else:
        text = data
        if len(text) > max_size:
            raise ProtocolError("%s is larger than %d characters" % (what, max_size))
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return _json_parse(text, max_depth)
    except _JSONError as exc:
        raise ProtocolError("%s is not valid JSON: %s" % (what, exc))


def json_get(value, *keys):
    """``value[k1][k2]...`` through nested objects, or None when a key is
    missing or a step is not an object."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


# --------------------------------------------------------------------- IMDS

def parse_imds_compute(data):
    """IMDS instance JSON (bytes) -> its ``compute`` object (a dict).

    The one entry point for every step that reads the instance document
    (host name, admin user, SSH keys): parsed by parse_json (bounded),
    ProtocolError when it is not JSON or has no compute object."""
    doc = parse_json(data, "IMDS instance document")
    compute = json_get(doc, "compute")
    if not isinstance(compute, dict):
        raise ProtocolError("IMDS instance document has no compute object")
    return compute


def parse_imds_instance(data):
    """IMDS instance JSON (bytes) -> (computerName, vmId).

    Raises ProtocolError when the document or the fields are unusable.  The
    host name comes from compute.osProfile.computerName, never compute.name
    (the resource name, e.g. 'vmss_3' on scale sets)."""
    compute = parse_imds_compute(data)
    name = json_get(compute, "osProfile", "computerName")
    if not isinstance(name, str) or not name:
        raise ProtocolError("IMDS compute.osProfile.computerName is missing or empty")
    vm_id = compute.get("vmId")
    return name, (vm_id.lower() if isinstance(vm_id, str) else None)


_LABEL_CHARS = _ALNUM | frozenset("-")


def _label_ok(label):
    return (0 < len(label) <= 63 and set(label) <= _LABEL_CHARS
            and not label.startswith("-") and not label.endswith("-"))


def hostname_problem(name):
    """None if ``name`` is a valid RFC 1123 host name (at most 64 characters),
    else a one-line reason.  The name is shown with repr() so that nothing in
    it is interpreted by a terminal."""
    shown = repr(name[:80]) + ("..." if len(name) > 80 else "")
    if len(name) > 64:
        return "computerName %s is %d characters long; a host name has at most 64" % (shown, len(name))
    if not all(_label_ok(label) for label in name.split(".")):
        return ("computerName %s is not a valid host name (labels of letters, digits and '-', "
                "1-63 characters, not starting or ending with '-')" % shown)
    return None


# -------------------------------------------------------------- VM identity

_HEX = frozenset("0123456789abcdef")


def normalize_vm_id(text):
    """product_uuid text -> lower-case UUID, or None when it is not one."""
    value = text.strip().lower()
    groups = value.split("-")
    if [len(g) for g in groups] == [8, 4, 4, 4, 12] and set("".join(groups)) <= _HEX:
        return value
    return None


def gen1_swap(vm_id):
    """Byte-swap the first three groups (how Gen1 VMs expose the id in SMBIOS)."""
    a, b, c, rest = vm_id.split("-", 3)

    def swap(group):
        return "".join(reversed([group[i:i + 2] for i in range(0, len(group), 2)]))

    return "-".join((swap(a), swap(b), swap(c), rest))


def same_vm(smbios_id, imds_id):
    return imds_id in (smbios_id, gen1_swap(smbios_id))


# ----------------------------------------------------------- DHCP leases

def _ip_from_bytes(raw):
    if len(raw) != 4:
        return None
    return ".".join(str(b) for b in raw)


def networkd_option_245(text):
    """A systemd-networkd lease file -> WireServer address, or None."""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "OPTION_245":
            value = value.strip()
            try:
                return _ip_from_bytes(bytes.fromhex(value))
            except ValueError:
                return None
    return None


_LEASE_BLOCK = r"lease\s*\{(.*?)\}"
_OPT_245 = r"option\s+unknown-245\s+([^;]+);"
_EXPIRE = r"expire\s+(?:\d\s+(\d{4})/(\d{1,2})/(\d{1,2})\s+(\d{1,2}):(\d{2}):(\d{2})|(never))\s*;"


def _decode_245(value):
    value = value.strip()
    if value.startswith('"') and value.endswith('"'):
        # dhclient's escaped-string form, e.g. "\250?\201\020"
        raw = bytearray()
        body = value[1:-1]
        i = 0
        while i < len(body):
            octal = body[i + 1:i + 4]
            if body[i] == "\\" and len(octal) == 3 and all(c in "01234567" for c in octal):
                raw.append(int(octal, 8) & 0xFF)
                i += 4
            elif body[i] == "\\" and i + 1 < len(body):
                raw.append(ord(body[i + 1]) & 0xFF)
                i += 2
            else:
                raw.append(ord(body[i]) & 0xFF)
                i += 1
        return _ip_from_bytes(bytes(raw))
    try:
        return _ip_from_bytes(bytes(int(part, 16) for part in value.split(":")))
    except ValueError:
        return None


def dhclient_option_245(text, now):
    """dhclient lease file text -> option 245 address of the last lease that
    has not expired at ``now`` (seconds since the epoch, UTC), or None."""
    import calendar
    import re

    best = None
    for block in re.findall(_LEASE_BLOCK, text, re.S):
        opt = re.search(_OPT_245, block)
        if not opt:
            continue
        exp = re.search(_EXPIRE, block)
        if exp and not exp.group(7):
            year, month, day, hour, minute, second = (int(g) for g in exp.groups()[:6])
            if calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) <= now:
                continue
        address = _decode_245(opt.group(1))
        if address:
            best = address
    return best


def split_endpoint(text, default_port=80):
    """'host[:port]' -> (host, port); ValueError with a reason otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = text.strip(), str(default_port)
    if not host or not set(host) <= _LABEL_CHARS | frozenset("."):
        raise ValueError("%r is not host[:port]" % text)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("%r has a bad port" % text)
    return host, int(port)
