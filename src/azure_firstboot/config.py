"""Configuration: a small, strict INI reader (pure) and the known keys.

The file is INI as configparser reads it: ``[section]`` headers, ``key =
value`` or ``key: value`` lines (the first ``=`` or ``:`` separates), ``#``
and ``;`` comment lines, keys case-insensitive.  It is parsed here so that a
typo is an error naming the file and line, and so that the boot path does not
import configparser.  What configparser would read differently is an error
rather than a surprise: inline comments (``60 # one minute`` is a bad value),
indented continuation lines, values over several lines.

A damaged file does not stop provisioning: :func:`load` returns the values it
could read (the built-in defaults for the rest) plus the list of problems,
each one line ``FILE:LINE: what``.  The units log the problems and the VM
reports ProvisioningFailed naming the first one; it never reports Ready with a
broken configuration.
"""

import errno

from azure_firstboot.protocol import split_endpoint, wire_number

DEFAULT_PATH = "/etc/azure-firstboot/azure-firstboot.conf"
MAX_SIZE = 65536
MAX_SECONDS = 7 * 24 * 3600
_DIGITS = frozenset("0123456789")


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line."""


def _show(text, limit=60):
    """A value as it appears in a message: quoted, escaped, bounded."""
    shown = repr(text[:limit])
    return shown + ("..." if len(text) > limit else "")


def _seconds(text):
    """Seconds: ASCII digits with at most one decimal point (no sign, no
    exponent, no units), more than 0 and at most a week."""
    whole, dot, frac = text.partition(".")
    if (not (whole or frac) or not set(whole + frac) <= _DIGITS or len(text) > 20):
        raise ValueError("expected a number of seconds such as 30 or 2.5")
    value = float(text)
    if not 0 < value <= MAX_SECONDS:
        raise ValueError("must be more than 0 and at most %d seconds" % MAX_SECONDS)
    return value


def _bool(text):
    low = text.lower()
    if low in ("yes", "true", "on", "1"):
        return True
    if low in ("no", "false", "off", "0"):
        return False
    raise ValueError("expected yes or no")


def _endpoint(text):
    if "://" in text or "/" in text:
        raise ValueError("expected host[:port] without a scheme or path (no http://)")
    host, sep, port = text.rpartition(":")
    if sep and not 0 < (wire_number(port, 5) or 0) < 65536:
        raise ValueError("port must be a number from 1 to 65535")
    try:
        split_endpoint(text)
    except ValueError:
        raise ValueError("expected host[:port] (a host name or IPv4 address)")
    return text


def _wireserver(text):
    return "auto" if text.lower() == "auto" else _endpoint(text)


def _groups(text):
    from azure_firstboot.accounts import parse_groups

    parse_groups(text)
    return text


def _resource_disk(name):
    def convert(text):
        from azure_firstboot import resource_disk

        return getattr(resource_disk, name)(text)
    return convert


# section -> key -> (converter, default)
SCHEMA = {
    "wireserver": {
        "endpoint": (_wireserver, "auto"),
    },
    "imds": {
        "endpoint": (_endpoint, "169.254.169.254"),
        "timeout": (_seconds, 300.0),
    },
    "provisioning": {
        "deadline": (_seconds, 1200.0),
        "network_timeout": (_seconds, 300.0),
        "assume_azure": (_bool, False),
    },
    "hostname": {
        "enabled": (_bool, True),
        "publish": (_bool, True),
    },
    "user": {
        "enabled": (_bool, True),
        "groups": (_groups, ""),
        "sudo": (_bool, True),
    },
    "resource_disk": {
        "enabled": (_bool, True),
        "mount_point": (_resource_disk("parse_mount_point"), "/mnt"),
        "filesystem": (_resource_disk("parse_filesystem"), "ext4"),
        "swap_size": (_resource_disk("parse_size"), 0),
        "device": (_resource_disk("parse_device"), "auto"),
    },
}


def defaults():
    return {(s, k): default for s, keys in SCHEMA.items() for k, (_, default) in keys.items()}


def _clean(text):
    """One line, printable: what goes into a message from the file."""
    return "".join(c if c.isprintable() else "?" for c in text)


def parse_all(text, source="config"):
    """INI text -> ({(section, key): value}, [problem, ...]).  Every value that
    could be read is kept, the defaults fill the rest; each problem is one line
    naming ``source`` and the line.  Never raises for any str input."""
    values = defaults()
    problems = []
    seen = set()
    section = None  # None: before any header; "": inside an unknown section
    last_key = None
    if text.startswith("\ufeff"):
        text = text[1:]
    # Lines end at \n (and \r\n), as in an editor; other control characters
    # stay inside their line (and are errors there).
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        where = "%s:%d" % (source, number)

        def bad(message):
            problems.append(_clean("%s: %s" % (where, message)))

        if not line or line[0] in "#;":
            continue
        if any("\udc80" <= c <= "\udcff" for c in line):
            bad("not UTF-8 text")
            last_key = None
            continue
        if raw[0] in " \t" and last_key is not None:
            bad("indented line continues the value of %s; values must fit on one line" % last_key)
            continue
        last_key = None
        if line.startswith("["):
            if not line.endswith("]"):
                bad("malformed section header %s" % _show(line))
                section = ""
                continue
            section = line[1:-1].strip().lower()
            if section not in SCHEMA:
                bad("unknown section [%s] (known: %s)" % (_clean(section[:40]), ", ".join(sorted(SCHEMA))))
                section = ""
            continue
        cut = min(i for i in (line.find("="), line.find(":"), len(line)) if i >= 0)
        if cut == len(line):
            bad("expected 'key = value', got %s" % _show(line))
            continue
        key, value = line[:cut].strip().lower(), line[cut + 1:].strip()
        if section is None:
            bad("key %s outside of any [section]" % _show(key))
            continue
        if not section:
            continue  # inside an unknown or malformed section: reported once, at its header
        last_key = "%s.%s" % (section, key)
        if key not in SCHEMA[section]:
            bad("unknown key %s in [%s] (known: %s)" % (
                _show(key), section, ", ".join(sorted(SCHEMA[section]))))
            continue
        if (section, key) in seen:
            bad("%s.%s is set twice" % (section, key))
            continue
        seen.add((section, key))
        try:
            values[(section, key)] = SCHEMA[section][key][0](value)
        except ValueError as exc:
            bad("bad value for %s.%s: %s: %s" % (section, key, _show(value), exc))
    return values, problems


def parse(text, source="config"):
    """INI text -> {(section, key): value}, defaults filled in.
    Raises ConfigError naming the file and line of the first problem."""
    values, problems = parse_all(text, source)
    if problems:
        raise ConfigError(problems[0])
    return values


def load(path, required=False):
    """Read and parse ``path`` -> (values, problems).  A missing file means
    the defaults, unless ``required`` (a path the user named on the command
    line): then it is a ConfigError, as is a file it cannot read at all."""
    from azure_firstboot import state

    try:
        # a regular file only (a FIFO in its place would block the boot), at most
        # MAX_SIZE + 1 bytes read
        data = state.read_bytes(path, MAX_SIZE)
        if data is None:
            raise FileNotFoundError(path)
    except FileNotFoundError:
        if required:
            raise ConfigError("%s: no such file" % _clean(path))
        return defaults(), []
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            return defaults(), ["%s: larger than 64 KiB; using the built-in defaults" % _clean(path)]
        problem = "%s: cannot read: %s" % (_clean(path), exc.strerror or exc)
        if required:
            raise ConfigError(problem)
        return defaults(), [problem + "; using the built-in defaults"]
    # Undecodable bytes become lone surrogates: parse_all reports their lines
    # and keeps the others.
    return parse_all(data.decode("utf-8", "surrogateescape"), _clean(path))
