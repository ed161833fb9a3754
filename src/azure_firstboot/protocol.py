"""The Azure protocol as pure functions: bytes and text in, values out.

Nothing here touches a socket, a file or the clock (callers pass ``now``),
so every rule of the wire format is tested without a network.
"""

AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
WIRESERVER_DEFAULT = "168.63.129.16"
IMDS_DEFAULT = "169.254.169.254"
WIRE_PROTOCOL_VERSION = "2012-11-30"
# 2021-08-01 with extended=true, as cloud-init asks: IMDS then fails rather than
# answer with parts missing, and the document has extended.compute.ppsType
IMDS_API_VERSION = "2021-08-01"
GOAL_STATE_PATH = "/machine/?comp=goalstate"
HEALTH_PATH = "/machine?comp=health"
IMDS_INSTANCE_PATH = "/metadata/instance?api-version=%s&extended=true" % IMDS_API_VERSION
DESCRIPTION_MAX = 512
INCARNATION_DIGITS = 10


class ProtocolError(Exception):
    """A document from the fabric (or a value in it) is unusable."""


_DECIMAL = frozenset("0123456789")
_HEXADECIMAL = frozenset("0123456789abcdefABCDEF")


def wire_number(text, digits=10, base=10):
    """The one number parser for everything that comes off the wire or out
    of a lease file: ``text`` must be 1..``digits`` ASCII digits (hex digits
    with ``base=16``) and nothing else (no sign, '_', space, '²' or '٣',
    which str.isdigit() and int() would let through).  -> int, or None."""
    if not isinstance(text, str):
        text = bytes(text).decode("latin-1")
    if 0 < len(text) <= digits and set(text) <= (_HEXADECIMAL if base == 16 else _DECIMAL):
        return int(text, base)
    return None


# ---------------------------------------------------------------- XML input

_GOAL_STATE_FIELDS = {
    ("GoalState", "Incarnation"): "incarnation",
    ("GoalState", "Container", "ContainerId"): "container_id",
    ("GoalState", "Container", "RoleInstanceList", "RoleInstance", "InstanceId"): "instance_id",
}
_ERROR_FIELDS = {("Error", "Code"): "code", ("Error", "Message"): "message"}


def _refuse(*_args):
    raise ProtocolError("refusing XML with a DOCTYPE or entity declaration")


def _trie(fields):
    """{path tuple: name} -> nested dicts; a node's None key holds the name."""
    root = {}
    for path, name in fields.items():
        node = root
        for part in path:
            node = node.setdefault(part, {})
        node[None] = name
    return root


def _parser():
    """An expat parser that refuses any DOCTYPE or entity declaration (the one
    setup of every XML reader here; expat is cheap to import, no tree built)."""
    from xml.parsers import expat

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    return parser


def _parse(parser, data, start, end, chars):
    """Feed ``data`` to ``parser`` with these handlers; every failure is a ProtocolError."""
    from xml.parsers import expat

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise ProtocolError("malformed XML: %s" % exc)
    except (ValueError, LookupError) as exc:
        # expat reads utf-8, utf-16, latin-1 and ascii; utf-7 gives ValueError,
        # an unknown name LookupError
        raise ProtocolError("XML in an encoding that cannot be read: %s" % str(exc)[:80])


def _collect(data, fields, strip=True):
    """Return {name: text} of the first element at each path in ``fields``.

    Uses expat directly (cheap to import, no tree built).  Namespace prefixes
    are dropped, unknown elements, attributes, order and whitespace are
    ignored; DOCTYPE and entity declarations are refused outright.  Linear in
    the input: the position in the wanted paths is tracked one element at a
    time, and below the depth of any wanted path only a counter moves.  An
    encoding expat cannot read (utf-7, unknown names) is a ProtocolError."""
    parser = _parser()
    nodes = [_trie(fields)]   # trie node per open element while on a wanted path
    outside = [0]             # open elements below the last node in ``nodes``
    found = {}
    text = []                 # chunks of the wanted element being read, or None

    def start(name, _attrs):
        if outside[0]:
            outside[0] += 1
            return
        node = nodes[-1].get(name.rpartition(":")[2])
        if node is None:
            outside[0] = 1
            return
        nodes.append(node)
        if node.get(None) is not None and node[None] not in found:
            text.append([])
        else:
            text.append(None)

    def end(_name):
        if outside[0]:
            outside[0] -= 1
            return
        node = nodes.pop()
        buf = text.pop()
        if buf is not None and node[None] not in found:
            value = "".join(buf)
            found[node[None]] = value.strip() if strip else value

    def chars(chunk):
        if not outside[0] and text and text[-1] is not None:
            text[-1].append(chunk)

    _parse(parser, data, start, end, chars)
    return found


# for other pure modules (accounts: ovf-env.xml)
xml_fields = _collect


XML_DEPTH_MAX = 32
XML_ELEMENTS_MAX = 10000


def xml_elements(data, max_depth=XML_DEPTH_MAX, max_elements=XML_ELEMENTS_MAX):
    """[(path of local names, text)] of every element, in document order (an
    element comes before its children); text is the element's own character
    data, unstripped.  Same refusals as xml_fields (DOCTYPE, entities,
    unreadable encodings), and ProtocolError beyond ``max_depth`` levels or
    ``max_elements`` elements: bounded for any input."""
    parser = _parser()
    found = []
    stack = []   # (path, chunks) of the open elements

    def start(name, _attrs):
        if len(stack) >= max_depth:
            raise ProtocolError("XML nested deeper than %d elements" % max_depth)
        if len(found) >= max_elements:
            raise ProtocolError("XML with more than %d elements" % max_elements)
        path = (stack[-1][0] if stack else ()) + (name.rpartition(":")[2],)
        item = [path, []]
        found.append(item)
        stack.append(item)

    def end(_name):
        stack.pop()

    def chars(chunk):
        if stack:
            stack[-1][1].append(chunk)

    _parse(parser, data, start, end, chars)
    return [(path, "".join(chunks)) for path, chunks in found]


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
    an id at all: absurd lengths, and anything not printable (C0 and C1
    controls, DEL, NEL, U+2028/2029, format characters, unassigned code
    points) that could forge a log line or hide in a terminal."""
    return 0 < len(value) <= 1024 and value.isprintable()


def parse_goal_state(data):
    """Goal state XML (bytes) -> GoalState.  ``instance_id`` is None when the
    document has no RoleInstance (the fabric sometimes sends that shape;
    the caller fetches again)."""
    found = _collect(data, _GOAL_STATE_FIELDS)
    for key in ("incarnation", "container_id"):
        if not found.get(key):
            raise ProtocolError("goal state has no %s" % key.replace("_", " "))
    if wire_number(found["incarnation"], INCARNATION_DIGITS) is None:
        raise ProtocolError("goal state incarnation is not a number of at most %d ASCII digits: %s" % (
            INCARNATION_DIGITS, ascii(found["incarnation"][:40])))
    for key in ("container_id", "instance_id"):
        value = found.get(key)
        if value is not None and not _id_ok(value):
            raise ProtocolError("goal state %s has unexpected characters: %s" % (
                key.replace("_", " "), ascii(value[:80])))
    return GoalState(found["incarnation"], found["container_id"], found.get("instance_id") or None)


def parse_error_body(data):
    """A WireServer ``<Error>`` body -> short text, or '' when it is not one."""
    try:
        found = _collect(data, _ERROR_FIELDS)
    except ProtocolError:
        return ""
    text = ": ".join(" ".join(v.split()) for v in (found.get("code"), found.get("message")) if v)
    return "".join(c if c.isprintable() else "?" for c in text[:200])


# --------------------------------------------------------------- XML output

# characters XML 1.0 cannot carry are replaced by '?' (C0 controls other than
# tab, newline and carriage return; U+FFFE, U+FFFF; lone surrogates, which
# UTF-8 cannot carry either).  A test per character, not a str.translate()
# table: a table of the 2,079 code points cost every unit ~140 KiB of RSS.
def _xml_char(ch):
    return ch if (" " <= ch < "\ud800" or ch in "\t\n\r" or "\ue000" <= ch < "\ufffe"
                  or ch >= "\U00010000") else "?"


def xml_valid_text(text):
    """``text`` with every character XML 1.0 cannot carry replaced by '?'."""
    for ch in text:
        if _xml_char(ch) != ch:
            return "".join(_xml_char(c) for c in text)
    return text


def xml_escape(text):
    text = xml_valid_text(text)
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;"))


def health_document(goal_state, failure=None):
    """GoalState -> Health XML (bytes).  ``failure`` (a reason) turns the
    report into NotReady/ProvisioningFailed with the reason (whitespace runs
    made one space, anything else not printable made '?'), cut to
    DESCRIPTION_MAX characters *before* escaping, as its Description.  The
    document is always well-formed UTF-8 XML, whatever the strings hold."""
    if failure is None:
        health = "<State>Ready</State>"
    else:
        description = "".join(c if c.isprintable() else "?"
                              for c in " ".join(failure.split())[:DESCRIPTION_MAX])
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

    def digits(k):
        """Index after the run of one or more digits at k; _JSONError if none."""
        first = k
        while k < size and token[k] in _JSON_DIGITS:
            k += 1
        if k == first:
            raise _JSONError("malformed number", i)
        return k

    k = k + 1 if k < size and token[k] == "0" else digits(k)
    integral = True
    if k < size and token[k] == ".":
        k = digits(k + 1)
        integral = False
    if k < size and token[k] in "eE":
        k += 1
        if k < size and token[k] in "+-":
            k += 1
        k = digits(k)
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

def parse_imds_document(data):
    """IMDS instance JSON (bytes) -> the document (a dict with a ``compute``
    object; ``extended`` too when there is one).

    The one entry point for every step that reads the instance document
    (host name, admin user, SSH keys, creation mode): parsed by parse_json
    (bounded), ProtocolError when it is not JSON or has no compute object."""
    doc = parse_json(data, "IMDS instance document")
    if not isinstance(json_get(doc, "compute"), dict):
        raise ProtocolError("IMDS instance document has no compute object")
    return doc


def parse_imds_compute(data):
    """IMDS instance JSON (bytes) -> its ``compute`` object (a dict)."""
    return parse_imds_document(data)["compute"]


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
    labels = name.split(".")
    if not all(_label_ok(label) for label in labels):
        return ("computerName %s is not a valid host name (labels of letters, digits and '-', "
                "1-63 characters, not starting or ending with '-')" % shown)
    if set(labels[-1]) <= _DECIMAL:
        return ("computerName %s is not a valid host name: its last label is all digits "
                "(it reads as an IP address; RFC 1123 2.1)" % shown)
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


def azure_vm_id(smbios_id, uefi, imds_id=None):
    """The VM id as Azure reports it (IMDS compute.vmId, the portal), from
    the SMBIOS id (normalize_vm_id): Gen1 VMs (BIOS: no /sys/firmware/efi)
    expose it with the first three groups byte-swapped, Gen2 (UEFI) as it
    is; what IMDS said wins when it is one of the two forms.  None when
    there is no SMBIOS id."""
    if smbios_id is None:
        return None
    imds_id = normalize_vm_id(imds_id) if isinstance(imds_id, str) else None
    if imds_id and same_vm(smbios_id, imds_id):
        return imds_id
    return smbios_id if uefi else gen1_swap(smbios_id)


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
    octets = [wire_number(part, 2, 16) for part in value.split(":")]
    return None if None in octets else _ip_from_bytes(bytes(octets))


_LEASE_SPECIAL = frozenset('{};"#')
_LEASE_SPACE = frozenset(" \t\r\n\f\v")


def _lease_tokens(text):
    """dhclient lease syntax -> tokens: '{', '}', ';', '"quoted"' (kept raw,
    escapes included) and words; comments dropped.  One pass, linear: quoted
    strings and comments are skipped with str.find."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _LEASE_SPACE:
            i += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif c == '"':
            j = i + 1
            while True:
                j = text.find('"', j)
                if j < 0:
                    return                           # unterminated string: the rest is garbage
                k = j
                while k > i + 1 and text[k - 1] == "\\":
                    k -= 1
                if (j - k) % 2 == 0:
                    break
                j += 1
            yield text[i:j + 1]
            i = j + 1
        elif c in "{};":
            yield c
            i += 1
        else:
            j = i + 1
            while j < n and text[j] not in _LEASE_SPACE and text[j] not in _LEASE_SPECIAL:
                j += 1
            yield text[i:j]
            i = j


def dhclient_leases(text):
    """dhclient (and NetworkManager's dhclient-*.lease) lease file text ->
    one dict per complete top-level ``lease { }`` block: statement keyword
    (``option NAME`` for options) -> the list of its remaining tokens; the
    first statement of a kind wins.  Unterminated blocks and statements are
    dropped.  Linear in the input, no regular expressions."""
    leases = []
    depth = 0
    lease = None          # the dict being filled, while inside a top-level lease
    statement = []
    for token in _lease_tokens(text):
        if token == "{":
            if depth == 0:
                lease = {} if statement == ["lease"] else None
            depth += 1
            statement = []
        elif token == "}":
            if depth == 0:
                statement = []
                continue
            depth -= 1
            if depth == 0 and lease is not None:
                leases.append(lease)
                lease = None
            statement = []
        elif token == ";":
            if depth == 1 and lease is not None and statement:
                if statement[0] == "option" and len(statement) > 1:
                    key, value = "option " + statement[1], statement[2:]
                else:
                    key, value = statement[0], statement[1:]
                lease.setdefault(key, value)
            statement = []
        elif len(statement) < 16:
            statement.append(token)
    return leases


def _days_from_civil(year, month, day):
    """Days since 1970-01-01 of a proleptic Gregorian date (no calendar
    module: it imports datetime and locale)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _month_days(year, month):
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def lease_expiry(words):
    """The words of an ``expire`` statement -> seconds since the epoch (UTC),
    float('inf') for ``never``, or None when they cannot be read.  Forms:
    ``W YYYY/MM/DD HH:MM:SS`` (dhclient's default, UTC), ``epoch N``
    (db-time-format local) and ``never``."""
    if words == ["never"]:
        return float("inf")
    if len(words) == 2 and words[0] == "epoch":
        return wire_number(words[1], 12)
    if len(words) != 3 or wire_number(words[0], 1) is None:
        return None
    date, clock = words[1].split("/"), words[2].split(":")
    if len(date) != 3 or len(clock) != 3:
        return None
    year, month, day = (wire_number(part, 4) for part in date)
    hour, minute, second = (wire_number(part, 2) for part in clock)
    if None in (year, month, day, hour, minute, second):
        return None
    if not (1 <= month <= 12 and 1 <= day <= _month_days(year, month)
            and hour < 24 and minute < 60 and second <= 60):
        return None
    return ((_days_from_civil(year, month, day) * 24 + hour) * 60 + minute) * 60 + second


def dhclient_option_245(text, now):
    """dhclient lease file text -> option 245 address of the last lease that
    has not expired at ``now`` (seconds since the epoch, UTC), or None.  A
    lease whose ``expire`` is missing or cannot be read (e.g. month 00)
    counts as expired, as dhclient itself treats it."""
    best = None
    for lease in dhclient_leases(text):
        value = lease.get("option unknown-245")
        if not value or len(value) != 1:
            continue
        expiry = lease_expiry(lease.get("expire") or [])
        if expiry is None or expiry <= now:
            continue
        address = _decode_245(value[0])
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
    number = wire_number(port, 5)
    if number is None or not 0 < number < 65536:
        raise ValueError("%r has a bad port" % text)
    return host, number
