"""The admin user as pure functions: what IMDS and ovf-env.xml ask for, whether
it is acceptable, and the text of every file the user step writes.

Nothing here touches a file, a process or the network: callers pass text
in (the parsed IMDS document, /etc/passwd, authorized_keys, ...) and get
values or text out.  Every refusal is a one-line reason that names the bad
value (shown with repr(), cut, so nothing in it reaches a terminal raw).
"""

from azure_firstboot import protocol
from azure_firstboot.log import printable

USERNAME_MAX = 64   # ARM's limit for a Linux adminUsername
GROUP_MAX = 32
KEY_LINE_MAX = 16384
DEFAULT_UID_MIN = 1000
DEFAULT_UID_MAX = 60000
SUDOERS_FILE = "/etc/sudoers.d/azure-firstboot"
SSHD_CONFIG = "/etc/ssh/sshd_config"
SSHD_DROPIN_DIR = "/etc/ssh/sshd_config.d"
SSHD_DROPIN = SSHD_DROPIN_DIR + "/50-azure-firstboot.conf"
COMMENT = "azure-firstboot admin user"
# The password field of an account created without a password: "*" matches no
# password, so password logins fail, but it is not the "!" of a *locked*
# account.  sshd with "UsePAM no" refuses every login, keys included, to an
# account whose password field starts with "!" (Debian's useradd default).
NO_PASSWORD = "*"

KEY_TYPES = frozenset((
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
))

_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _LOWER | frozenset("0123456789-")
# A user name: the POSIX portable file name characters (no '/', ':', ',',
# whitespace, quotes or shell, sudoers and useradd specials)
_USER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
# ARM refuses these as a Linux adminUsername (azure-platform-facts.md)
ARM_DISALLOWED = frozenset((
    "administrator", "admin", "user", "user1", "test", "user2", "test1", "user3", "admin1", "1",
    "123", "a", "actuser", "adm", "admin2", "aspnet", "backup", "console", "david", "guest",
    "john", "owner", "root", "server", "sql", "support", "support_388945a0", "sys", "test2",
    "test3", "user4", "user5"))
KEYS_FILE = ".ssh/authorized_keys"
_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def shown(value, limit=60):
    text = str(value)
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


class AdminSpec(object):
    """What the VM was created with: user name, [(key line, path)], and
    whether password logins are wanted (disablePasswordAuthentication false)."""

    __slots__ = ("username", "keys", "password_auth")

    def __init__(self, username, keys, password_auth):
        self.username = username
        self.keys = keys
        self.password_auth = password_auth

    def __repr__(self):
        return "AdminSpec(%r, %d key(s), password_auth=%r)" % (
            self.username, len(self.keys), self.password_auth)


def _flag(value, what):
    """'true'/'false' (any case) or a JSON boolean -> bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("%s is neither true nor false: %s" % (what, shown(value)))


def admin_from_imds(compute):
    """The ``compute`` object of the parsed IMDS instance document (a dict)
    -> AdminSpec with the raw values (validate them with the functions
    below).  ValueError naming the field when the shape is wrong."""
    if not isinstance(compute, dict):
        raise ValueError("IMDS instance document has no compute object")
    profile = compute.get("osProfile")
    if not isinstance(profile, dict):
        raise ValueError("IMDS compute.osProfile is missing")
    name = profile.get("adminUsername")
    if not isinstance(name, str) or not name:
        raise ValueError("IMDS compute.osProfile.adminUsername is missing or empty")
    disable = profile.get("disablePasswordAuthentication", True)
    password_auth = not _flag(disable, "IMDS compute.osProfile.disablePasswordAuthentication")
    entries = compute.get("publicKeys")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise ValueError("IMDS compute.publicKeys is not a list")
    keys = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("keyData"), str):
            raise ValueError("IMDS compute.publicKeys[%d] has no keyData" % number)
        path = entry.get("path")
        if path in (None, ""):
            path = default_key_path(name)
        if not isinstance(path, str):
            raise ValueError("IMDS compute.publicKeys[%d].path is not a string" % number)
        keys.append((entry["keyData"], path))
    return AdminSpec(name, keys, password_auth)


def admin_from_ovf(ovf):
    """ovf-env.xml (an OvfEnv) -> AdminSpec, for a VM whose IMDS is
    unavailable.  A key given only by its Fingerprint (a certificate Azure
    would put in the certificate store) is refused: only a PublicKey with a
    Value can be installed.  Without DisableSshPasswordAuthentication,
    password logins are wanted when a UserPassword is there."""
    name = ovf.username
    if not name:
        raise ValueError("ovf-env.xml has no UserName")
    if ovf.disable_ssh_password_auth is None:
        password_auth = bool(ovf.password)
    else:
        password_auth = not ovf.disable_ssh_password_auth
    keys = []
    for number, key in enumerate(ovf.keys):
        if not key.value:
            if key.fingerprint:
                raise ValueError("ovf-env.xml SSH PublicKey %d is given only by its Fingerprint %s: "
                                 "only a key with a Value can be installed" % (
                                     number, shown(key.fingerprint, 48)))
            raise ValueError("ovf-env.xml SSH PublicKey %d has no Value" % number)
        keys.append((key.value, key.path or default_key_path(name)))
    return AdminSpec(name, keys, password_auth)


def default_key_path(username, home=None):
    return (home or "/home/" + username) + "/.ssh/authorized_keys"


# ------------------------------------------------------------ validation

def username_problem(name):
    """None for an admin user name as ARM accepts it for Linux and useradd
    creates it (1 to 64 characters of letters, digits, '.', '_' and '-'; not
    starting with '-', not all digits, not '.' or '..', not one of ARM's
    disallowed names such as admin or root), else the reason."""
    if not name or len(name) > USERNAME_MAX:
        return "admin user name %s must have 1 to %d characters" % (shown(name), USERNAME_MAX)
    if not set(name) <= _USER_CHARS:
        return ("admin user name %s holds a character other than letters, digits, '.', '_' "
                "and '-'" % shown(name))
    if name.startswith("-"):
        return "admin user name %s starts with '-'" % shown(name)
    if name in (".", ".."):
        return "admin user name %s is refused" % shown(name)
    if name.lower() in ARM_DISALLOWED:
        return "admin user name %s is refused (one of Azure's disallowed names)" % shown(name)
    if name.isdigit():
        return "admin user name %s is all digits (it reads as a UID)" % shown(name)
    return None


def parse_key(text):
    """One OpenSSH public key line -> the line normalized ("type base64
    [comment]"); ValueError with the reason otherwise.  Trailing CR/LF are
    stripped; key options and anything but one key are refused."""
    line = text.strip(" \t\r\n")
    if len(line) > KEY_LINE_MAX:
        raise ValueError("SSH key is %d characters long (at most %d)" % (len(line), KEY_LINE_MAX))
    if not line:
        raise ValueError("SSH key is empty")
    if any(c < " " and c != "\t" or c == "\x7f" for c in line):
        raise ValueError("SSH key %s holds a line break or control character (one key per entry)"
                         % shown(line))
    parts = line.split(None, 2)
    kind = parts[0]
    if kind not in KEY_TYPES:
        if "=" in kind or '"' in kind or "," in kind:
            raise ValueError("SSH key %s carries key options; only a plain key is accepted" % shown(line))
        raise ValueError("SSH key %s is not of a known type (%s)" % (
            shown(line), ", ".join(sorted(KEY_TYPES))))
    if len(parts) < 2:
        raise ValueError("SSH key %s has no key data" % shown(line))
    data = parts[1]
    if not set(data) <= _B64 or len(data) % 4:
        raise ValueError("SSH key %s: the key data is not base64" % shown(line))
    import binascii

    try:
        blob = binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        raise ValueError("SSH key %s: the key data is not base64" % shown(line))
    size = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if size < 1 or blob[4:4 + size] != kind.encode("ascii") or len(blob) <= 4 + size:
        raise ValueError("SSH key %s: the key data is not a %s key" % (shown(line), kind))
    # The comment goes to a file sshd reads and people look at: one line,
    # every character that is not printable (C1 controls, bidi overrides and
    # isolates, other format characters) shown as an escape (log.printable).
    comment = printable(" ".join(parts[2].split())) if len(parts) > 2 else ""
    return " ".join(p for p in (kind, data, comment) if p)


def key_blob(line):
    """'type base64' of a key line (None when the line holds no known key);
    works on lines with options too, for de-duplication."""
    words = line.split()
    for i, word in enumerate(words[:-1]):
        if word in KEY_TYPES:
            return word + " " + words[i + 1]
    return None


def inside(path, home):
    """The path relative to ``home`` when ``path`` (absolute) lies inside it
    after resolving '.' and '..' by name, else None.  Symbolic links are the
    caller's business (it must not follow any)."""
    import posixpath

    if not path.startswith("/") or "\0" in path:
        return None
    norm = posixpath.normpath(path)
    base = posixpath.normpath(home)
    if not norm.startswith(base.rstrip("/") + "/"):
        return None
    rel = norm[len(base.rstrip("/")) + 1:]
    return rel or None


def key_path_problem(path, username, home):
    """None when ``path`` is where Azure puts the admin user's keys:
    /home/<user>/.ssh/authorized_keys, or the account's real home (HOME= of
    /etc/default/useradd, e.g. /var/home) + /.ssh/authorized_keys; else the
    reason.  The keys always go to <home>/.ssh/authorized_keys (KEYS_FILE)."""
    if path in (default_key_path(username), default_key_path(username, home.rstrip("/") or "/")):
        return None
    return "SSH key path %s is not %s" % (shown(path), default_key_path(username, home.rstrip("/")))


def merge_keys(existing, keys):
    """authorized_keys content (bytes) + normalized key lines -> (new
    content as bytes, number added).  Works on bytes: every existing byte is
    kept as it is (lines that are not UTF-8, CR, options, comments); a key
    already present on a line sshd reads (same type and data, whatever its
    options or comment; not in a ``#`` comment line) is not added again.  Lines are what sshd reads as lines: split on
    ``\n`` only."""
    if isinstance(existing, str):
        existing = existing.encode("utf-8")
    have = set()
    for line in existing.split(b"\n"):
        words = [w for w in line.replace(b"\t", b" ").split(b" ") if w]  # sshd's separators
        if words and words[0].startswith(b"#"):
            continue  # a comment: sshd does not read the key in it
        for i, word in enumerate(words[:-1]):
            if word.decode("latin-1") in KEY_TYPES:
                have.add(word.decode("latin-1") + " " + words[i + 1].decode("latin-1"))
                break
    out = [existing]
    if existing and not existing.endswith(b"\n"):
        out.append(b"\n")
    added = 0
    for key in keys:
        blob = key_blob(key)
        if blob in have:
            continue
        out.append(key.encode("utf-8") + b"\n")
        have.add(blob)
        added += 1
    if not added:
        return existing, 0
    return b"".join(out), added


# ------------------------------------------------------- system databases

def id_number(text):
    """A UID or GID from an account database: 1..10 ASCII digits (the one
    strict parser, protocol.wire_number), else None."""
    return protocol.wire_number(text, 10)


def passwd_entries(text):
    """/etc/passwd text -> {name: (uid, gid, home, shell)}; a line whose UID
    or GID is not plain ASCII digits is skipped."""
    entries = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 7:
            uid, gid = id_number(fields[2]), id_number(fields[3])
            if uid is not None and gid is not None:
                entries.setdefault(fields[0], (uid, gid, fields[5], fields[6]))
    return entries


def group_names(text):
    return set(line.split(":", 1)[0] for line in text.splitlines() if ":" in line)


def uid_range(login_defs):
    """(UID_MIN, UID_MAX) from /etc/login.defs text (1000, 60000 by default)."""
    values = {"UID_MIN": DEFAULT_UID_MIN, "UID_MAX": DEFAULT_UID_MAX}
    for line in (login_defs or "").splitlines():
        words = line.split()
        number = id_number(words[1]) if len(words) >= 2 and words[0] in values else None
        if number is not None:
            values[words[0]] = number
    return values["UID_MIN"], values["UID_MAX"]


def default_home(useradd_defaults, username):
    """Where useradd puts a new home: HOME= of /etc/default/useradd + name."""
    base = "/home"
    for line in (useradd_defaults or "").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key == "HOME" and value.strip().startswith("/"):
            base = value.strip().rstrip("/") or "/"
    return base.rstrip("/") + "/" + username


def parse_groups(text):
    """'[user] groups' value -> list of group names (comma or space separated)."""
    names = [g for g in text.replace(",", " ").split() if g]
    for name in names:
        if len(name) > GROUP_MAX or name[0] not in _LOWER or not set(name) <= _NAME_CHARS:
            raise ValueError("%s is not a group name" % shown(name))
    return names


# ------------------------------------------------------------ file texts

def sudoers_text(username, nopasswd):
    return ("# Written by azure-firstboot(8) for the VM's admin user; "
            "[user] sudo = no turns it off.\n%s ALL=(ALL:ALL) %sALL\n" % (
                username, "NOPASSWD: " if nopasswd else ""))


def sshd_dropin_text(password_auth):
    value = "yes" if password_auth else "no"
    return ("# Written by azure-firstboot(8): password logins as the VM was created "
            "(IMDS disablePasswordAuthentication).\nPasswordAuthentication %s\n"
            "KbdInteractiveAuthentication %s\n" % (value, value))


# ------------------------------------------------------------ ovf-env.xml

_OVF_SET = ("Environment", "ProvisioningSection", "LinuxProvisioningConfigurationSet")
_OVF_PLATFORM = ("Environment", "PlatformSettingsSection", "PlatformSettings")
_OVF_KEY = _OVF_SET + ("SSH", "PublicKeys", "PublicKey")
_OVF_TEXT = {
    _OVF_SET + ("HostName",): "hostname",
    _OVF_SET + ("UserName",): "username",
    _OVF_SET + ("UserPassword",): "password",
    _OVF_SET + ("DisableSshPasswordAuthentication",): "disable_ssh_password_auth",
    _OVF_SET + ("CustomData",): "custom_data",
    _OVF_PLATFORM + ("PreprovisionedVm",): "preprovisioned",
    _OVF_PLATFORM + ("PreprovisionedVMType",): "preprovisioned_type",
    _OVF_PLATFORM + ("ProvisionGuestAgent",): "provision_guest_agent",
}
_OVF_FLAGS = ("disable_ssh_password_auth", "preprovisioned", "provision_guest_agent")
OVF_KEYS_MAX = 100
CUSTOM_DATA_MAX = 1024 * 1024   # decoded; ovf-env.xml itself is at most 1 MiB


class OvfKey(object):
    """One SSH/PublicKeys/PublicKey of ovf-env.xml (each field '' when absent)."""

    __slots__ = ("fingerprint", "path", "value")

    def __init__(self, fingerprint="", path="", value=""):
        self.fingerprint = fingerprint
        self.path = path
        self.value = value

    def __eq__(self, other):
        return isinstance(other, OvfKey) and (self.fingerprint, self.path, self.value) == (
            other.fingerprint, other.path, other.value)

    def __repr__(self):
        return "OvfKey(fingerprint=%r, path=%r, value=%s)" % (
            self.fingerprint, self.path, shown(self.value, 30))


class OvfEnv(object):
    """What ovf-env.xml says.  Text fields are None when absent (hostname,
    username stripped; password as written, spaces kept); flags are True,
    False or None (absent); keys a list of OvfKey; custom_data the decoded
    bytes of CustomData or None; preprovisioned_type as written (stripped)."""

    __slots__ = ("hostname", "username", "password", "disable_ssh_password_auth", "keys",
                 "custom_data", "preprovisioned", "preprovisioned_type", "provision_guest_agent")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name, [] if name == "keys" else None))

    def __repr__(self):  # never the password or the custom data
        return "OvfEnv(hostname=%r, username=%r, password=%s, keys=%d, custom_data=%s, " \
               "disable_ssh_password_auth=%r, preprovisioned=%r)" % (
                   self.hostname, self.username, "None" if self.password is None else "<set>",
                   len(self.keys), "None" if self.custom_data is None else "%d bytes" % len(
                       self.custom_data), self.disable_ssh_password_auth, self.preprovisioned)


def _ovf_flag(text, element):
    value = text.strip().lower()
    if value in ("true", "false"):
        return value == "true"
    raise ValueError("ovf-env.xml: %s is %s, not true or false" % (element, shown(text.strip())))


_B64_STRICT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def decode_base64(text, what, limit=CUSTOM_DATA_MAX):
    """Standard base64 (whitespace ignored, padding required) -> bytes;
    ValueError naming ``what`` otherwise, or when longer than ``limit``."""
    import binascii

    compact = "".join(text.split())
    body = compact.rstrip("=")
    if len(compact) % 4 or len(compact) - len(body) > 2 or not _B64_STRICT.issuperset(body):
        raise ValueError("%s is not base64" % what)
    if len(compact) // 4 * 3 > limit + 2:
        raise ValueError("%s is larger than %d bytes" % (what, limit))
    try:
        data = binascii.a2b_base64(compact.encode("ascii"))
    except (binascii.Error, ValueError):
        raise ValueError("%s is not base64" % what)
    if len(data) > limit:
        raise ValueError("%s is larger than %d bytes" % (what, limit))
    return data


def parse_ovf_env(data):
    """ovf-env.xml (bytes) -> OvfEnv.  Element local names (namespace
    prefixes vary), first occurrence of each field wins; DOCTYPE and entity
    declarations refused; ValueError with a one-line reason for malformed
    XML, a flag other than true/false, CustomData that is not base64, more
    than OVF_KEYS_MAX keys."""
    try:
        elements = protocol.xml_elements(data)
    except protocol.ProtocolError as exc:
        raise ValueError("ovf-env.xml: %s" % exc)
    found, keys = {}, []
    depth = len(_OVF_KEY)
    for path, text in elements:
        name = _OVF_TEXT.get(path)
        if name is not None:
            found.setdefault(name, text)
        elif path == _OVF_KEY:
            if len(keys) >= OVF_KEYS_MAX:
                raise ValueError("ovf-env.xml: more than %d SSH public keys" % OVF_KEYS_MAX)
            keys.append(OvfKey())
        elif len(path) == depth + 1 and path[:depth] == _OVF_KEY and keys:
            field = {"Fingerprint": "fingerprint", "Path": "path", "Value": "value"}.get(path[-1])
            if field and not getattr(keys[-1], field):
                setattr(keys[-1], field, text.strip())
    for name in ("hostname", "username", "preprovisioned_type"):
        if name in found:
            found[name] = found[name].strip()
    for name, element in (("disable_ssh_password_auth", "DisableSshPasswordAuthentication"),
                          ("preprovisioned", "PreprovisionedVm"),
                          ("provision_guest_agent", "ProvisionGuestAgent")):
        if name in found:
            found[name] = _ovf_flag(found[name], element) if found[name].strip() else None
    if "custom_data" in found:
        found["custom_data"] = decode_base64(found["custom_data"], "ovf-env.xml: CustomData") \
            if found["custom_data"].strip() else None
    return OvfEnv(keys=keys, **found)


def password_problem(password):
    if not password:
        return "the password in ovf-env.xml is empty"
    if any(c in password for c in "\r\n\0"):
        return "the password in ovf-env.xml holds a line break or NUL"
    return None
