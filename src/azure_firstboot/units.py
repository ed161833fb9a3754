"""systemd unit state read from the unit directories (under the root):
masked, enabled."""

import os

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


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []
