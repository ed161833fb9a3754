"""The host name files: /etc/hostname, the 127.0.1.1 line of /etc/hosts, and
the running host name.  With ``--root`` only files under the root are touched."""

from azure_firstboot import log
from azure_firstboot.state import describe, read_bytes, read_text, write_atomic

HOSTS_LIMIT = 1024 * 1024
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
