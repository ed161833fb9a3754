#!/usr/bin/env python3
"""Azure fabric emulator: a faithful WireServer + IMDS on loopback, for tests.

Written from the documented wire formats (see ../shared/research): the
WireServer serves ``Versions``, ``GoalState`` (xsi attributes, ``&amp;``-escaped
absolute config URLs), HostingEnvironmentConfig/SharedConfig/ExtensionsConfig,
and judges ``Health`` reports like the fabric does (400 for a malformed
document, 410 + ``Error``/``ResourceNotAvailable`` for a stale incarnation).
IMDS serves the instance document (``compute.name`` differs from
``compute.osProfile.computerName``), leaf paths with ``format=text`` and
``/metadata/versions``, and rejects requests the real one rejects.  Every
request is recorded; faults (refusal, delays, dropped connections, status
sequences, stale goal states, broken bodies, IMDS 410) are injected from a
*scenario* dict that can be changed while serving.

Python API (tests put ``tests/`` on ``sys.path``)::

    from fabric_emulator import Fabric
    with Fabric({"imds_gone_for": 1}).start() as fab:
        fab.wireserver_address, fab.imds_address     # "127.0.0.1:PORT"
        fab.configure(goalstate_statuses=[503, 503])
        fab.requests("wireserver"); fab.health_reports(); fab.goal_state_ids()

CLI (VM harness, ``make demo``)::

    python3 tests/fabric_emulator.py --ready-file F --record R.jsonl \
        [--wireserver HOST:PORT] [--imds HOST:PORT] [--control HOST:PORT] \
        [--scenario JSON|@FILE]

How a Health POST is judged (in this order): status sequence entry; missing
``x-ms-version`` -> 400; not a well-formed Health document (root ``Health``,
GoalStateIncarnation number, Container/ContainerId, RoleInstanceList/Role/
InstanceId, Role/Health/State Ready|NotReady, optional Details with SubStatus
Provisioning|ProvisioningFailed and Description) or any DOCTYPE -> 400 with an
``Error`` body; Description over 4096 UTF-8 bytes -> 500 (what the real fabric
did, WALinuxAgent #2017); ``bump_incarnation_on_health`` bumps now;
GoalStateIncarnation != current -> 410; ContainerId/InstanceId that was current
earlier -> 410, one never served -> 400; else 200 with an empty body and the
report is kept (``health_reports()``; ``fields`` holds an encoded Description
``result=error|reason=...|agent=...`` split into its keys, else None).

Stdlib only, Python 3.9+.  Not part of the product.
"""

import argparse
import copy
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape as _xml_escape

# ------------------------------------------------------------------ constants

WIRE_PROTOCOL_VERSION = "2012-11-30"
ROLE_GUID = "b7f5d1e4-3c2a-4f6b-8d9e-0a1b2c3d4e5f"
DEPLOYMENT_GUID = "4f0d8c7b-2a61-4e3d-9c55-7e1f0a2b3c4d"
HEALTH_DESCRIPTION_LIMIT = 4096          # bytes, the WireServer's limit
MAX_REQUEST_BODY = 1024 * 1024           # what the emulator reads at most
GOALSTATE_BODY_FAULTS = ("truncated", "malformed", "oversized", "doctype_bomb", "unknown_elements",
                         "utf7_encoding", "unknown_encoding", "deeply_nested", "superscript_incarnation",
                         "c1_container_id")
IMDS_BODY_FAULTS = ("malformed", "oversized", "no_osprofile", "empty_computer_name", "deeply_nested",
                    "huge_number")
DEEPLY_NESTED = 340000                   # elements in a deeply_nested goal state (~1 MB, under the cap)

# api-versions IMDS accepts for /metadata/instance (oldest first).
IMDS_API_VERSIONS = [
    "2017-03-01", "2017-04-02", "2017-08-01", "2017-10-01", "2017-12-01",
    "2018-02-01", "2018-04-02", "2018-10-01", "2019-02-01", "2019-03-11",
    "2019-04-30", "2019-06-01", "2019-06-04", "2019-08-01", "2019-08-15",
    "2019-11-01", "2020-06-01", "2020-07-15", "2020-09-01", "2020-10-01",
    "2020-12-01", "2021-01-01", "2021-02-01", "2021-03-01", "2021-05-01",
    "2021-08-01", "2021-10-01", "2021-11-01", "2021-11-15", "2021-12-13",
    "2022-02-01", "2022-03-01", "2022-07-01", "2022-08-01", "2022-09-01",
    "2022-11-15", "2023-07-01", "2023-11-15", "2024-03-15", "2024-07-17",
    "2025-04-07",
]

# The public half of tests/vm/test_id_ed25519: a key pair made for the tests only
# (its private key is in the repository; it must never let anyone into anything).
TEST_PUBLIC_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEaZhwlR22lMmhve4dgEdglhWwsIr/x1/Yfe3rwf2W2a "
                   "azure-firstboot-test-key (TEST ONLY, never trust it)")

_WS_ERROR_CODES = {
    400: "BadRequest", 403: "Forbidden", 404: "ResourceNotFound", 405: "MethodNotAllowed",
    410: "ResourceNotAvailable", 429: "TooManyRequests", 500: "InternalError",
    502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout",
}
_GONE_MESSAGE = "The resource requested is no longer available. Please refresh your cache."

# ------------------------------------------------------------------ scenario

# (key, default, kind, help).  kind drives validation in _check_value().
SCENARIO_KEYS = [
    # identity
    ("vm_id", "5c9f1c56-64f7-4d55-9a0b-6c2f0e8b7a31", "str", "IMDS compute.vmId"),
    ("computer_name", "myvm", "str", "IMDS compute.osProfile.computerName (the hostname to use)"),
    ("name", "myvmss_3", "str", "IMDS compute.name (ARM resource name; NOT a valid hostname)"),
    ("vm_scale_set_name", "myvmss", "str", "IMDS compute.vmScaleSetName"),
    ("incarnation", 1, "int", "goal state Incarnation"),
    ("container_id", "8e6f3c2a-1b4d-4e5f-9a7b-2c3d4e5f6a7b", "str", "goal state Container/ContainerId"),
    ("instance_id", None, "optstr",
     "RoleInstance/InstanceId; null = '%s._<computer_name>'" % ROLE_GUID),
    ("mac", "525400123456", "str", "IMDS network.interface[0].macAddress"),
    ("private_ip", "10.0.0.4", "str", "IMDS ipv4.ipAddress[0].privateIpAddress"),
    ("public_ip", "20.61.10.5", "str", "IMDS ipv4.ipAddress[0].publicIpAddress"),
    ("subnet_address", "10.0.0.0", "str", "IMDS ipv4.subnet[0].address"),
    ("subnet_prefix", "24", "str", "IMDS ipv4.subnet[0].prefix"),
    ("location", "westeurope", "str", "IMDS compute.location"),
    ("admin_username", "azureuser", "str", "IMDS compute.osProfile.adminUsername"),
    ("disable_password_authentication", "true", "str",
     "IMDS osProfile.disablePasswordAuthentication (\"false\": password logins, the password is "
     "on the provisioning medium; a JSON boolean via imds_override)"),
    ("public_keys", [TEST_PUBLIC_KEY], "strlist",
     "IMDS compute.publicKeys[].keyData (default: the test key pair tests/vm/test_id_ed25519)"),
    ("public_key_paths", [], "strlist",
     "IMDS compute.publicKeys[i].path, one per key; missing ones = /home/<admin_username>/.ssh/authorized_keys"),
    ("os_disk_create_option", "FromImage", "str",
     "IMDS compute.storageProfile.osDisk.createOption (FromImage: a generalized image; Attach: an "
     "attached, specialized OS disk)"),
    ("specialized", False, "bool",
     "a specialized VM (an attached OS disk): osProfile computerName and adminUsername blank, "
     "no publicKeys, createOption Attach (whatever the keys above say)"),
    ("pps_type", "None", "str",
     "IMDS extended.compute.ppsType (served with extended=true): None, Running, Savable, "
     "PreprovisionedOSDisk (a pre-provisioned VM)"),
    ("vm_size", "Standard_B2s", "str", "IMDS compute.vmSize"),
    ("subscription_id", "11111111-2222-3333-4444-555555555555", "str", "IMDS compute.subscriptionId"),
    ("resource_group", "myrg", "str", "IMDS compute.resourceGroupName"),
    ("user_data", "", "str",
     "IMDS compute.userData (base64, as ARM stores it; also served at "
     "/metadata/instance/compute/userData?format=text)"),
    ("imds_override", {}, "dict", "dict deep-merged into the instance document last"),
    ("config_url_base", None, "optstr",
     "base of the config URLs in the goal state; null = http://<own wireserver address>"),
    # WireServer behaviour
    ("require_version_header", True, "bool",
     "goalstate/health/config requests without x-ms-version get 400 (versions never needs it)"),
    ("bump_container", False, "bool", "bump_incarnation_on_health also changes the ContainerId"),
    ("ws_refuse_for", 0.0, "num",
     "seconds since start during which the WireServer port is bound but not listening "
     "(connections refused); only honoured at start"),
    ("ws_delay", 0.0, "num", "seconds to wait before answering every WireServer request"),
    ("ws_drop", 0, "int", "the next N WireServer requests are closed without any response"),
    ("versions_statuses", [], "statuses", "status sequence for GET /?comp=versions"),
    ("goalstate_statuses", [], "statuses", "status sequence for goal state requests"),
    ("health_statuses", [], "statuses", "status sequence for health POSTs (before validation)"),
    ("goalstate_forever", None, "optstatus",
     "one status entry answering every goal state request once goalstate_statuses is used up "
     "(e.g. [503, {\"Retry-After\": \"0\"}]: a storm test); null = off"),
    ("health_forever", None, "optstatus",
     "one status entry answering every health POST once health_statuses is used up (e.g. 410); null = off"),
    ("health_invalid_container", 0, "int",
     "the next N health POSTs get 400 with Error Code InvalidContainerConfiguration and the goal state "
     "moves on (incarnation + 1, new ContainerId): only a client that fetches the goal state again is accepted"),
    ("ws_interim", 0, "int",
     "the next N WireServer answers are preceded by interim responses (100 Continue, 103 Early Hints)"),
    ("ws_raw_responses", [], "strlist",
     "the next WireServer requests (one entry each, before routing) get the entry's text verbatim "
     "(UTF-8) as the whole response, then the connection closes: broken status lines "
     "('HTTP/1.1 2\u00b20 OK'), 'Content-Length: -1', '+5', '1_0', bad chunk sizes..."),
    ("ws_raw_forever", None, "optstr", "like ws_raw_responses, for every request once that list is used up"),
    ("imds_raw_responses", [], "strlist", "like ws_raw_responses, for IMDS"),
    ("roleinstance_missing", 0, "int", "the next N goal states omit RoleInstanceList (noop shape)"),
    ("bump_incarnation_on_health", 0, "int",
     "the next N judged health POSTs first bump the incarnation, so they are stale -> 410"),
    ("goalstate_body", None, "choice:" + "|".join(GOALSTATE_BODY_FAULTS),
     "broken goal state body: truncated (Content-Length says more, connection closes), "
     "malformed (bad XML), oversized (> oversized_bytes, streamed without Content-Length), "
     "doctype_bomb (billion laughs), unknown_elements (extra/reordered/whitespace, still valid), "
     "utf7_encoding / unknown_encoding (an XML declaration expat cannot read), deeply_nested "
     "(GoalState + 340,000 unclosed nested elements, ~1 MB), superscript_incarnation "
     "(<Incarnation>\u00b9</Incarnation>), c1_container_id (a C1 control, U+009B CSI, in ContainerId)"),
    ("goalstate_body_count", None, "optint", "apply goalstate_body to the next N goal states; null = all"),
    # IMDS behaviour
    ("imds_refuse_for", 0.0, "num", "like ws_refuse_for, for IMDS"),
    ("imds_gone_for", 0.0, "num", "IMDS answers 410 for this many seconds (counted from imds_gone_from)"),
    ("imds_gone_from", "start", "choice:start|first_request",
     "origin of imds_gone_for: emulator start, or the first IMDS request (use this in VMs)"),
    ("imds_delay", 0.0, "num", "seconds to wait before answering every IMDS request"),
    ("imds_drop", 0, "int", "the next N IMDS requests are closed without any response"),
    ("imds_statuses", [], "statuses", "status sequence for IMDS requests"),
    ("imds_forever", None, "optstatus",
     "one status entry answering every IMDS request once imds_statuses is used up (e.g. 404: "
     "IMDS unavailable throughout; imds_refuse_for with a large value: no IMDS at all); null = off"),
    ("imds_rate_limit", None, "optint", "answer 429 beyond N requests per second; null = off"),
    ("imds_body", None, "choice:" + "|".join(IMDS_BODY_FAULTS),
     "broken instance document: malformed (invalid JSON), oversized (streamed), "
     "no_osprofile (compute.osProfile absent), empty_computer_name, deeply_nested ('[' x 995), "
     "huge_number (a 5,000-digit number in compute)"),
    ("imds_body_count", None, "optint", "apply imds_body to the next N JSON instance requests; null = all"),
    ("oversized_bytes", 3 * 1024 * 1024, "int", "size of 'oversized' bodies"),
]
_KINDS = {k: kind for k, _d, kind, _h in SCENARIO_KEYS}
_DEFAULTS = {k: d for k, d, _k, _h in SCENARIO_KEYS}

STATUSES_HELP = (
    "A status sequence is a list consumed one entry per request, then normal service resumes.\n"
    "Entry: CODE | [CODE] | [CODE, {headers}] | [CODE, {headers}, \"body\"] |\n"
    "       {\"status\": CODE, \"headers\": {...}, \"body\": \"...\"} | \"drop\" (close, no response).\n"
    "CODE 200 means: serve this request normally.  Example: [[503, {\"Retry-After\": \"1\"}], 503, 503]"
)


def _check_statuses(key, value):
    if not isinstance(value, (list, tuple)):
        raise ValueError("scenario key %r: expected a list of status entries" % key)
    out = []
    for entry in value:
        status, headers, body = None, {}, None
        if entry == "drop":
            out.append({"status": None, "headers": {}, "body": None})
            continue
        if isinstance(entry, bool):
            raise ValueError("scenario key %r: bad entry %r" % (key, entry))
        if isinstance(entry, int):
            status = entry
        elif isinstance(entry, (list, tuple)) and 1 <= len(entry) <= 3:
            status = entry[0]
            if len(entry) > 1:
                headers = entry[1]
            if len(entry) > 2:
                body = entry[2]
        elif isinstance(entry, dict) and "status" in entry:
            status, headers, body = entry["status"], entry.get("headers") or {}, entry.get("body")
        else:
            raise ValueError("scenario key %r: bad entry %r" % (key, entry))
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError("scenario key %r: bad status %r" % (key, status))
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, (str, int)) for k, v in headers.items()):
            raise ValueError("scenario key %r: headers must be a {name: value} dict" % key)
        if body is not None and not isinstance(body, str):
            raise ValueError("scenario key %r: body must be a string" % key)
        out.append({"status": status, "headers": {k: str(v) for k, v in headers.items()}, "body": body})
    return out


def _check_value(key, value):
    kind = _KINDS.get(key)
    if kind is None:
        raise ValueError("unknown scenario key %r (known: %s)" % (key, ", ".join(sorted(_KINDS))))
    bad = ValueError("scenario key %r: bad value %r (expected %s)" % (key, value, kind))
    if kind == "str":
        if not isinstance(value, str):
            raise bad
    elif kind == "optstr":
        if value is not None and not isinstance(value, str):
            raise bad
    elif kind in ("int", "optint"):
        if value is None and kind == "optint":
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad
    elif kind == "num":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise bad
        value = float(value)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise bad
    elif kind == "dict":
        if not isinstance(value, dict):
            raise bad
        value = copy.deepcopy(value)
    elif kind == "strlist":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise bad
        value = list(value)
    elif kind == "statuses":
        value = _check_statuses(key, value)
    elif kind == "optstatus":
        if value is not None:
            value = _check_statuses(key, [value])[0]
    elif kind.startswith("choice:"):
        if value is None and _DEFAULTS[key] is None:
            return None
        if value not in kind[len("choice:"):].split("|"):
            raise bad
    return value


def _deep_merge(base, extra):
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def _x(text):
    return _xml_escape(str(text))


def _error_xml(code, message, details=""):
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<Error xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema">\n'
        "    <Code>%s</Code>\n    <Message>%s</Message>\n    <Details>%s</Details>\n</Error>\n"
        % (_x(code), _x(message), _x(details))
    ).encode("utf-8")


def _add_fault(rec, name):
    rec["fault"] = name if not rec["fault"] else rec["fault"] + "," + name


class _Drop(Exception):
    """Close the connection without a response."""


# ------------------------------------------------------------------ HTTP plumbing

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, handler, fabric, service):
        self.fabric = fabric
        self.service = service
        ThreadingHTTPServer.__init__(self, addr, handler, bind_and_activate=False)
        self.timeout = 0.05

    def server_bind(self):
        # HTTPServer.server_bind() would call getfqdn(), which can block on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):  # pragma: no cover - noise only
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""
    timeout = 60

    def log_message(self, fmt, *args):
        log = self.server.fabric._log
        if log:
            log("%s %s" % (self.server.service, fmt % args))

    def _dispatch(self):
        self.server.fabric._handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _dispatch

    # helpers used by Fabric
    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_REQUEST_BODY:
                    raise ValueError("request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        length = int(length)
        if length > MAX_REQUEST_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length)


# ------------------------------------------------------------------ the fabric

class Fabric(object):
    """WireServer + IMDS emulator.  See the module docstring."""

    def __init__(self, scenario=None, host="127.0.0.1", wireserver_port=0, imds_port=0,
                 record_file=None, log=None, imds_host=None):
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._scenario = copy.deepcopy(_DEFAULTS)
        for k, v in (scenario or {}).items():
            self._scenario[k] = _check_value(k, v)
        self._host = host
        self._imds_host = imds_host or host
        self._ports = {"wireserver": wireserver_port, "imds": imds_port}
        self._records = []
        self._health = []
        self._known = {"incarnation": set(), "container_id": set(), "instance_id": set()}
        self._remember_ids()
        self._imds_times = []
        self._first_imds = None
        self._t0 = None
        self._servers = {}
        self._threads = []
        self._listening = {}
        self._record_path = record_file
        self._record_fh = None
        self._log = log

    # ---------------------------------------------------------- lifecycle
    def start(self):
        if self._t0 is not None:
            raise RuntimeError("Fabric already started")
        if self._record_path:
            self._record_fh = open(self._record_path, "a", encoding="utf-8")
        specs = [("wireserver", self._host, "ws_refuse_for"), ("imds", self._imds_host, "imds_refuse_for")]
        for service, host, _key in specs:
            srv = _Server((host, self._ports[service]), _Handler, self, service)
            try:
                srv.server_bind()       # port known now; listen() may come later
            except OSError:
                srv.server_close()
                self._close_servers()
                raise
            self._servers[service] = srv
            self._listening[service] = threading.Event()
        self._t0 = time.monotonic()
        for service, _host, key in specs:
            t = threading.Thread(target=self._serve, args=(service, self._scenario[key]),
                                 name="fabric-" + service, daemon=True)
            t.start()
            self._threads.append(t)
        for service, _host, key in specs:
            if not self._scenario[key]:
                self._listening[service].wait(5)
        return self

    def _serve(self, service, refuse_for):
        srv = self._servers[service]
        if refuse_for > 0 and self._stop.wait(refuse_for):
            return
        try:
            srv.server_activate()     # listen()
            self._listening[service].set()
            while not self._stop.is_set():
                srv.handle_request()
        except OSError:
            if not self._stop.is_set():
                raise

    def _close_servers(self):
        for srv in self._servers.values():
            try:
                srv.server_close()
            except OSError:
                pass

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._close_servers()
        with self._lock:
            if self._record_fh:
                self._record_fh.close()
                self._record_fh = None

    def __enter__(self):
        if self._t0 is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def wait_listening(self, service="wireserver", timeout=None):
        """Block until the service listens (after *_refuse_for); True when it does."""
        return self._listening[service].wait(timeout)

    # ---------------------------------------------------------- public state
    def _address(self, service):
        srv = self._servers.get(service)
        if srv is None:
            raise RuntimeError("Fabric not started")
        host, port = srv.server_address[:2]
        return "%s:%d" % (host, port)

    @property
    def wireserver_address(self):
        return self._address("wireserver")

    @property
    def imds_address(self):
        return self._address("imds")

    def configure(self, **changes):
        checked = {k: _check_value(k, v) for k, v in changes.items()}
        with self._lock:
            self._remember_ids()
            self._scenario.update(checked)
            self._remember_ids()

    def scenario(self):
        with self._lock:
            return copy.deepcopy(self._scenario)

    def requests(self, service=None):
        with self._lock:
            return [copy.deepcopy(r) for r in self._records
                    if service is None or r["service"] == service]

    def health_reports(self):
        with self._lock:
            return copy.deepcopy(self._health)

    def goal_state_ids(self):
        with self._lock:
            return self._ids()

    def now(self):
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    # ---------------------------------------------------------- internals
    def _ids(self):
        s = self._scenario
        instance_id = s["instance_id"] or "%s._%s" % (ROLE_GUID, s["computer_name"])
        return {"incarnation": s["incarnation"], "container_id": s["container_id"],
                "instance_id": instance_id}

    def _remember_ids(self):
        for k, v in self._ids().items():
            self._known[k].add(v)

    def _take(self, key):
        """Pop the next entry of a status sequence (or None)."""
        with self._lock:
            seq = self._scenario[key]
            if seq:
                return seq.pop(0)
            return None

    def _take_count(self, key):
        """Decrement a counter; True if it was positive."""
        with self._lock:
            if self._scenario[key] > 0:
                self._scenario[key] -= 1
                return True
            return False

    def _take_body_fault(self, key, count_key, applies=None):
        with self._lock:
            fault = self._scenario[key]
            if fault is None or (applies is not None and fault not in applies):
                return None
            count = self._scenario[count_key]
            if count is None:
                return fault
            if count <= 0:
                return None
            self._scenario[count_key] = count - 1
            return fault

    def _record(self, rec):
        with self._lock:
            self._records.append(rec)

    def _finish(self, rec):
        with self._lock:
            if self._record_fh:
                self._record_fh.write(json.dumps(rec, sort_keys=True) + "\n")
                self._record_fh.flush()

    def _sleep(self, seconds):
        if seconds > 0:
            self._stop.wait(seconds)

    # ---------------------------------------------------------- request entry
    def _handle(self, h):
        service = h.server.service
        headers = {}
        for k, v in h.headers.items():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v
        rec = {"service": service, "method": h.command, "path": h.path, "headers": headers,
               "body": "", "status": None, "t": round(self.now(), 6), "fault": None}
        self._record(rec)
        try:
            if self._stop.is_set():
                _add_fault(rec, "stopped")
                raise _Drop()
            try:
                body = h.read_body()
            except ValueError:
                _add_fault(rec, "request_too_large")
                h.close_connection = True
                self._send(h, rec, 413, b"", "text/plain")
                return
            rec["body"] = body.decode("utf-8", "replace")
            if service == "wireserver":
                self._wireserver(h, rec, body)
            else:
                self._imds(h, rec)
        except _Drop:
            rec["status"] = None
            h.close_connection = True
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            _add_fault(rec, "client_closed")
            h.close_connection = True
        except Exception as e:  # an emulator bug: say so loudly instead of a silent reset
            traceback.print_exc()
            _add_fault(rec, "emulator_error:%s" % type(e).__name__)
            h.close_connection = True
            if rec["status"] is None:
                try:
                    self._send(h, rec, 500, b"emulator error\n", "text/plain")
                except OSError:
                    pass
        finally:
            self._finish(rec)

    def _send(self, h, rec, status, body, ctype, headers=None, close=False):
        h.send_response(status)
        if body is not None:
            if ctype:
                h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if close:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        rec["status"] = status
        if body and h.command != "HEAD":
            h.wfile.write(body)

    def _stream(self, h, rec, status, ctype, prefix, filler, suffix, size):
        """Send a close-delimited body of about ``size`` bytes."""
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        rec["status"] = status
        h.wfile.write(prefix)
        sent = len(prefix)
        chunk = filler * (65536 // len(filler))
        while sent < size and not self._stop.is_set():
            h.wfile.write(chunk)
            sent += len(chunk)
        h.wfile.write(suffix)

    def _raw_response(self, h, rec, key, forever=None):
        """Answer with the next raw response text of ``key`` (or ``forever``), verbatim."""
        raw = self._take(key)
        if raw is None:
            raw = forever
        if raw is None:
            return
        _add_fault(rec, "raw_response")
        h.wfile.write(raw.encode("utf-8"))
        h.wfile.flush()
        raise _Drop()

    def _sequence_response(self, h, rec, entry, kind):
        """Apply a status-sequence entry; True when the request was answered."""
        if entry is None:
            return False
        _add_fault(rec, "status_sequence")
        if entry["status"] is None:
            _add_fault(rec, "drop")
            raise _Drop()
        status = entry["status"]
        if status == 200:
            return False
        body = entry["body"]
        if kind == "xml":
            data = body.encode("utf-8") if body is not None else _error_xml(
                _WS_ERROR_CODES.get(status, "Error"), "Injected status %d" % status)
            ctype = "text/xml; charset=utf-8"
        else:
            data = body.encode("utf-8") if body is not None else json.dumps(
                {"error": "Injected status %d" % status}).encode("utf-8")
            ctype = "application/json; charset=utf-8"
        self._send(h, rec, status, data, ctype, entry["headers"])
        return True

    # ---------------------------------------------------------- WireServer
    def _wireserver(self, h, rec, body):
        s = self._scenario
        if s["ws_delay"] > 0:
            _add_fault(rec, "delay")
            self._sleep(s["ws_delay"])
        if self._take_count("ws_drop"):
            _add_fault(rec, "drop")
            raise _Drop()
        self._raw_response(h, rec, "ws_raw_responses", s["ws_raw_forever"])
        if self._take_count("ws_interim"):
            _add_fault(rec, "interim")
            h.send_response_only(100)
            h.end_headers()
            h.send_response_only(103, "Early Hints")
            h.send_header("Link", "</machine>; rel=preload")
            h.end_headers()
        url = urlsplit(h.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        comp = query.get("comp", "").lower()
        path = url.path
        route = None
        if path == "/" and comp == "versions":
            route, method = "versions", "GET"
        elif path in ("/machine", "/machine/") and comp == "goalstate":
            route, method = "goalstate", "GET"
        elif path in ("/machine", "/machine/") and comp == "health":
            route, method = "health", "POST"
        elif path.startswith("/machine/") and comp in ("config", "certificates"):
            route, method = "config", "GET"
        if route is None:
            self._send(h, rec, 404, _error_xml("ResourceNotFound", "The requested resource was not found."),
                       "text/xml; charset=utf-8")
            return
        if h.command != method:
            self._send(h, rec, 405, _error_xml("MethodNotAllowed", "The method is not allowed."),
                       "text/xml; charset=utf-8", {"Allow": method})
            return
        entry = None
        if route in ("versions", "goalstate", "health"):
            entry = self._take(route + "_statuses")
            if entry is None and route != "versions":
                entry = s[route + "_forever"]
        if self._sequence_response(h, rec, entry, "xml"):
            return
        if route != "versions" and s["require_version_header"]:
            if not h.headers.get("x-ms-version"):
                _add_fault(rec, "missing_x_ms_version")
                self._send(h, rec, 400, _error_xml(
                    "MissingRequiredHeader", "An HTTP header that's mandatory for this request is not specified.",
                    "x-ms-version"), "text/xml; charset=utf-8")
                return
        getattr(self, "_ws_" + route)(h, rec, body, query)

    def _ws_versions(self, h, rec, body, query):
        doc = ('<?xml version="1.0" encoding="utf-8"?>\n<Versions>\n  <Preferred>\n'
               "    <Version>2015-04-05</Version>\n  </Preferred>\n  <Supported>\n")
        for v in ("2015-04-05", "2012-11-30", "2012-09-15", "2012-05-15", "2011-12-31",
                  "2011-10-15", "2011-08-31", "2011-04-07", "2010-12-15", "2010-28-10"):
            doc += "    <Version>%s</Version>\n" % v
        doc += "  </Supported>\n</Versions>\n"
        self._send(h, rec, 200, doc.encode("utf-8"), "text/xml; charset=utf-8")

    def _config_url(self, ids, kind):
        base = self._scenario["config_url_base"] or "http://" + self.wireserver_address
        inst = ids["instance_id"].replace("_", "%5F")
        if kind == "certificates":
            q = "comp=certificates&incarnation=%d" % ids["incarnation"]
        else:
            q = "comp=config&type=%s&incarnation=%d" % (kind, ids["incarnation"])
        return "%s/machine/%s/%s?%s" % (base.rstrip("/"), ids["container_id"], inst, q)

    def goal_state_xml(self, with_role_instance=True, variant=None):
        """The GoalState document for the current ids (str)."""
        with self._lock:
            ids = self._ids()
        n = ids["incarnation"]
        config_name = "%s.%d.%s.%d._%s.1.xml" % (ids["container_id"], n, ROLE_GUID, n,
                                                 self._scenario["computer_name"])
        configuration = "".join(
            "          <%s>%s</%s>\n" % (tag, _x(self._config_url(ids, kind)), tag)
            for tag, kind in (("HostingEnvironmentConfig", "hostingEnvironmentConfig"),
                              ("SharedConfig", "sharedConfig"),
                              ("ExtensionsConfig", "extensionsConfig"),
                              ("FullConfig", "fullConfig")))
        configuration += "          <ConfigName>%s</ConfigName>\n" % _x(config_name)
        role = (
            "    <RoleInstanceList>\n      <RoleInstance>\n"
            "        <InstanceId>%s</InstanceId>\n        <State>Started</State>\n"
            "        <Configuration>\n%s        </Configuration>\n"
            "      </RoleInstance>\n    </RoleInstanceList>\n" % (_x(ids["instance_id"]), configuration))
        if not with_role_instance:
            role = ""
        machine = ("  <Machine>\n    <ExpectedState>Started</ExpectedState>\n"
                   "    <StopRolesDeadlineHint>300000</StopRolesDeadlineHint>\n"
                   "    <LBProbePorts>\n      <Port>16001</Port>\n    </LBProbePorts>\n"
                   "    <ExpectHealthReport>FALSE</ExpectHealthReport>\n  </Machine>\n")
        head = ('<?xml version="1.0" encoding="utf-8"?>\n'
                '<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                'xsi:noNamespaceSchemaLocation="goalstate10.xsd">\n')
        if variant == "unknown_elements":
            # Reordered, extra elements/attributes/comments, whitespace around values.
            role = role.replace("<InstanceId>%s</InstanceId>" % _x(ids["instance_id"]),
                                '<InstanceId xsi:type="string">\n          %s\n        </InstanceId>'
                                '\n        <FutureField a="1"><Nested/></FutureField>'
                                % _x(ids["instance_id"]))
            return (
                '<?xml version="1.0" encoding="utf-8" standalone="yes"?>\n'
                "<!-- emulator: unknown_elements variant -->\n"
                '<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                'xsi:noNamespaceSchemaLocation="goalstate10.xsd" xmlns:ext="urn:example:ext" ext:flavour="x">\n'
                "  <ext:Telemetry enabled=\"true\">on</ext:Telemetry>\n"
                "  <Container generation=\"7\">\n    <RemoteAccessInfo/>\n"
                "    <ContainerId  >\n      %s\n    </ContainerId>\n%s  </Container>\n"
                "  <Incarnation xsi:nil=\"false\">  %d  </Incarnation>\n"
                "  <Version>2012-11-30</Version>\n%s"
                "  <UnknownTrailer><![CDATA[<not>xml</not>]]></UnknownTrailer>\n"
                "</GoalState>\n" % (_x(ids["container_id"]), role, n, machine))
        return (head + "  <Version>2012-11-30</Version>\n  <Incarnation>%d</Incarnation>\n%s"
                "  <Container>\n    <ContainerId>%s</ContainerId>\n%s  </Container>\n</GoalState>\n"
                % (n, machine, _x(ids["container_id"]), role))

    def _ws_goalstate(self, h, rec, body, query):
        with_role = True
        if self._take_count("roleinstance_missing"):
            _add_fault(rec, "roleinstance_missing")
            with_role = False
        fault = self._take_body_fault("goalstate_body", "goalstate_body_count")
        ctype = "text/xml; charset=utf-8"
        if fault:
            _add_fault(rec, "goalstate_body:" + fault)
        if fault == "unknown_elements":
            doc = self.goal_state_xml(with_role, "unknown_elements").encode("utf-8")
            self._send(h, rec, 200, doc, ctype)
        elif fault == "truncated":
            doc = self.goal_state_xml(with_role).encode("utf-8")
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(doc)))
            h.end_headers()
            rec["status"] = 200
            h.wfile.write(doc[:len(doc) // 2])
            h.close_connection = True
        elif fault == "malformed":
            doc = self.goal_state_xml(with_role)
            doc = doc.replace("</ContainerId>", "</ContainerID>").replace("</GoalState>", "<GoalState")
            self._send(h, rec, 200, doc.encode("utf-8"), ctype)
        elif fault == "oversized":
            doc = self.goal_state_xml(with_role).encode("utf-8")
            cut = doc.index(b"<Container>")
            self._stream(h, rec, 200, ctype, doc[:cut] + b"<!-- ", b"padding ", b" -->\n" + doc[cut:],
                         self._scenario["oversized_bytes"])
        elif fault in ("utf7_encoding", "unknown_encoding"):
            name = "utf-7" if fault == "utf7_encoding" else "x-no-such-encoding"
            doc = self.goal_state_xml(with_role).replace('encoding="utf-8"', 'encoding="%s"' % name, 1)
            self._send(h, rec, 200, doc.encode("utf-8"), ctype)
        elif fault == "deeply_nested":
            doc = self.goal_state_xml(with_role).encode("utf-8")
            cut = doc.index(b"<Container>")
            self._send(h, rec, 200, doc[:cut] + b"<a>" * DEEPLY_NESTED, ctype)
        elif fault == "superscript_incarnation":
            doc = self.goal_state_xml(with_role)
            start = doc.index("<Incarnation>") + len("<Incarnation>")
            doc = doc[:start] + "\u00b9" + doc[doc.index("</Incarnation>"):]
            self._send(h, rec, 200, doc.encode("utf-8"), ctype)
        elif fault == "c1_container_id":
            doc = self.goal_state_xml(with_role).replace("<ContainerId>", "<ContainerId>\u009b2J", 1)
            self._send(h, rec, 200, doc.encode("utf-8"), ctype)
        elif fault == "doctype_bomb":
            ents = '  <!ENTITY lol0 "lol">\n' + "".join(
                '  <!ENTITY lol%d "%s">\n' % (i, ("&lol%d;" % (i - 1)) * 10) for i in range(1, 10))
            doc = self.goal_state_xml(with_role).replace(
                "<GoalState ", "<!DOCTYPE GoalState [\n%s]>\n<GoalState " % ents, 1)
            doc = doc.replace("<Version>2012-11-30</Version>", "<Version>&lol9;</Version>", 1)
            self._send(h, rec, 200, doc.encode("utf-8"), ctype)
        else:
            self._send(h, rec, 200, self.goal_state_xml(with_role).encode("utf-8"), ctype)

    def _ws_config(self, h, rec, body, query):
        with self._lock:
            ids = self._ids()
        inc = query.get("incarnation")
        if inc is not None and inc != str(ids["incarnation"]):
            _add_fault(rec, "stale_config")
            self._send(h, rec, 410, _error_xml("ResourceNotAvailable", _GONE_MESSAGE),
                       "text/xml; charset=utf-8")
            return
        kind = query.get("type", "") if query.get("comp") == "config" else "certificates"
        s = self._scenario
        n = ids["incarnation"]
        role_instance = "_" + s["computer_name"]
        if kind == "hostingEnvironmentConfig":
            doc = (
                '<?xml version="1.0" encoding="utf-8"?>\n'
                '<HostingEnvironmentConfig version="1.0.0.0" goalStateIncarnation="%d">\n'
                '  <StoredCertificates />\n'
                '  <Deployment name="%s" guid="{%s}" incarnation="0" isNonCancellableTopologyChangeEnabled="false">\n'
                '    <Service name="%s" guid="{00000000-0000-0000-0000-000000000000}" />\n'
                '    <ServiceInstance name="%s.0" guid="{%s}" />\n'
                '  </Deployment>\n'
                '  <Incarnation number="%d" instance="%s" guid="{%s}" />\n'
                '  <Role guid="{%s}" name="%s" hostingEnvironmentVersion="1" software="" '
                'softwareType="ApplicationPackage" entryPoint="" parameters="" settleTimeSeconds="10" />\n'
                '  <HostingEnvironmentSettings name="full" Runtime="rd_fabric_stable.RuntimePackage.zip">\n'
                '    <CAS mode="full" />\n    <PrivilegeLevel mode="max" />\n'
                '    <AdditionalProperties><CgiHandlers></CgiHandlers></AdditionalProperties>\n'
                '  </HostingEnvironmentSettings>\n'
                '  <ApplicationSettings />\n  <ResourceReferences />\n'
                '</HostingEnvironmentConfig>\n'
                % (n, ids["container_id"].replace("-", ""), DEPLOYMENT_GUID, _x(s["name"]),
                   ids["container_id"].replace("-", ""), DEPLOYMENT_GUID, n, _x(role_instance),
                   ids["container_id"], ROLE_GUID, _x(s["name"])))
        elif kind == "sharedConfig":
            doc = (
                '<?xml version="1.0" encoding="utf-8"?>\n'
                '<SharedConfig version="1.0.0.0" goalStateIncarnation="%d">\n'
                '  <Deployment name="%s" guid="{%s}" incarnation="0" isNonCancellableTopologyChangeEnabled="false">\n'
                '    <Service name="%s" guid="{00000000-0000-0000-0000-000000000000}" />\n'
                '    <ServiceInstance name="%s.0" guid="{%s}" />\n'
                '  </Deployment>\n'
                '  <Incarnation number="%d" instance="%s" guid="{%s}" />\n'
                '  <Role guid="{%s}" name="%s" settleTimeSeconds="10" />\n'
                '  <LoadBalancerSettings timeoutSeconds="0" waitLoadBalancerProbeCount="8">\n'
                '    <Probes>\n      <Probe name="D41D8CD98F00B204E9800998ECF8427E" />\n    </Probes>\n'
                '  </LoadBalancerSettings>\n'
                '  <OutputEndpoints />\n'
                '  <Instances>\n'
                '    <Instance id="%s" address="%s">\n'
                '      <FaultDomains randomId="0" updateId="0" updateCount="0" />\n'
                '      <InputEndpoints />\n'
                '    </Instance>\n'
                '  </Instances>\n'
                '</SharedConfig>\n'
                % (n, ids["container_id"].replace("-", ""), DEPLOYMENT_GUID, _x(s["name"]),
                   ids["container_id"].replace("-", ""), DEPLOYMENT_GUID, n, _x(role_instance),
                   ids["container_id"], ROLE_GUID, _x(s["name"]), _x(role_instance), _x(s["private_ip"])))
        elif kind == "extensionsConfig":
            doc = (
                '<?xml version="1.0" encoding="utf-8"?>\n'
                '<Extensions version="1.0.0.0" goalStateIncarnation="%d">\n'
                '  <GuestAgentExtension xmlns:i="http://www.w3.org/2001/XMLSchema-instance">\n'
                '    <GAFamilies />\n  </GuestAgentExtension>\n'
                '  <Plugins />\n  <PluginSettings />\n'
                '  <StatusUploadBlob statusBlobType="BlockBlob"></StatusUploadBlob>\n'
                '</Extensions>\n' % n)
        else:
            # fullConfig and certificates: this VM has none (no secrets, no extensions).
            self._send(h, rec, 404, _error_xml("ResourceNotFound", "The requested resource was not found."),
                       "text/xml; charset=utf-8")
            return
        self._send(h, rec, 200, doc.encode("utf-8"), "text/xml; charset=utf-8")

    def _bad_health(self, h, rec, why):
        _add_fault(rec, "invalid_health")
        self._send(h, rec, 400, _error_xml("BadRequest", "The health report is not valid.", why),
                   "text/xml; charset=utf-8")

    def _ws_health(self, h, rec, body, query):
        if self._take_count("health_invalid_container"):
            _add_fault(rec, "invalid_container")
            with self._lock:
                self._remember_ids()
                self._scenario["incarnation"] += 1
                self._scenario["container_id"] = str(uuid.uuid4())
                self._remember_ids()
            self._send(h, rec, 400, _error_xml("InvalidContainerConfiguration",
                                               "The specified container configuration is invalid."),
                       "text/xml; charset=utf-8")
            return
        try:
            report = parse_health(body)
        except ValueError as e:
            self._bad_health(h, rec, str(e))
            return
        if report["description"] is not None and \
                len(report["description"].encode("utf-8")) > HEALTH_DESCRIPTION_LIMIT:
            # The field-observed reaction to an over-long Description (waagent #2017).
            _add_fault(rec, "description_too_long")
            self._send(h, rec, 500, _error_xml("InternalError", "The server encountered an internal error."),
                       "text/xml; charset=utf-8")
            return
        with self._lock:
            if self._take_count("bump_incarnation_on_health"):
                _add_fault(rec, "bump_incarnation")
                self._remember_ids()
                self._scenario["incarnation"] += 1
                if self._scenario["bump_container"]:
                    self._scenario["container_id"] = str(uuid.uuid4())
                self._remember_ids()
            ids = self._ids()
            known = {k: set(v) for k, v in self._known.items()}
        if report["incarnation"] != ids["incarnation"]:
            stale = "GoalStateIncarnation %d is not the current %d" % (report["incarnation"], ids["incarnation"])
        else:
            stale = None
            for key, label in (("container_id", "ContainerId"), ("instance_id", "InstanceId")):
                if report[key] != ids[key]:
                    if report[key] in known[key]:
                        stale = "%s %s is stale" % (label, report[key])
                    else:
                        self._bad_health(h, rec, "unknown %s %r" % (label, report[key]))
                        return
        if stale:
            _add_fault(rec, "stale_health")
            self._send(h, rec, 410, _error_xml("ResourceNotAvailable", _GONE_MESSAGE),
                       "text/xml; charset=utf-8")
            return
        report["t"] = rec["t"]
        with self._lock:
            self._health.append(report)
        self._send(h, rec, 200, b"", None)

    # ---------------------------------------------------------- IMDS
    def _imds_error(self, h, rec, status, message, extra=None, headers=None):
        doc = {"error": message}
        doc.update(extra or {})
        self._send(h, rec, status, json.dumps(doc).encode("utf-8"), "application/json; charset=utf-8", headers)

    def instance_document(self, api_version=None, extended=False):
        """The IMDS instance document (dict) as served for ``api_version``."""
        with self._lock:
            s = copy.deepcopy(self._scenario)
        rid = ("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachineScaleSets/%s"
               % (s["subscription_id"], s["resource_group"], s["vm_scale_set_name"]))
        compute = {
            "additionalCapabilities": {"hibernationEnabled": "false"},
            "azEnvironment": "AzurePublicCloud",
            "customData": "",
            "evictionPolicy": "",
            "extendedLocation": {"name": "", "type": ""},
            "host": {"id": ""},
            "hostGroup": {"id": ""},
            "isHostCompatibilityLayerVm": "false",
            "licenseType": "",
            "location": s["location"],
            "name": s["name"],
            "offer": "",
            "osProfile": {
                "adminUsername": s["admin_username"],
                "computerName": s["computer_name"],
                "disablePasswordAuthentication": s["disable_password_authentication"],
            },
            "osType": "Linux",
            "placementGroupId": "a3c5e7f9-0b1d-4f3a-8c6e-2d4f6a8b0c1e",
            "plan": {"name": "", "product": "", "publisher": ""},
            "platformFaultDomain": "0",
            "platformSubFaultDomain": "",
            "platformUpdateDomain": "0",
            "priority": "",
            "provider": "Microsoft.Compute",
            "publicKeys": [{"keyData": k, "path": (s["public_key_paths"][i] if i < len(s["public_key_paths"])
                                                   else "/home/%s/.ssh/authorized_keys" % s["admin_username"])}
                           for i, k in enumerate(s["public_keys"])],
            "publisher": "",
            "resourceGroupName": s["resource_group"],
            "resourceId": rid + "/virtualMachines/" + s["name"].rsplit("_", 1)[-1],
            "securityProfile": {"encryptionAtHost": "false", "secureBootEnabled": "false",
                                "securityType": "", "virtualTpmEnabled": "false"},
            "sku": "",
            "storageProfile": {
                "dataDisks": [],
                "imageReference": {"id": "", "offer": "", "publisher": "", "sku": "", "version": ""},
                "osDisk": {"caching": "ReadWrite", "createOption": s["os_disk_create_option"], "diffDiskSettings": {"option": ""},
                           "diskSizeGB": "30", "encryptionSettings": {"enabled": "false"}, "image": {"uri": ""},
                           "managedDisk": {"id": "", "storageAccountType": "Standard_LRS"},
                           "name": s["name"] + "_OsDisk_1", "osType": "Linux", "vhd": {"uri": ""},
                           "writeAcceleratorEnabled": "false"},
                "resourceDisk": {"size": "16384"},
            },
            "subscriptionId": s["subscription_id"],
            "tags": "",
            "tagsList": [],
            "userData": s["user_data"],
            "version": "",
            "virtualMachineScaleSet": {"id": rid},
            "vmId": s["vm_id"],
            "vmScaleSetName": s["vm_scale_set_name"],
            "vmSize": s["vm_size"],
            "zone": "",
        }
        if s["specialized"]:
            compute["osProfile"].update(adminUsername="", computerName="", disablePasswordAuthentication="")
            compute["publicKeys"] = []
            compute["storageProfile"]["osDisk"]["createOption"] = "Attach"
        if api_version is not None:
            if api_version < "2020-07-15":
                del compute["osProfile"]
            elif api_version < "2020-10-01":
                del compute["osProfile"]["disablePasswordAuthentication"]
            if api_version < "2021-01-01":
                del compute["userData"]
        network = {"interface": [{
            "ipv4": {"ipAddress": [{"privateIpAddress": s["private_ip"], "publicIpAddress": s["public_ip"]}],
                     "subnet": [{"address": s["subnet_address"], "prefix": s["subnet_prefix"]}]},
            "ipv6": {"ipAddress": []},
            "macAddress": s["mac"],
        }]}
        doc = {"compute": compute, "network": network}
        if extended:
            doc["extended"] = {"compute": {"hasCustomData": "false", "ppsType": s["pps_type"]}}
        return _deep_merge(doc, s["imds_override"])

    def _imds(self, h, rec):
        s = self._scenario
        with self._lock:
            if self._first_imds is None:
                self._first_imds = rec["t"]
        if s["imds_delay"] > 0:
            _add_fault(rec, "delay")
            self._sleep(s["imds_delay"])
        if self._take_count("imds_drop"):
            _add_fault(rec, "drop")
            raise _Drop()
        self._raw_response(h, rec, "imds_raw_responses")
        origin = self._first_imds if s["imds_gone_from"] == "first_request" else 0.0
        if self.now() - origin < s["imds_gone_for"]:
            _add_fault(rec, "imds_gone")
            self._imds_error(h, rec, 410, "Gone. The service is temporarily unavailable; "
                             "retry after some time for a max of 70 seconds.")
            return
        entry = self._take("imds_statuses")
        if entry is None:
            entry = s["imds_forever"]
        if self._sequence_response(h, rec, entry, "json"):
            return
        limit = s["imds_rate_limit"]
        if limit:
            now = self.now()
            with self._lock:
                self._imds_times = [t for t in self._imds_times if now - t < 1.0]
                self._imds_times.append(now)
                over = len(self._imds_times) > limit
            if over:
                _add_fault(rec, "rate_limited")
                self._imds_error(h, rec, 429, "Too many requests")
                return
        if "x-forwarded-for" in rec["headers"]:
            self._imds_error(h, rec, 400, "Bad request. X-Forwarded-For header is not allowed")
            return
        if (h.headers.get("Metadata") or "").strip().lower() != "true":
            self._imds_error(h, rec, 400, "Bad request. Required metadata header not specified")
            return
        url = urlsplit(h.path)
        pairs = parse_qsl(url.query, keep_blank_values=True)
        names = [k for k, _v in pairs]
        if len(names) != len(set(names)):
            self._imds_error(h, rec, 400, "Bad request. Query parameters must not be duplicated")
            return
        query = dict(pairs)
        path = url.path.rstrip("/") or "/"
        if path == "/metadata/versions":
            if h.command != "GET":
                self._imds_error(h, rec, 405, "Method not allowed")
                return
            self._send(h, rec, 200, json.dumps({"apiVersions": IMDS_API_VERSIONS}).encode("utf-8"),
                       "application/json; charset=utf-8")
            return
        if path != "/metadata/instance" and not path.startswith("/metadata/instance/"):
            self._imds_error(h, rec, 404, "Not found")
            return
        if h.command != "GET":
            self._imds_error(h, rec, 405, "Method not allowed")
            return
        api = query.get("api-version")
        newest = {"newest-versions": list(reversed(IMDS_API_VERSIONS[-3:]))}
        if not api:
            self._imds_error(h, rec, 400, "Bad request. api-version was not specified in the request. "
                             "For more information refer to aka.ms/azureimds", newest)
            return
        if api not in IMDS_API_VERSIONS:
            self._imds_error(h, rec, 400, "Bad request. api-version is invalid or was not specified in "
                             "the request. For more information refer to aka.ms/azureimds", newest)
            return
        fmt = query.get("format", "json")
        if fmt not in ("json", "text"):
            self._imds_error(h, rec, 400, "Bad request. Unsupported format %s" % fmt)
            return
        doc = self.instance_document(api, query.get("extended") == "true")
        applies = IMDS_BODY_FAULTS if fmt == "json" else ("no_osprofile", "empty_computer_name")
        fault = self._take_body_fault("imds_body", "imds_body_count", applies)
        if fault:
            _add_fault(rec, "imds_body:" + fault)
        if fault == "no_osprofile":
            doc["compute"].pop("osProfile", None)
        elif fault == "empty_computer_name" and "osProfile" in doc["compute"]:
            doc["compute"]["osProfile"]["computerName"] = ""
        node = doc
        for part in path.split("/")[3:]:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                self._imds_error(h, rec, 404, "Not found")
                return
        ctype_json = "application/json; charset=utf-8"
        if fmt == "text":
            if isinstance(node, dict):
                text = "\n".join(k + ("/" if isinstance(v, (dict, list)) else "") for k, v in node.items())
            elif isinstance(node, list):
                text = "\n".join("%d/" % i for i in range(len(node)))
            else:
                text = str(node)
            self._send(h, rec, 200, text.encode("utf-8"), "text/plain; charset=utf-8")
            return
        if not isinstance(node, (dict, list)):
            self._imds_error(h, rec, 400, "Bad request. The format parameter must be text for leaf nodes. "
                             "Use format=text")
            return
        data = json.dumps(node).encode("utf-8")
        if fault == "malformed":
            self._send(h, rec, 200, data[:len(data) // 2] + b",,}", ctype_json)
        elif fault == "deeply_nested":
            self._send(h, rec, 200, b"[" * 995, ctype_json)
        elif fault == "huge_number":
            self._send(h, rec, 200, data[:-1] + b', "n": ' + b"9" * 5000 + b"}", ctype_json)
        elif fault == "oversized":
            prefix = data[:-1] + b', "padding": "'
            self._stream(h, rec, 200, ctype_json, prefix, b"x", b'"}', self._scenario["oversized_bytes"])
        else:
            self._send(h, rec, 200, data, ctype_json)


# ------------------------------------------------------------------ Health parsing

def parse_health(body):
    """Validate a Health document like the WireServer; return the report dict or raise ValueError."""
    if not isinstance(body, bytes):
        body = body.encode("utf-8")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise ValueError("DOCTYPE/ENTITY declarations are not allowed")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as e:
        raise ValueError("malformed XML: %s" % e)
    if root.tag != "Health":
        raise ValueError("root element is %r, expected 'Health'" % root.tag)

    def one(parent, path, required=True):
        found = parent.findall(path)
        if len(found) > 1:
            raise ValueError("more than one %s" % path)
        if not found:
            if required:
                raise ValueError("missing %s" % path)
            return None
        return found[0]

    def text(parent, path, required=True):
        el = one(parent, path, required)
        if el is None:
            return None
        if len(el):
            raise ValueError("%s must contain text, not elements" % path)
        value = (el.text or "").strip()
        if required and not value:
            raise ValueError("empty %s" % path)
        return value

    inc_text = text(root, "GoalStateIncarnation")
    if not inc_text.isdigit():
        raise ValueError("GoalStateIncarnation %r is not a number" % inc_text)
    container = one(root, "Container")
    container_id = text(container, "ContainerId")
    role = one(container, "RoleInstanceList/Role")
    instance_id = text(role, "InstanceId")
    health = one(role, "Health")
    state = text(health, "State")
    if state not in ("Ready", "NotReady"):
        raise ValueError("State %r is not Ready or NotReady" % state)
    substatus = description = None
    details = one(health, "Details", required=False)
    if details is not None:
        substatus = text(details, "SubStatus")
        if substatus not in ("Provisioning", "ProvisioningFailed"):
            raise ValueError("SubStatus %r is not Provisioning or ProvisioningFailed" % substatus)
        el = one(details, "Description", required=False)
        if el is not None:
            if len(el):
                raise ValueError("Description must contain text, not elements")
            description = el.text or ""
    return {"state": state, "incarnation": int(inc_text), "container_id": container_id,
            "instance_id": instance_id, "substatus": substatus, "description": description,
            "fields": encoded_fields(description)}


def encoded_fields(description):
    """A Description in the encoded report format cloud-init and azure-init
    send (``result=error|reason=...|agent=...|vm_id=...|timestamp=...``) ->
    {key: value}; None when it is absent or not in that format."""
    if not description or not description.startswith("result="):
        return None
    fields = {}
    for part in description.split("|"):
        key, sep, value = part.partition("=")
        if not sep or not key or key in fields:
            return None
        fields[key] = value
    return fields


# ------------------------------------------------------------------ CLI

class _ControlServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _ControlHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fabric-emulator-control"
    sys_version = ""

    def log_message(self, fmt, *args):
        pass

    def _reply(self, status, obj):
        data = (json.dumps(obj) + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        fab = self.server.fabric
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        routes = {
            "/requests": lambda: fab.requests(query.get("service")),
            "/health-reports": fab.health_reports,
            "/goal-state-ids": fab.goal_state_ids,
            "/scenario": fab.scenario,
            "/addresses": lambda: _addresses(fab, self.server),
        }
        if url.path not in routes:
            self._reply(404, {"error": "unknown path %s" % url.path})
            return
        self._reply(200, routes[url.path]())

    def do_POST(self):
        fab = self.server.fabric
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, MAX_REQUEST_BODY))
        if urlsplit(self.path).path != "/configure":
            self._reply(404, {"error": "unknown path"})
            return
        try:
            changes = json.loads(raw.decode("utf-8") or "{}")
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object")
            fab.configure(**changes)
        except (ValueError, TypeError) as e:
            self._reply(400, {"error": str(e)})
            return
        self._reply(200, {"ok": True, "goal_state_ids": fab.goal_state_ids()})


def _addresses(fab, control=None):
    out = {"wireserver": fab.wireserver_address, "imds": fab.imds_address, "pid": os.getpid()}
    if control is not None:
        out["control"] = "%s:%d" % control.server_address[:2]
    return out


def _split_addr(text, what):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("%s must be HOST:PORT, got %r" % (what, text))
    return host, int(port)


def _help_epilog():
    lines = ["scenario keys (JSON object; every key optional):"]
    for key, default, kind, text in SCENARIO_KEYS:
        lines.append("  %-32s %s (default %s)" % (key, text, json.dumps(default)))
    lines += ["", STATUSES_HELP, "",
              "Health judging: malformed/incomplete Health XML, DOCTYPE, bad State/SubStatus or an",
              "unknown ContainerId/InstanceId -> 400 Error; a Description over 4096 bytes -> 500",
              "(as observed in the field); a GoalStateIncarnation other than the current one, or a",
              "ContainerId/InstanceId that was current earlier -> 410 Error/ResourceNotAvailable.",
              "",
              "Records (Fabric.requests(), GET /requests, --record JSON lines): service, method,",
              "path (with query), headers (lower-case keys), body, status (None: dropped, or still",
              "in flight), t (seconds since start, at arrival), fault (comma-separated or null).",
              "--ready-file: one JSON line {wireserver, imds, pid[, control]} once bound; with",
              "ws_refuse_for the WireServer port is bound (known) but refuses until the time passed.",
              "",
              "control API (--control): GET /requests[?service=], GET /health-reports,",
              "GET /goal-state-ids, GET /scenario, GET /addresses, POST /configure (JSON changes).",
              "Runs until SIGTERM/SIGINT, then exits 0."]
    return "\n".join(lines)


def _write_atomic(path, text):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="fabric_emulator.py",
        description="Azure fabric emulator: WireServer + IMDS on loopback, with fault injection.",
        epilog=_help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wireserver", default="127.0.0.1:0", metavar="HOST:PORT",
                    help="WireServer listen address (port 0 = ephemeral; default %(default)s)")
    ap.add_argument("--imds", default="127.0.0.1:0", metavar="HOST:PORT",
                    help="IMDS listen address (default %(default)s)")
    ap.add_argument("--scenario", default=None, metavar="JSON|@FILE", help="scenario object (see below)")
    ap.add_argument("--record", default=None, metavar="FILE.jsonl",
                    help="append every request record as one JSON line (flushed per line)")
    ap.add_argument("--ready-file", default=None, metavar="FILE",
                    help="write one JSON line with the bound addresses once serving")
    ap.add_argument("--control", default=None, metavar="HOST:PORT", help="serve the control API here")
    ap.add_argument("-v", "--verbose", action="store_true", help="log each request to stderr")
    args = ap.parse_args(argv)

    def fail(msg):
        print("fabric_emulator: error: %s" % msg, file=sys.stderr)
        return 2

    try:
        ws_host, ws_port = _split_addr(args.wireserver, "--wireserver")
        imds_host, imds_port = _split_addr(args.imds, "--imds")
        control_addr = _split_addr(args.control, "--control") if args.control else None
        scenario = {}
        if args.scenario:
            raw = args.scenario
            if raw.startswith("@"):
                with open(raw[1:], encoding="utf-8") as f:
                    raw = f.read()
            scenario = json.loads(raw)
            if not isinstance(scenario, dict):
                raise ValueError("--scenario must be a JSON object")
        log = (lambda m: print("fabric_emulator: " + m, file=sys.stderr, flush=True)) if args.verbose else None
        fab = Fabric(scenario, host=ws_host, wireserver_port=ws_port, imds_port=imds_port,
                     record_file=args.record, log=log, imds_host=imds_host)
    except (ValueError, OSError) as e:
        return fail(str(e))

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    try:
        fab.start()
    except OSError as e:
        return fail("cannot bind: %s" % e)
    control = None
    try:
        if control_addr:
            control = _ControlServer(control_addr, _ControlHandler)
            control.fabric = fab
            threading.Thread(target=control.serve_forever, kwargs={"poll_interval": 0.1},
                             daemon=True).start()
        info = _addresses(fab, control)
        if args.ready_file:
            _write_atomic(args.ready_file, json.dumps(info) + "\n")
        print("fabric_emulator: serving %s" % json.dumps(info), flush=True)
        while not done.wait(0.5):
            pass
    except OSError as e:
        fab.stop()
        return fail(str(e))
    if control is not None:
        control.shutdown()
        control.server_close()
    fab.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
