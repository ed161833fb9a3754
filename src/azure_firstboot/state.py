"""Where things live on disk, all under one root (``--root``), and how they
are written: atomically (temporary file, fsync, rename), never half.

Records are ``key=value`` lines (one value per line, no quoting): easy to
read for people and scripts, and cheap to parse on the boot path.

State (survives reboots, keyed on the VM id):
  /var/lib/azure-firstboot/provisioned        marker, written after Ready was acknowledged
  /var/lib/azure-firstboot/<step>.result      last result of each step
Per boot:
  /run/azure-firstboot/endpoint               WireServer address found by network-wait
  /run/azure-firstboot/provisioned            "this VM is already provisioned": lets the
                                              later units skip via ConditionPathExists
"""

import os
import time

STATE_DIR = "/var/lib/azure-firstboot"
RUN_DIR = "/run/azure-firstboot"
STEPS = ("network-wait", "hostname", "report-ready")


class Paths(object):
    def __init__(self, root="/"):
        self.root = root

    def __call__(self, path):
        """An absolute path as seen on the target system -> the real path."""
        if self.root in ("", "/"):
            return path
        return os.path.join(self.root, path.lstrip("/"))

    @property
    def is_host(self):
        return self.root in ("", "/")

    def state(self, name):
        return self(STATE_DIR + "/" + name)

    def run(self, name):
        return self(RUN_DIR + "/" + name)


def read_text(path, limit=65536):
    """File content as text, or None when it does not exist or cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def write_atomic(path, data, mode=0o644):
    """Replace ``path`` with ``data`` (bytes or str) in one rename.  Keeps the
    mode of an existing file; creates missing parent directories."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    tmp = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def parse_record(text):
    """``key=value`` lines -> dict (str -> str); other lines are ignored."""
    record = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            record[key.strip()] = value.strip()
    return record


def format_record(record):
    """dict -> ``key=value`` lines; values are flattened to one line."""
    return "".join("%s=%s\n" % (key, " ".join(str(record[key]).split()))
                   for key in sorted(record) if record[key] is not None)


def read_record(path):
    text = read_text(path)
    return parse_record(text) if text is not None else None


def write_record(path, record):
    write_atomic(path, format_record(record))


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class State(object):
    """The agent's records for one VM id under one root."""

    def __init__(self, paths, vm_id):
        self.paths = paths
        self.vm_id = vm_id
        boot_id = read_text(paths("/proc/sys/kernel/random/boot_id"), 64)
        self.boot_id = boot_id.strip() if boot_id else None

    def provisioned(self):
        """The marker, if it belongs to this VM; else None."""
        marker = read_record(self.paths.state("provisioned"))
        if marker and marker.get("vm_id") == self.vm_id:
            return marker
        return None

    def mark_provisioned(self, incarnation):
        write_record(self.paths.state("provisioned"),
                   {"vm_id": self.vm_id, "incarnation": incarnation, "time": now_iso()})

    def record(self, step, result, **details):
        """Record a step's outcome: result is 'ok', 'failed' or 'skipped'."""
        entry = {"vm_id": self.vm_id, "boot_id": self.boot_id, "step": step, "result": result,
                 "time": now_iso()}
        entry.update(details)
        write_record(self.paths.state(step + ".result"), entry)
        return entry

    def result(self, step, this_boot=False):
        """The last recorded outcome of ``step`` for this VM (and, with
        ``this_boot``, recorded during the current boot), or None."""
        entry = read_record(self.paths.state(step + ".result"))
        if not entry or entry.get("vm_id") != self.vm_id:
            return None
        if this_boot and entry.get("boot_id") != self.boot_id:
            return None
        return entry

    def set_boot_flag(self, name, text):
        write_atomic(self.paths.run(name), text + "\n")

    def boot_flag(self, name):
        text = read_text(self.paths.run(name))
        return text.strip() if text is not None else None
