"""Configuration: a small, strict INI reader (pure) and the known keys.

The file is INI as configparser reads it (``[section]``, ``key = value``,
``#``/``;`` comment lines), but parsed here so that a typo is an error with
a line number, and so that the boot path does not import configparser.
"""

from azure_firstboot.protocol import split_endpoint

DEFAULT_PATH = "/etc/azure-firstboot/azure-firstboot.conf"


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line."""


def _seconds(text):
    value = float(text)
    if not 0 < value <= 7 * 24 * 3600:
        raise ValueError("must be a number of seconds between 0 and 604800")
    return value


def _bool(text):
    low = text.lower()
    if low in ("yes", "true", "on", "1"):
        return True
    if low in ("no", "false", "off", "0"):
        return False
    raise ValueError("must be yes or no")


def _endpoint(text):
    split_endpoint(text)
    return text


def _wireserver(text):
    return "auto" if text.lower() == "auto" else _endpoint(text)


def _groups(text):
    from azure_firstboot.accounts import parse_groups

    parse_groups(text)
    return text


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
}


def defaults():
    return {(s, k): default for s, keys in SCHEMA.items() for k, (_, default) in keys.items()}


def parse(text, source="config"):
    """INI text -> {(section, key): value}, defaults filled in.
    Raises ConfigError naming the file and line of the first problem."""
    values = defaults()
    seen = set()
    section = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = "%s:%d" % (source, number)
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError("%s: malformed section header %r" % (where, line))
            section = line[1:-1].strip().lower()
            if section not in SCHEMA:
                raise ConfigError("%s: unknown section [%s] (known: %s)" % (
                    where, section, ", ".join(sorted(SCHEMA))))
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
        if not sep:
            raise ConfigError("%s: expected 'key = value', got %r" % (where, line))
        if section is None:
            raise ConfigError("%s: key outside of any [section]" % where)
        key, value = key.strip().lower(), value.strip()
        if key not in SCHEMA[section]:
            raise ConfigError("%s: unknown key %r in [%s] (known: %s)" % (
                where, key, section, ", ".join(sorted(SCHEMA[section]))))
        if (section, key) in seen:
            raise ConfigError("%s: %s.%s is set twice" % (where, section, key))
        seen.add((section, key))
        convert = SCHEMA[section][key][0]
        try:
            values[(section, key)] = convert(value)
        except ValueError as exc:
            raise ConfigError("%s: bad value for %s.%s: %r (%s)" % (where, section, key, value, exc))
    return values


def load(path):
    """Read and parse ``path``; a missing file means the defaults."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(65536 + 1)
    except FileNotFoundError:
        return defaults()
    except OSError as exc:
        raise ConfigError("%s: cannot read: %s" % (path, exc.strerror))
    if len(data) > 65536:
        raise ConfigError("%s: larger than 64 KiB" % path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("%s: not UTF-8 text" % path)
    return parse(text, path)
