"""What the agent reads from and changes on the machine: DMI identity, the
host name, the DHCP client.  With ``--root`` only files under the root are
touched; no command runs and no kernel state changes.

Commands are always run as argument lists (never through a shell), and only
with values that passed validation.
"""

import os

from azure_firstboot import log, protocol
from azure_firstboot.state import describe, read_bytes, read_text, write_atomic

DMI = "/sys/class/dmi/id/"


class Identity(object):
    __slots__ = ("on_azure", "asset_tag", "vm_id", "problem")

    def __init__(self, on_azure, asset_tag, vm_id, problem):
        self.on_azure = on_azure
        self.asset_tag = asset_tag
        self.vm_id = vm_id
        self.problem = problem


def read_identity(paths):
    try:
        tag = (read_text(paths(DMI + "chassis_asset_tag"), 4096) or "").strip()
    except OSError:
        tag = ""
    try:
        raw = read_text(paths(DMI + "product_uuid"), 4096)
    except OSError as exc:
        # "(not root?)" only when that is the cause: product_uuid is root-only
        hint = " (not root?)" if isinstance(exc, PermissionError) and os.geteuid() != 0 else ""
        raw, problem = None, "cannot read %s: %s%s" % (exc.filename, exc.strerror or exc, hint)
    else:
        problem = "%s does not exist" % paths(DMI + "product_uuid")
    if raw is None:
        vm_id = None
    else:
        vm_id = protocol.normalize_vm_id(raw)
        problem = None if vm_id else "%s does not hold a UUID: %r" % (
            paths(DMI + "product_uuid"), raw.strip()[:60])
    return Identity(tag == protocol.AZURE_ASSET_TAG, tag, vm_id, problem)


def firmware_is_uefi(paths):
    """Gen2 (UEFI) rather than Gen1 (BIOS): /sys/firmware/efi or /dev/efi
    exists (how cloud-init and azure-init tell them apart)."""
    return os.path.exists(paths("/sys/firmware/efi")) or os.path.exists(paths("/dev/efi"))


# ----------------------------------------------------------------- commands

def _which(name):
    for directory in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


which = _which  # for the units (user: visudo)


def run(argv, timeout=30, stdin=None, raw=False):
    """Run a command: an argument list, never a shell.  Returns (ok, its
    stdout+stderr as one line of at most 300 characters), or with ``raw``
    (ok, the whole output, up to 64 KiB, as text).  ``stdin`` (bytes) is fed
    to its standard input, the way secrets travel (never on a command line);
    without it the command reads /dev/null.  Killed after ``timeout`` seconds.

    fork + exec by hand, not the subprocess module: its import (locale, re,
    enum, threading, selectors) cost every unit that ran a command ~0.1 s
    under QEMU/TCG and half again a bare interpreter's peak RSS."""
    import _signal
    import select
    import time

    path = argv[0] if "/" in argv[0] else _which(argv[0])
    if path is None:
        return False, "%s: not found" % argv[0]
    rfd, wfd = os.pipe()
    in_r, in_w = os.pipe() if stdin is not None else (None, None)
    try:
        pid = os.fork()
    except OSError as exc:
        for fd in (rfd, wfd, in_r, in_w):
            if fd is not None:
                os.close(fd)
        return False, "%s: %s" % (argv[0], exc.strerror)
    if pid == 0:  # child: only async-signal-safe steps, then exec
        try:
            # Python ignores SIGPIPE and SIGXFSZ; an exec'd command must not inherit that.
            for name in ("SIGPIPE", "SIGXFSZ"):
                if hasattr(_signal, name):
                    _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
            source = in_r if stdin is not None else os.open("/dev/null", os.O_RDONLY)
            os.dup2(source, 0)
            os.dup2(wfd, 1)
            os.dup2(wfd, 2)
            os.closerange(3, 1024)
            os.execv(path, list(argv))
        finally:
            os._exit(127)
    os.close(wfd)
    writing = []
    if stdin is not None:
        os.close(in_r)
        os.set_blocking(in_w, False)
        writing = [in_w]
        pending = memoryview(stdin)
    out, size, end = [], 0, time.monotonic() + timeout
    timed_out = False
    try:
        while rfd is not None:  # until the output ends (EOF)
            left = end - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            readable, writable, _ = select.select([rfd], writing, [], left)
            if writable:
                try:
                    pending = pending[os.write(in_w, pending[:65536]):]
                except OSError:  # the command closed its stdin: it has what it wanted
                    pending = pending[:0]
                if not pending:
                    os.close(in_w)
                    writing = []
            if readable:
                chunk = os.read(rfd, 65536)
                if not chunk:
                    os.close(rfd)
                    rfd = None
                elif size < 65536:
                    out.append(chunk)
                    size += len(chunk)
        while not timed_out:  # output closed: wait for the exit, within the same timeout
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() >= end:
                timed_out = True
            else:
                time.sleep(0.01)
        if timed_out:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return False, "%s timed out after %d s" % (" ".join(argv), timeout)
    finally:
        if rfd is not None:
            os.close(rfd)
        for fd in writing:
            os.close(fd)
    text = b"".join(out)[:65536].decode("utf-8", "replace")
    if not raw:
        text = " ".join(text.split())[:300]
    ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    if not ok and not text.strip():
        text = "exit status %d" % (os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1)
    return ok, text


# ----------------------------------------------------------------- sshd

SSHD_PID_FILES = ("/run/sshd.pid", "/var/run/sshd.pid")


def _proc_status(pid):
    fields = {}
    for line in (read_text("/proc/%d/status" % pid, 65536) or "").splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def sshd_listener_pid(pid_files=SSHD_PID_FILES):
    """The PID of the running sshd listener, or None: the number in its PID
    file, checked in /proc (named sshd, started by PID 1), so a stale file
    naming another process is never trusted."""
    for path in pid_files:
        try:
            text = (read_text(path, 64) or "").strip()
        except OSError:
            continue
        pid = protocol.wire_number(text, 10)
        if pid is None:
            continue
        try:
            status = _proc_status(pid)
        except OSError:
            continue
        if status.get("Name") == "sshd" and status.get("PPid") == "1":
            return pid
    return None


def reload_sshd(pid_files=SSHD_PID_FILES):
    """Make a running sshd read its configuration again: SIGHUP to the
    listener, which re-executes itself (what ssh.service's ExecReload does,
    without a systemctl process and a reload job that report-ready, ordered
    after ssh.service, would wait for: ~0.9 s of the first boot under TCG).
    Its "sshd -t" is left out on purpose: this sshd passed that check (or its
    own at start) before the one change since, our drop-in of a
    PasswordAuthentication and a KbdInteractiveAuthentication line, valid
    everywhere, also inside Match.
    Returns one line for the record."""
    import _signal

    pid = sshd_listener_pid(pid_files)
    if pid is None:
        return "sshd not running (reads it when it starts)"
    try:
        os.kill(pid, _signal.SIGHUP)
    except OSError as exc:
        return "sshd (PID %d) not reloaded: %s" % (pid, describe(exc))
    return "sshd (PID %d) reloaded" % pid


# ----------------------------------------------------------------- hostname

HOSTS_LIMIT = 1024 * 1024
DHCLIENT_CONF_LIMIT = 1024 * 1024
_OWNED_HOSTS_BYTES = frozenset(range(0x20, 0x7f)) | {0x09}


def hosts_with_name(data, name):
    """/etc/hosts content -> content whose Debian-style 127.0.1.1 line names
    ``name``; None when there is no such line (then the file is left alone).

    Works on bytes (str in, str out is accepted too).  Only ``\n`` separates
    lines.  The lines this owns are those whose first field is 127.0.1.1 and
    which hold nothing but printable ASCII, spaces and tabs (a CRLF ending is
    kept); such a line is replaced, every other byte is kept.  A 127.0.1.1
    line with other bytes (``\r``, ``\f``, ``\v``, ``\x1c``, NEL, U+2028, non-ASCII
    names...) is not ours to rewrite: other readers may see two lines there."""
    if isinstance(data, str):
        out = hosts_with_name(data.encode("utf-8", "surrogateescape"), name)
        return None if out is None else out.decode("utf-8", "surrogateescape")
    owned = name.encode("ascii")
    lines = data.split(b"\n")
    changed = False
    for i, line in enumerate(lines):
        body, cr = (line[:-1], b"\r") if line.endswith(b"\r") else (line, b"")
        if not set(body) <= _OWNED_HOSTS_BYTES:
            continue
        fields = body.split(b"#", 1)[0].split()
        if fields and fields[0] == b"127.0.1.1":
            lines[i] = b"127.0.1.1\t" + owned + cr
            changed = True
    return b"\n".join(lines) if changed else None


def update_hosts(paths, name):
    """Point /etc/hosts' 127.0.1.1 line at ``name``.  Returns what was done
    (for the log), or None when nothing changed.  A file that is too large or
    not a regular file of ours (state.open_own) is left alone with a
    warning: it is not worth failing the step for."""
    path = paths.own("/etc/hosts")
    try:
        data = read_bytes(path, HOSTS_LIMIT, own=True)
    except OSError as exc:
        log.warning("/etc/hosts left alone: %s" % describe(exc))
        return None
    if data is None:
        return None
    updated = hosts_with_name(data, name)
    if updated is None or updated == data:
        return None
    write_atomic(path, updated)
    return "/etc/hosts 127.0.1.1"


def set_hostname(paths, name):
    """Make ``name`` the static and the running host name; returns how.

    No hostnamectl: systemd-hostnamed's D-Bus activation cost ~0.5 s on the
    boot path, and hostnamed reads the same two things when it is asked later
    (static = /etc/hostname, transient = the kernel's name)."""
    write_atomic(paths.own("/etc/hostname"), name + "\n")
    how = "/etc/hostname"
    if paths.is_host:
        import _socket

        _socket.sethostname(name)
        how += " + sethostname"
    hosts = update_hosts(paths, name)
    if hosts:
        how += ", " + hosts
    return how


def current_hostname(paths):
    if paths.is_host:
        import _socket

        return _socket.gethostname()
    try:
        return (read_text(paths("/etc/hostname"), 4096) or "").strip()
    except OSError:
        return ""


# ------------------------------------------------------------------ systemd

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/run/systemd/generator",
             "/run/systemd/generator.early", "/run/systemd/generator.late",
             "/usr/lib/systemd/system", "/lib/systemd/system")


def unit_masked(paths, unit):
    for directory in ("/etc/systemd/system", "/run/systemd/system"):
        path = os.path.join(paths(directory), unit)
        try:
            if os.path.islink(path):
                if os.readlink(path) == "/dev/null":
                    return True
            elif os.stat(path).st_size == 0:
                return True
        except OSError:
            pass
    return False


def unit_enabled(paths, unit):
    """True when ``unit`` is pulled in at boot: a ``*.wants/`` or
    ``*.requires/`` entry names it in a systemd unit directory (under the
    root), and it is not masked (a link to /dev/null or an empty file)."""
    if unit_masked(paths, unit):
        return False
    for directory in UNIT_DIRS:
        base = paths(directory)
        for entry in _listdir(base):
            if entry.endswith((".wants", ".requires")):
                if os.path.lexists(os.path.join(paths(directory + "/" + entry), unit)):
                    return True
    return False


# --------------------------------------------------------------- DHCP client

NETWORKD_LEASES = "/run/systemd/netif/leases"
DHCLIENT_LEASE_DIRS = ("/var/lib/dhcp", "/var/lib/dhclient", "/var/lib/NetworkManager")


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


NETWORKD_LEASE_LIMIT = 65536
DHCLIENT_LEASE_LIMIT = 1024 * 1024


def _lease_text(path, limit):
    try:
        return read_text(path, limit) or ""
    except OSError as exc:
        log.warning("lease file ignored: %s" % describe(exc))
        return ""


def lease_endpoint(paths, now, deadline=None):
    """Option 245 from the DHCP leases on disk (networkd first), or None.
    Reads only regular files under the root, each bounded in size, and
    stops when ``deadline`` (anything with ``remaining()``) has passed."""
    for name in _listdir(paths(NETWORKD_LEASES)):
        if deadline is not None and deadline.remaining() <= 0:
            return None
        address = protocol.networkd_option_245(
            _lease_text(paths(NETWORKD_LEASES + "/" + name), NETWORKD_LEASE_LIMIT))
        if address:
            return address
    for directory in DHCLIENT_LEASE_DIRS:
        for name in _listdir(paths(directory)):
            if ".lease" in name:
                if deadline is not None and deadline.remaining() <= 0:
                    return None
                text = _lease_text(paths(directory + "/" + name), DHCLIENT_LEASE_LIMIT)
                address = protocol.dhclient_option_245(text, now)
                if address:
                    return address
    return None


def any_lease(paths):
    """True when any DHCP lease file exists (so option 245 was not in it)."""
    if _listdir(paths(NETWORKD_LEASES)):
        return True
    return any(".lease" in name for d in DHCLIENT_LEASE_DIRS for name in _listdir(paths(d)))


# ----------------------------------------------------------- NetworkManager

NM_RUN = "/run/NetworkManager"
NM_LEASES = "/var/lib/NetworkManager"
# one call answers both questions: which devices NetworkManager runs DHCP on,
# and what their leases say (option 245 as private_245, or unknown_245 when
# NetworkManager drives dhclient)
NMCLI_SHOW = ["nmcli", "-t", "-f", "GENERAL.DEVICE,GENERAL.TYPE,GENERAL.STATE,DHCP4",
              "device", "show"]


def parse_nmcli_devices(text):
    """Terse multi-line ``nmcli -t -f GENERAL.DEVICE,GENERAL.TYPE,GENERAL.STATE,DHCP4
    device show`` output -> [{"device", "type", "state", "dhcp4": {option: value}}].

    In this mode nmcli prints one "FIELD:value" per line without escaping the
    value (which may hold colons); a record starts at GENERAL.DEVICE."""
    devices = []
    current = None
    for line in text.splitlines():
        field, sep, value = line.partition(":")
        if not sep:
            continue
        if field == "GENERAL.DEVICE":
            current = {"device": value, "type": "", "state": "", "dhcp4": {}}
            devices.append(current)
        elif current is None:
            continue
        elif field == "GENERAL.TYPE":
            current["type"] = value
        elif field == "GENERAL.STATE":
            current["state"] = value
        elif field.startswith("DHCP4.OPTION"):
            key, eq, option = value.partition("=")
            if eq:
                current["dhcp4"][key.strip()] = option.strip()
    return devices


def nm_dhcp_devices(devices):
    """The devices NetworkManager itself activated and runs DHCPv4 on: state
    exactly "100 (connected)" (not "connected (externally)", as lo and devices
    configured by another tool are), not loopback, with DHCPv4 lease options."""
    return [d for d in devices
            if d["state"].strip() == "100 (connected)" and d["type"] != "loopback"
            and d["device"] and d["dhcp4"]]


def _colon_hex_ip(value):
    """'a8:3f:81:10' (NetworkManager; dhclient may drop leading zeros: 'a:0:1:2')
    -> '168.63.129.16', None when it is not four bytes."""
    parts = value.strip().split(":")
    if len(parts) != 4:
        return None
    # the one number parser: 1-2 ASCII hex digits, no sign, space or '_'
    octets = [protocol.wire_number(p, 2, 16) for p in parts]
    if None in octets:
        return None
    if octets[0] in (0, 127, 255) or octets[0] >= 224:
        return None
    return ".".join(str(o) for o in octets)


def nm_option_245(devices):
    """Option 245 from the DHCPv4 options of NetworkManager's DHCP devices."""
    for d in nm_dhcp_devices(devices):
        for key in ("private_245", "unknown_245"):
            address = _colon_hex_ip(d["dhcp4"].get(key, ""))
            if address:
                return address
    return None


def _nm_running(paths):
    return paths.is_host and os.path.isdir(NM_RUN) and _which("nmcli") is not None


def nm_lease_endpoint(paths):
    """Option 245 as NetworkManager holds it (its internal DHCP client writes no
    option 245 to its lease file).  Asks nmcli only when NetworkManager runs and
    has a lease file of its own, so other stacks never pay for a process."""
    if not _nm_running(paths):
        return None
    if not any(".lease" in name for name in _listdir(NM_LEASES)):
        return None
    ok, output = run(NMCLI_SHOW, timeout=10, raw=True)
    return nm_option_245(parse_nmcli_devices(output)) if ok else None


# ------------------------------------------------------------------ dhclient

NO_LEASE_YET = "default address; no DHCP lease yet"


def wireserver_endpoint(configured, paths, deadline=None):
    """(host, port, source) of the WireServer: ``configured`` ([wireserver]
    endpoint) unless it is "auto", else DHCP option 245 from the leases
    (files; NetworkManager's own view when its internal client holds the
    lease), else 168.63.129.16 (source NO_LEASE_YET while there is no lease
    at all).  Lease files are read within ``deadline``."""
    import time

    if configured != "auto":
        host, port = protocol.split_endpoint(configured)
        return host, port, "configuration"
    address = lease_endpoint(paths, time.time(), deadline)
    if address:
        return address, 80, "DHCP option 245"
    if not any_lease(paths):
        return protocol.WIRESERVER_DEFAULT, 80, NO_LEASE_YET
    address = nm_lease_endpoint(paths)
    if address:
        return address, 80, "DHCP option 245 (NetworkManager)"
    return protocol.WIRESERVER_DEFAULT, 80, "default address"


def recorded_endpoint(state, configured, paths, deadline=None):
    """The WireServer network-wait reached in this boot (its boot flag),
    else a fresh wireserver_endpoint() lookup within ``deadline``."""
    text = state.boot_flag("endpoint")
    if text:
        try:
            host, port = protocol.split_endpoint(text)
            return host, port, "network-wait"
        except ValueError:
            pass
    return wireserver_endpoint(configured, paths, deadline)


def dhclient_conf_sends_hostname(data):
    """True when dhclient.conf content (bytes or str) has a ``send host-name``
    statement outside comments; only ``\n`` separates lines."""
    if isinstance(data, bytes):
        data = data.decode("latin-1")
    for line in data.split("\n"):
        words = line.split("#", 1)[0].split()
        if words[:2] == ["send", "host-name"]:
            return True
    return False


def dhclient_conf_with_hostname(data):
    """dhclient.conf bytes -> the same bytes plus our one ``send host-name``
    line (after a newline when the file lacks a final one); None when it
    already sends the host name."""
    if dhclient_conf_sends_hostname(data):
        return None
    sep = b"\n" if data and not data.endswith(b"\n") else b""
    return data + sep + b"send host-name = gethostname();\n"


def ensure_dhclient_sends_hostname(paths):
    """Make dhclient.conf send the host name; keeps every byte of the file.
    A file that is too large or not a regular file is left alone with a
    warning."""
    path = paths.own("/etc/dhcp/dhclient.conf")
    try:
        data = read_bytes(path, DHCLIENT_CONF_LIMIT, own=True) or b""
    except OSError as exc:
        log.warning("dhclient.conf left alone: %s" % describe(exc))
        return
    updated = dhclient_conf_with_hostname(data)
    if updated is not None:
        write_atomic(path, updated)


def dhclient_interfaces(pid_files, ifupdown_states):
    """Interfaces whose dhclient ifupdown started: /run/dhclient.IFACE.pid
    names (as ifupdown writes them) whose interface ifupdown holds up
    (/run/network/ifstate.IFACE); (ifupdown's, others)."""
    ifaces = sorted(n[len("dhclient."):-len(".pid")] for n in pid_files
                    if n.startswith("dhclient.") and n.endswith(".pid")
                    and len(n) > len("dhclient..pid"))
    ours = [i for i in ifaces if "ifstate." + i in ifupdown_states]
    return ours, [i for i in ifaces if i not in ours]


def ifupdown_restart_unit(iface, active):
    """The systemd unit whose restart makes ifupdown run ifdown + ifup (with its
    own dhclient arguments) on ``iface``, given ``active``: {unit: is-active
    answer}.  ifup@IFACE.service (allow-hotplug interfaces) when it is active,
    else networking.service (auto interfaces; restarting it cycles all of
    them), else None."""
    unit = "ifup@%s.service" % iface
    if active.get(unit) == "active":
        return unit
    if active.get("networking.service") == "active":
        return "networking.service"
    return None


def _publish_dhclient(paths):
    ensure_dhclient_sends_hostname(paths)
    ifaces, others = dhclient_interfaces(_listdir("/run"), _listdir("/run/network"))
    results = ["%s: not restarted (dhclient not started by ifupdown)" % i for i in others]
    if ifaces and _which("systemctl"):
        units = ["ifup@%s.service" % i for i in ifaces] + ["networking.service"]
        _, output = run(["systemctl", "is-active"] + units, timeout=30, raw=True)
        active = dict(zip(units, output.split()))
        restart = []
        for iface in ifaces:
            unit = ifupdown_restart_unit(iface, active)
            if unit is None:
                results.append("%s: not restarted (no active ifupdown unit)" % iface)
            elif unit not in restart:
                restart.append(unit)
        for unit in restart:
            # PID 1 runs ifdown/ifup in the distro's own unit: the new dhclient
            # lives in that unit's cgroup, never in ours; systemctl returns when
            # ifup has its lease again
            ok, output = run(["systemctl", "restart", unit], timeout=120)
            results.append("%s%s" % (unit, "" if ok else " failed: " + output))
    return "ifupdown restart of " + ", ".join(results)


REPUBLISH_WAIT = 10.0  # s: how long to wait for networkd's new lease


def _networkd_republish(indexes, probe):
    """systemd-networkd (252..257 checked) copies the host name into its DHCP
    client only when it configures the client: "networkctl renew" repeats the
    old name (systemd issues 23244, 36792). "networkctl reconfigure" restarts
    the client with the new name, which releases the lease: the address is
    gone for ~0.2 s. So we watch netlink for the link's IPv4 address to come
    back (RTM_NEWADDR, also sent when networkd only refreshes a kept address)
    and for the WireServer to accept a connection before returning: the next
    unit (report-ready) never starts inside that gap."""
    import time

    from azure_firstboot import netlink

    started = time.monotonic()
    end = started + REPUBLISH_WAIT
    with netlink.Watcher() as watcher:  # opened before the restart: nothing missed
        results, last = [], {}
        for index in indexes:
            ok, output = run(["networkctl", "reconfigure", index])
            results.append("%s%s" % (index, "" if ok else " failed: " + output))
            if ok:
                last[protocol.wire_number(index, 10)] = None
        restarted = time.monotonic()
        summary = "systemd-networkd reconfigure of link %s (%.2f s)" % (
            ", ".join(results), restarted - started)
        if not last:
            return summary
        if watcher.sock is None:
            return summary + "; not waiting for the new lease (no netlink: %s)" % watcher.problem
        while True:
            back = all(kind == netlink.RTM_NEWADDR for kind in last.values())
            if back and probe:
                error = watcher.connect(probe[0], probe[1], max(0.05, min(1.0, end - time.monotonic())))
                back = error is None  # on netlink.Changed the wait below returns at once
            if back:
                return summary + "; address%s back %.2f s later" % (
                    " and WireServer" if probe else "", time.monotonic() - restarted)
            if time.monotonic() >= end:
                log.warning("the new DHCP lease is not there after %.0f s; continuing" % REPUBLISH_WAIT)
                return summary + "; no new lease within %.0f s" % REPUBLISH_WAIT
            for event in watcher.wait(min(0.25, max(0.0, end - time.monotonic()))):
                if event and event[0] in (netlink.RTM_NEWADDR, netlink.RTM_DELADDR) \
                        and event[1] == netlink.AF_INET and event[2] in last:
                    last[event[2]] = event[0]


def publish_hostname(paths, name, probe=None):
    """Make the running DHCP client send a request carrying the (new) host
    name, so that Azure DNS registers it.  Returns a one-line summary.
    ``probe``: (host, port) of the WireServer; where publishing takes the
    address away for a moment (systemd-networkd), return only once it is
    back and the WireServer accepts connections again."""
    if not paths.is_host:
        return "not published (--root)"
    leases = [n for n in _listdir(NETWORKD_LEASES) if protocol.wire_number(n, 10) is not None]
    if leases and _which("networkctl"):
        return _networkd_republish(leases, probe)
    if _nm_running(paths):
        ok, output = run(NMCLI_SHOW, timeout=30, raw=True)
        if not ok:
            return "NetworkManager: nmcli device show failed: %s" % " ".join(output.split())[:200]
        results = []
        for d in nm_dhcp_devices(parse_nmcli_devices(output)):
            # NetworkManager's DHCP client takes the name to send only when it
            # starts, and reapply restarts DHCP only when ipv4 settings differ:
            # set ipv4.dhcp-hostname on the applied connection (not the profile)
            ok, output = run(["nmcli", "device", "modify", d["device"],
                              "ipv4.dhcp-hostname", name], timeout=30)
            results.append("%s%s" % (d["device"], "" if ok else " failed: " + output))
        return "NetworkManager DHCP restart (applied ipv4.dhcp-hostname) of " + (
            ", ".join(results) or "no DHCP device")
    if any(n.startswith("dhclient.") and n.endswith(".pid") for n in _listdir("/run")):
        return _publish_dhclient(paths)
    return "no DHCP client found to publish the host name"
