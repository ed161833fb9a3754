"""``azure-firstboot check``: is this system (or the image tree under
``--root``) ready to be captured as an image that provisions itself?

Functional core, imperative shell: :func:`gather` reads what the checks need
from the tree into a :class:`Snapshot` (file texts, directory listings, the
presence of programs; every path resolved inside the root, every read
capped); :func:`problems` is a pure function of that snapshot and returns
one ``(check, text)`` pair per problem.  Not a boot unit: it may import what
it likes from the standard library.

A problem is something that makes VMs made from the image fail to provision
(no network, a broken configuration, another agent fighting ours) or share
what must be theirs alone (host keys, machine id, the build user's login).
"""

import fnmatch
import os

from azure_firstboot import accounts, state as st

# our units, as the preset enables them (its own list when the tree has it)
PRESETS = ("/usr/lib/systemd/system-preset/90-azure-firstboot.preset",
           "/lib/systemd/system-preset/90-azure-firstboot.preset")
OUR_UNITS = ("azure-firstboot-network-wait.service", "azure-firstboot-hostname.service",
             "azure-firstboot-user.service", "azure-firstboot-report-ready.service",
             "azure-firstboot-ssh-keygen.service")
# systemd unit directories, most important first (/etc overrides /run overrides /usr/lib)
UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
NETWORKD_DIRS = ("/etc/systemd/network", "/run/systemd/network", "/usr/lib/systemd/network",
                 "/lib/systemd/network")
NETPLAN_DIRS = ("/etc/netplan", "/run/netplan", "/lib/netplan", "/usr/lib/netplan")
NM_DIRS = ("/etc/NetworkManager/system-connections", "/usr/lib/NetworkManager/system-connections")
IFUPDOWN_FILES = ("/etc/network/interfaces",)
IFUPDOWN_DIRS = ("/etc/network/interfaces.d",)
IFCFG_DIR = "/etc/sysconfig/network-scripts"
UDEV_RULES = "/etc/udev/rules.d"
LEASE_DIRS = (("/var/lib/dhcp", "*.leases"), ("/var/lib/dhclient", "*.lease*"),
              ("/var/lib/NetworkManager", "*.lease"), ("/run/systemd/netif/leases", "*"))
# sudoers files other agents (and ours) wrote for a user of the build VM
FOREIGN_SUDOERS = ("/etc/sudoers.d/90-cloud-init-users", "/etc/sudoers.d/waagent",
                   accounts.SUDOERS_FILE)
SSHD = "/usr/sbin/sshd"
AZURE_DRIVER = "hv_netvsc"
PRIMARY = "eth0"
FILE_LIMIT = 1 << 20
MAX_FILES = 512  # per directory: an image has a handful


class Snapshot(object):
    """What the checks read, as plain data: ``files`` {path: text} (a path
    missing = no such regular file), ``dirs`` {dir: [names]} (sorted),
    ``exists`` {path: bool}, ``masked`` set of unit names, plus the
    configuration problems and the invoking user (SUDO_USER on the host,
    None under --root)."""

    def __init__(self, files=None, dirs=None, exists=None, masked=(), config_problems=(),
                 sudo_user=None, is_host=False):
        self.files = dict(files or {})
        self.dirs = dict(dirs or {})
        self.exists = dict(exists or {})
        self.masked = set(masked)
        self.config_problems = list(config_problems)
        self.sudo_user = sudo_user
        self.is_host = is_host

    def text(self, path):
        return self.files.get(path)

    def names(self, directory):
        return self.dirs.get(directory, [])

    def present(self, path):
        return self.exists.get(path, path in self.files)

    def files_in(self, directories, pattern):
        """[(name, path)] of the files matching ``pattern`` in ``directories``
        (earlier directories hide later ones with the same name), by name."""
        seen = {}
        for directory in directories:
            for name in self.names(directory):
                if fnmatch.fnmatchcase(name, pattern) and name not in seen:
                    path = directory + "/" + name
                    if path in self.files:
                        seen[name] = path
        return [(name, seen[name]) for name in sorted(seen)]


# ------------------------------------------------------------------ gather

def _read(paths, path, limit=FILE_LIMIT):
    try:
        data = st.read_bytes(paths(path), limit)
    except OSError:
        return None
    if data is None:
        return None
    return data[:limit].decode("utf-8", "replace")


def _list(paths, directory):
    try:
        return sorted(os.listdir(paths(directory)))[:MAX_FILES]
    except OSError:
        return []


def gather(paths, config_problems=(), sudo_user=None):
    """Read the tree under ``paths`` into a Snapshot (bounded, never follows
    a symlink out of the root)."""
    snap = Snapshot(config_problems=config_problems, is_host=paths.is_host,
                    sudo_user=sudo_user if paths.is_host else None)

    def listing(directory, pattern="*", read=True):
        names = _list(paths, directory)
        snap.dirs[directory] = names
        if read:
            for name in names:
                if fnmatch.fnmatchcase(name, pattern):
                    text = _read(paths, directory + "/" + name)
                    if text is not None:
                        snap.files[directory + "/" + name] = text
        return names

    def read(path):
        text = _read(paths, path)
        if text is not None:
            snap.files[path] = text

    def exists(path):
        try:
            snap.exists[path] = os.path.lexists(paths(path))
        except OSError:
            snap.exists[path] = False

    # systemd: wants/requires links, masks
    for directory in UNIT_DIRS:
        for entry in listing(directory, read=False):
            if entry.endswith((".wants", ".requires")):
                listing(directory + "/" + entry, read=False)
    for directory in ("/etc/systemd/system",):
        for name in snap.names(directory):
            try:
                path = os.path.join(paths(directory), name)  # the entry itself, not followed
                if os.path.islink(path) and os.readlink(path) == "/dev/null":
                    snap.masked.add(name)
                elif os.path.isfile(path) and os.path.getsize(path) == 0:
                    snap.masked.add(name)
            except OSError:
                pass
    from azure_firstboot import admin

    for _, programs, _, _, disabled_by in admin.OTHER_AGENTS:
        for program in programs:
            exists(program)
        if disabled_by:
            exists(disabled_by)
    for path in PRESETS:
        read(path)
    for path in (SSHD, "/usr/sbin/netplan", "/sbin/ifup", "/usr/sbin/ifup", "/usr/sbin/NetworkManager",
                 "/usr/lib/systemd/systemd-networkd", "/lib/systemd/systemd-networkd"):
        exists(path)
    # network
    for directory in NETWORKD_DIRS:
        listing(directory, "*.network")
    listing("/etc/systemd/network", "*.link")
    for directory in NETPLAN_DIRS:
        listing(directory, "*.yaml")
    for directory in NM_DIRS:
        listing(directory, "*")
    for path in IFUPDOWN_FILES:
        read(path)
    for directory in IFUPDOWN_DIRS:
        listing(directory)
    listing(IFCFG_DIR, "ifcfg-*")
    listing(UDEV_RULES, "*.rules")
    for directory, _ in LEASE_DIRS:
        listing(directory, read=False)
    # sshd, identity, accounts
    read(accounts.SSHD_CONFIG)
    listing(accounts.SSHD_DROPIN_DIR, "*.conf")
    listing("/etc/ssh", read=False)
    read("/etc/machine-id")
    read("/var/lib/dbus/machine-id")
    exists("/etc/machine-id")
    listing("/etc/sudoers.d", read=False)
    read("/etc/passwd")
    read("/etc/login.defs")
    for name, (uid, _, home, _) in accounts.passwd_entries(snap.text("/etc/passwd") or "").items():
        if home.startswith("/") and home != "/":
            exists(home.rstrip("/") + "/.ssh/authorized_keys")
    for directory in (st.STATE_DIR, st.RUN_DIR):
        listing(directory, read=False)
    return snap


# ------------------------------------------------------------ pure checks

def unit_enabled(snap, unit):
    """Pulled in by a *.wants/ or *.requires/ link in a unit directory, not masked."""
    if unit in snap.masked:
        return False
    for directory in UNIT_DIRS:
        for entry in snap.names(directory):
            if entry.endswith((".wants", ".requires")) and unit in snap.names(directory + "/" + entry):
                return True
    return False


def _agents(snap):
    from azure_firstboot import admin

    out = []
    for name, programs, units, remedy, disabled_by in admin.OTHER_AGENTS:
        found = [p for p in programs if snap.present(p)]
        enabled = [u for u in units if unit_enabled(snap, u)]
        if disabled_by and snap.present(disabled_by):
            continue  # disabled for good (cloud-init's own switch)
        if found and (enabled or disabled_by):
            # cloud-init's generator starts it whatever the links say
            out.append(("agents", "%s is still installed (%s)%s: VMs made from this image would run it "
                        "too; remove it (%s)" % (name, found[0], " and enabled" if enabled else "",
                                                 remedy)))
        elif enabled:
            out.append(("agents", "%s is not installed but still enabled (%s): purge its leftovers (%s)"
                        % (name, enabled[0], remedy)))
    return out


def our_units(snap):
    """The units the package's preset enables (OUR_UNITS without a preset)."""
    for path in PRESETS:
        text = snap.text(path)
        if text is not None:
            units = [w[1] for w in (l.split() for l in text.splitlines())
                     if len(w) == 2 and w[0] == "enable" and w[1].startswith("azure-firstboot-")]
            if units:
                return units
    return list(OUR_UNITS)


def _units(snap):
    missing = [u for u in our_units(snap) if not unit_enabled(snap, u)]
    if not missing:
        return []
    return [("units", "%s not enabled: run 'systemctl preset %s' (installing the package does it)"
             % (", ".join(missing), " ".join(missing)))]


# ---- INI-style files (systemd .network, NetworkManager keyfiles)

def ini_sections(text):
    """INI text -> [(section, {key: value})] in order (a section may repeat;
    later keys win within one section)."""
    sections = []
    current = None
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = (line[1:-1].strip(), {})
            sections.append(current)
            continue
        key, sep, value = line.partition("=")
        if sep and current is not None:
            current[1][key.strip()] = value.strip()
    return sections


def _section(sections, name):
    merged = {}
    for title, keys in sections:
        if title == name:
            merged.update(keys)
    return merged


def _globs_match(patterns, value):
    """systemd's Name=/Driver= lists: whitespace-separated globs, a leading
    '!' inverts the whole list."""
    words = patterns.split()
    if not words:
        return True
    invert = words[0].startswith("!")
    if invert:
        words[0] = words[0][1:]
    hit = any(fnmatch.fnmatchcase(value, w) for w in words if w)
    return hit != invert


NETWORKD_MAC_KEYS = ("MACAddress", "PermanentMACAddress")


def networkd_matches(match, name=PRIMARY, driver=AZURE_DRIVER):
    """Would this [Match] section apply to Azure's primary NIC (its MAC
    unknown: a MAC match never applies to another VM)?"""
    for key, value in match.items():
        if key in NETWORKD_MAC_KEYS:
            return False
        if key == "Name" and not _globs_match(value, name):
            return False
        if key == "OriginalName" and not _globs_match(value, name):
            return False
        if key == "Driver" and not _globs_match(value, driver):
            return False
        if key == "Type" and not _globs_match(value, "ether"):
            return False
        if key not in ("Name", "OriginalName", "Driver", "Type"):
            return False  # a key we do not evaluate: do not count on this file
    return True


def _truthy_dhcp(value, v4=True):
    low = (value or "").strip().lower()
    return low in ("yes", "true", "on", "1", "both") or (v4 and low == "ipv4")


def _networkd(snap):
    """(ok, [problems]) for systemd-networkd's .network files."""
    problems, ok = [], False
    files = snap.files_in(NETWORKD_DIRS, "*.network")
    for name, path in files:
        match = _section(ini_sections(snap.text(path)), "Match")
        if any(k in match for k in NETWORKD_MAC_KEYS) and path.startswith("/etc/"):
            problems.append(("network", "%s matches a MAC address (%s): a VM made from the image has "
                             "another one; remove it" % (path, match.get("MACAddress") or match.get(
                                 "PermanentMACAddress"))))
    for name, path in files:
        sections = ini_sections(snap.text(path))
        match = _section(sections, "Match")
        if not networkd_matches(match):
            continue
        # the first matching file (by name) is the one networkd uses
        network = _section(sections, "Network")
        ok = None  # reported here
        if "Driver" not in match:
            problems.append(("network", "%s is the file systemd-networkd uses for the Azure NIC, but it "
                             "does not match it by driver (Driver=%s)" % (path, AZURE_DRIVER)))
        elif not _truthy_dhcp(network.get("DHCP")):
            problems.append(("network", "%s is the file systemd-networkd uses for the Azure NIC, but it "
                             "has no DHCP=yes (or ipv4)" % path))
        else:
            ok = True
        break
    return ok, problems


def _nm_list(value):
    return [w for w in value.replace(",", ";").split(";") if w.strip()]


def _networkmanager(snap):
    problems, ok = [], False
    for name, path in snap.files_in(NM_DIRS, "*.nmconnection"):
        sections = ini_sections(snap.text(path))
        conn = _section(sections, "connection")
        eth = _section(sections, "ethernet") or _section(sections, "802-3-ethernet")
        if eth.get("mac-address"):
            problems.append(("network", "%s is bound to MAC address %s: a VM made from the image has "
                             "another one; remove it" % (path, eth["mac-address"])))
            continue
        if conn.get("type") not in ("ethernet", "802-3-ethernet"):
            continue
        if conn.get("autoconnect", "true").lower() in ("false", "no", "0"):
            continue
        drivers = [d.strip() for d in _nm_list(_section(sections, "match").get("driver", ""))]
        method = _section(sections, "ipv4").get("method", "auto")
        if AZURE_DRIVER in drivers and method == "auto":
            ok = True
    return ok, problems


def _ifcfg(snap):
    problems = []
    for name, path in snap.files_in((IFCFG_DIR,), "ifcfg-*"):
        for line in snap.text(path).splitlines():
            key, _, value = line.strip().partition("=")
            if key in ("HWADDR", "MACADDR") and value.strip("\"' "):
                problems.append(("network", "%s is bound to MAC address %s: a VM made from the image "
                                 "has another one; remove it" % (path, value.strip("\"' "))))
                break
    return problems


def ifupdown_stanzas(text):
    """interfaces(5) text -> ({iface: set of methods for inet}, set of
    interfaces brought up by auto/allow-hotplug)."""
    methods, up = {}, set()
    for raw in (text or "").splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] in ("auto", "allow-hotplug", "allow-auto") or words[0].startswith("allow-"):
            up.update(words[1:])
        elif words[0] == "iface" and len(words) >= 4:
            methods.setdefault(words[1], set()).add((words[2], words[3]))
    return methods, up


def _ifupdown(snap):
    texts = [snap.text(p) or "" for p in IFUPDOWN_FILES]
    texts += [snap.text(p) for _, p in snap.files_in(IFUPDOWN_DIRS, "*")]
    methods, up = {}, set()
    for text in texts:
        m, u = ifupdown_stanzas(text)
        for k, v in m.items():
            methods.setdefault(k, set()).update(v)
        up |= u
    ok = PRIMARY in up and ("inet", "dhcp") in methods.get(PRIMARY, set())
    return ok, []


# ---- netplan: a small reader for the YAML netplan files use

class YamlError(ValueError):
    pass


def _scalar(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(w) for w in text[1:-1].split(",") if w.strip()]
    if text.startswith("{"):
        raise YamlError("flow mappings are not read")
    return text


def _strip_comment(line):
    out, quote = [], None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            break
        out.append(c)
    return "".join(out).rstrip()


def yaml_load(text):
    """The block-style YAML subset netplan files are written in: mappings,
    lists of scalars or mappings, quoted and flow-list scalars.  YamlError
    (with the line) on anything else."""
    lines = []
    for number, raw in enumerate((text or "").splitlines(), 1):
        if "\t" in raw[:len(raw) - len(raw.lstrip())]:
            raise YamlError("line %d: tab in indentation" % number)
        line = _strip_comment(raw)
        if line.strip() and line.strip() not in ("---", "..."):
            lines.append((len(line) - len(line.lstrip()), line.strip(), number))
    value, pos = _block(lines, 0, 0)
    if pos != len(lines):
        raise YamlError("line %d: unexpected indentation" % lines[pos][2])
    return value


def _block(lines, pos, indent):
    if pos >= len(lines):
        return None, pos
    if lines[pos][1].startswith("- ") or lines[pos][1] == "-":
        return _seq(lines, pos, lines[pos][0])
    return _map(lines, pos, lines[pos][0])


def _map(lines, pos, indent):
    out = {}
    while pos < len(lines) and lines[pos][0] == indent and not lines[pos][1].startswith("- "):
        _, line, number = lines[pos]
        key, sep, rest = line.partition(":")
        if not sep or (rest and rest[0] not in " "):
            raise YamlError("line %d: expected 'key: value'" % number)
        key = _scalar(key)
        pos += 1
        if rest.strip():
            out[key] = _scalar(rest)
        elif pos < len(lines) and (lines[pos][0] > indent or (
                lines[pos][0] == indent and lines[pos][1].startswith("- "))):
            out[key], pos = _block(lines, pos, lines[pos][0])
        else:
            out[key] = None
    if pos < len(lines) and lines[pos][0] > indent:
        raise YamlError("line %d: unexpected indentation" % lines[pos][2])
    return out, pos


def _seq(lines, pos, indent):
    out = []
    while pos < len(lines) and lines[pos][0] == indent and (
            lines[pos][1].startswith("- ") or lines[pos][1] == "-"):
        _, line, number = lines[pos]
        rest = line[1:].strip()
        if not rest:
            value, pos = _block(lines, pos + 1, indent + 1)
            out.append(value)
            continue
        if ":" in rest and not rest.startswith(("'", '"', "[")) and (
                rest.split(":", 1)[1][:1] in ("", " ")):
            # "- key: value" starts a mapping indented past the dash
            inner = indent + (len(line) - len(rest))
            sub = [(inner, rest, number)]
            pos += 1
            while pos < len(lines) and lines[pos][0] >= inner:
                sub.append(lines[pos])
                pos += 1
            value, used = _map(sub, 0, inner)
            if used != len(sub):
                raise YamlError("line %d: unexpected indentation" % sub[used][2])
            out.append(value)
            continue
        out.append(_scalar(rest))
        pos += 1
    return out, pos


def _as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _yaml_true(value):
    return isinstance(value, str) and value.lower() in ("true", "yes", "on")


def _netplan(snap):
    problems, ok = [], False
    for name, path in snap.files_in(NETPLAN_DIRS, "*.yaml"):
        try:
            doc = yaml_load(snap.text(path))
        except YamlError as exc:
            problems.append(("network", "%s: cannot read it (%s)" % (path, exc)))
            continue
        network = doc.get("network") if isinstance(doc, dict) else None
        ethernets = network.get("ethernets") if isinstance(network, dict) else None
        if not isinstance(ethernets, dict):
            continue
        for ident, conf in sorted(ethernets.items()):
            conf = conf if isinstance(conf, dict) else {}
            match = conf.get("match") if isinstance(conf.get("match"), dict) else {}
            if match.get("macaddress"):
                problems.append(("network", "%s: ethernets.%s matches MAC address %s: a VM made from the "
                                 "image has another one; remove it" % (path, ident, match["macaddress"])))
                continue
            drivers = [d for d in _as_list(match.get("driver")) if isinstance(d, str)]
            if any(fnmatch.fnmatchcase(AZURE_DRIVER, d) for d in drivers) and _yaml_true(conf.get("dhcp4")):
                ok = True
    return ok, problems


def stacks(snap):
    """The network configuration systems of the image, by what is enabled
    (netplan first: it writes the others' files at boot)."""
    found = []
    if snap.files_in(NETPLAN_DIRS, "*.yaml") or snap.present("/usr/sbin/netplan"):
        found.append("netplan")
    if unit_enabled(snap, "systemd-networkd.service"):
        found.append("systemd-networkd")
    if unit_enabled(snap, "NetworkManager.service"):
        found.append("NetworkManager")
    if unit_enabled(snap, "networking.service") or (
            (snap.present("/sbin/ifup") or snap.present("/usr/sbin/ifup")) and
            snap.text("/etc/network/interfaces") is not None):
        found.append("ifupdown")
    return found


def _network(snap):
    out = []
    results = {"netplan": _netplan(snap), "systemd-networkd": _networkd(snap),
               "NetworkManager": _networkmanager(snap), "ifupdown": _ifupdown(snap)}
    for _, problems in results.values():
        out += problems
    out += _ifcfg(snap)
    for name, path in snap.files_in(("/etc/systemd/network",), "*.link"):
        match = _section(ini_sections(snap.text(path)), "Match")
        if any(k in match for k in NETWORKD_MAC_KEYS):
            out.append(("network", "%s names a NIC by MAC address: a VM made from the image has another "
                        "one; remove it" % path))
    for name, path in snap.files_in((UDEV_RULES,), "*.rules"):
        for line in snap.text(path).splitlines():
            if not line.lstrip().startswith("#") and "ATTR{address}==" in line.replace(" ", "") \
                    and "NAME=" in line.replace(" ", ""):
                out.append(("network", "%s names a NIC by MAC address (persistent net rules): on a VM made "
                            "from the image the NIC would not be eth0; remove it" % path))
                break
    used = stacks(snap)
    if not used:
        out.append(("network", "no network configuration system found (systemd-networkd, NetworkManager, "
                    "ifupdown or netplan enabled): VMs made from the image would get no address"))
    elif not any(results[s][0] for s in used) and not any(results[s][0] is None for s in used):
        hint = {"netplan": "a netplan file with match: {driver: %s}, dhcp4: true" % AZURE_DRIVER,
                "systemd-networkd": "a .network file with [Match] Driver=%s and DHCP=yes" % AZURE_DRIVER,
                "NetworkManager": "a connection profile with [match] driver=%s and ipv4 method=auto"
                                  % AZURE_DRIVER,
                "ifupdown": "'allow-hotplug %s' and 'iface %s inet dhcp'" % (PRIMARY, PRIMARY)}
        out.append(("network", "no DHCP configuration for the Azure NIC (driver %s) in %s: VMs made from "
                    "the image would get no address; add %s (examples/network/)" % (
                        AZURE_DRIVER, " or ".join(used), " or ".join(hint[s] for s in used))))
    leases = []
    for directory, pattern in LEASE_DIRS:
        leases += [directory + "/" + n for n in snap.names(directory) if fnmatch.fnmatchcase(n, pattern)]
    if leases:
        out.append(("leases", "DHCP lease(s) left in the image: %s%s (azure-firstboot deprovision --leases)"
                    % (", ".join(leases[:3]), " and %d more" % (len(leases) - 3) if len(leases) > 3 else "")))
    return out


# ---- sshd

def _sshd(snap):
    """sshd reads the user step's drop-in before any line that sets password
    logins (sshd.py: the effective order, first value wins, Includes where
    they stand, Match blocks apart)."""
    from azure_firstboot import sshd

    config = snap.text(accounts.SSHD_CONFIG)
    if not snap.present(SSHD) or config is None:
        return []
    ours = accounts.SSHD_DROPIN

    def listdir(directory):
        names = snap.names(directory)
        if directory == accounts.SSHD_DROPIN_DIR:  # where the first boot writes it
            names = sorted(set(names) | {ours.rsplit("/", 1)[1]})
        return names

    result = sshd.resolve({sshd.MAIN: config, ours: accounts.sshd_dropin_text(True)}, snap.text, listdir,
                          ("passwordauthentication", "kbdinteractiveauthentication"))
    if result.problem:
        return [("sshd", "cannot tell whether sshd reads %s: %s" % (ours, result.problem))]
    out = []
    for key, shown in (("passwordauthentication", "PasswordAuthentication"),
                       ("kbdinteractiveauthentication", "KbdInteractiveAuthentication")):
        got = result.values.get(key)
        if got is None:
            return [("sshd", "%s has no 'Include %s/*.conf': the password setting azure-firstboot writes "
                     "there would be ignored" % (accounts.SSHD_CONFIG, accounts.SSHD_DROPIN_DIR))]
        value, path, line = got
        if path != ours:
            out.append(("sshd", "%s:%d sets '%s %s' and is read before %s: sshd takes the first value, so "
                        "the VM's password setting would be ignored; remove the line, or move the "
                        "Include above it" % (path, line, shown, value, ours)))
    return out


# ---- identity and accounts

def _identity(snap):
    out = []
    mid = snap.text("/etc/machine-id")
    if mid is not None and mid.strip():
        out.append(("machine-id", "/etc/machine-id is not empty: every VM made from the image would share "
                    "it (azure-firstboot deprovision --machine-id)"))
    if (snap.text("/var/lib/dbus/machine-id") or "").strip():
        out.append(("machine-id", "/var/lib/dbus/machine-id is a file with an id in it: every VM would share "
                    "it (azure-firstboot deprovision --machine-id)"))
    keys = [n for n in snap.names("/etc/ssh") if fnmatch.fnmatchcase(n, "ssh_host_*key*")]
    if keys:
        out.append(("host-keys", "SSH host keys in the image (%s): every VM would share them "
                    "(azure-firstboot deprovision --ssh-host-keys)" % ", ".join(keys[:3])))
    # (none: azure-firstboot-ssh-keygen.service makes them; "units" says when it is not enabled)
    state = [d + "/" + n for d in (st.STATE_DIR, st.RUN_DIR) for n in snap.names(d)]
    if state:
        out.append(("state", "azure-firstboot state left in the image (%s): run azure-firstboot deprovision"
                    % ", ".join(state[:2])))
    return out


def _accounts(snap):
    out = []
    for path in FOREIGN_SUDOERS:
        directory, name = path.rsplit("/", 1)
        if name in snap.names(directory):
            out.append(("sudoers", "%s is left: a VM admin with the name it names would get sudo from it "
                        "(azure-firstboot deprovision removes it)" % path))
    low, high = accounts.uid_range(snap.text("/etc/login.defs"))
    entries = accounts.passwd_entries(snap.text("/etc/passwd") or "")
    if snap.sudo_user and snap.sudo_user in entries and low <= entries[snap.sudo_user][0] <= high:
        out.append(("build-user", "the build user %s (who ran this through sudo) is still in the image "
                    "(azure-firstboot deprovision --user)" % snap.sudo_user))
    for name, (uid, _, home, _) in sorted(entries.items()):
        if name == snap.sudo_user or not low <= uid <= high or not home.startswith("/") or home == "/":
            continue
        if snap.present(home.rstrip("/") + "/.ssh/authorized_keys"):
            out.append(("build-user", "account %s (UID %d) has SSH keys (%s/.ssh/authorized_keys): whoever "
                        "holds them could log in to every VM; remove the account (userdel --remove %s)"
                        % (name, uid, home.rstrip("/"), name)))
    return out


def problems(snap):
    """[(check, one-line problem)] for a Snapshot; empty: ready to capture."""
    out = [("config", "configuration: %s" % p) for p in snap.config_problems]
    out += _units(snap)
    out += _agents(snap)
    out += _network(snap)
    out += _sshd(snap)
    out += _identity(snap)
    out += _accounts(snap)
    return out


# checks deprovision cannot fix: it refuses to generalize while one of them fails
BLOCKING = ("config", "units", "agents", "network", "sshd")


def blocking(found):
    return [(c, t) for c, t in found if c in BLOCKING]


def run(ctx, as_json):
    """The command: gather, check, print.  0 ready, 1 problems."""
    snap = gather(ctx.paths, ctx.config_problems, os.environ.get("SUDO_USER"))
    found = problems(snap)
    if as_json:
        import json

        print(json.dumps({"ready": not found, "root": ctx.paths.root,
                          "problems": [{"check": c, "problem": t} for c, t in found]},
                         indent=2, sort_keys=True))
    else:
        for check, text in found:
            print("%s: %s" % (check, text))
        if not found:
            print("ready to capture: no problems found in %s" % (
                "this system" if ctx.paths.is_host else ctx.paths.root))
    return 1 if found else 0
