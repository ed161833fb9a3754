"""Hyper-V KVP: the PROVISIONING_REPORT record the Azure host reads.

The guest-to-host pool /var/lib/hyperv/.kvp_pool_1 is a file of records
without a header: a 512-byte key and a 2048-byte value, each zero-padded
UTF-8.  hv_kvp_daemon (hv-kvp-daemon.service, hypervkvpd.service) carries it
to the host, which passes a provisioning failure's reason on to the user
(instead of a generic timeout), also when the WireServer cannot be reached.
The host reads the pool when the health report arrives: write it before.

Value: ``result=success|agent=azure-firstboot/VER|vm_id=ID|timestamp=ISO``
(ID in Azure's byte order: report_ready.azure_vm_id),
or ``result=error|reason=...|agent=...|vm_id=...|timestamp=...|
documentation_url=...``; at most 1022 bytes (the host converts to UTF-16 and
drops what is longer).  The record is updated in place (one record per key,
never appended twice) under both lock kinds in use: ``flock`` (cloud-init,
azure-init) and ``fcntl`` record locks (hv_kvp_daemon).  A pool file older
than this boot is stale (images ship old ones) and is emptied first.
Nothing happens when /var/lib/hyperv does not exist.  The pool is a file of
ours (state.open_own): a symbolic link, device node, FIFO, directory or a
file with other hard links in its place is refused, never written through,
and a pool of more than MAX_RECORDS records is not read; each is a warning
(KVP is never a reason to fail).

Pure functions (encode_report, encode_record, upsert) are tested on bytes;
write_report is the small imperative shell.
"""

import os

POOL_DIR = "/var/lib/hyperv"
POOL = POOL_DIR + "/.kvp_pool_1"
KEY_SIZE = 512
VALUE_SIZE = 2048
RECORD_SIZE = KEY_SIZE + VALUE_SIZE
MAX_KEY = 254      # bytes the host keeps of a key
MAX_VALUE = 1022   # bytes the host keeps of a value
MAX_RECORDS = 1024
POOL_LIMIT = MAX_RECORDS * RECORD_SIZE + RECORD_SIZE - 1  # a trailing partial record is dropped
REPORT_KEY = "PROVISIONING_REPORT"
DOCUMENTATION_URL = "https://aka.ms/linuxprovisioningerror"
LOCK_WAIT = 2.0


def _field(text):
    """A value inside the |-separated line: no '|', no control characters."""
    return "".join("/" if c == "|" else (" " if not c.isprintable() else c) for c in str(text))


def _cut_utf8(text, limit):
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def encode_report(result, vm_id, timestamp, version, reason=None, limit=MAX_VALUE):
    """The PROVISIONING_REPORT value (str, at most ``limit`` UTF-8 bytes, so
    also at most ``limit`` characters); ``result`` is "success" or "error".
    A long reason is shortened; the other fields are kept whole.  The same
    text is the failure health report's Description (limit
    protocol.DESCRIPTION_MAX), as cloud-init and azure-init send it."""
    head = "result=%s" % result
    tail = ["agent=azure-firstboot/%s" % _field(version), "vm_id=%s" % _field(vm_id or "unknown"),
            "timestamp=%s" % _field(timestamp)]
    if result != "success":
        tail.append("documentation_url=%s" % DOCUMENTATION_URL)
    fixed = "|".join([head] + tail)
    if reason is None or result == "success":
        return _cut_utf8(fixed, limit)
    room = limit - len(fixed.encode("utf-8")) - len("|reason=".encode("utf-8"))
    text = " ".join(_field(reason).split())
    if len(text.encode("utf-8")) > room:
        text = _cut_utf8(text, max(0, room - 3)) + "..."
    return "|".join([head, "reason=" + text] + tail)


def encode_record(key, value):
    """One pool record: key and value UTF-8, each zero-padded to its field."""
    k = key.encode("utf-8")
    v = value.encode("utf-8")
    if not 0 < len(k) <= MAX_KEY or len(v) > MAX_VALUE:
        raise ValueError("KVP key or value too long")
    return k + b"\0" * (KEY_SIZE - len(k)) + v + b"\0" * (VALUE_SIZE - len(v))


def record_key(record):
    """The key of a record (bytes up to the first NUL)."""
    return record[:KEY_SIZE].split(b"\0", 1)[0]


def decode_pool(data):
    """Pool bytes -> [(key, value)] as str (for tests and diagnostics); a
    trailing partial record is ignored."""
    out = []
    for offset in range(0, len(data) - RECORD_SIZE + 1, RECORD_SIZE):
        rec = data[offset:offset + RECORD_SIZE]
        out.append((record_key(rec).decode("utf-8", "replace"),
                    rec[KEY_SIZE:].split(b"\0", 1)[0].decode("utf-8", "replace")))
    return out


def upsert(data, key, value):
    """Pool bytes with the record for ``key`` set to ``value``: the first
    record of that key is replaced where it is, later ones with the same key
    are dropped, every other record is kept byte for byte; a new key is
    appended (after the last whole record).  None when the pool is full."""
    wanted = key.encode("utf-8")
    new = encode_record(key, value)
    out = []
    placed = False
    whole = len(data) - len(data) % RECORD_SIZE
    for offset in range(0, whole, RECORD_SIZE):
        rec = data[offset:offset + RECORD_SIZE]
        if record_key(rec) == wanted:
            if not placed:
                out.append(new)
                placed = True
            continue
        out.append(rec)
    if not placed:
        if len(out) >= MAX_RECORDS:
            return None
        out.append(new)
    return b"".join(out)


def boot_time(paths):
    """When this boot began (epoch seconds), from /proc/stat btime, else
    /proc/uptime; None when neither can be read."""
    from azure_firstboot.protocol import wire_number
    from azure_firstboot.state import read_text

    text = read_text(paths("/proc/stat"), 1 << 20) or ""
    for line in text.splitlines():
        if line.startswith("btime "):
            seconds = wire_number(line[6:].strip(), 19)
            if seconds is not None:
                return seconds
    text = read_text(paths("/proc/uptime"), 256)
    if text:
        first = text.split()[0] if text.split() else ""
        whole, _, frac = first.partition(".")
        if wire_number(whole, 19) is not None and (not frac or wire_number(frac, 9) is not None):
            import time

            return time.time() - float(first)
    return None


def _lock(fd):
    """Take flock and an fcntl write lock on the whole file; True when both
    were had within LOCK_WAIT seconds (else nothing is held)."""
    import fcntl
    import time

    end = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fcntl.flock(fd, fcntl.LOCK_UN)
                raise
            return True
        except OSError:
            if time.monotonic() >= end:
                return False
            time.sleep(0.05)


def write_report(paths, value, key=REPORT_KEY):
    """Set the ``key`` record of the pool under ``paths``.  Returns None when
    written, "" when there is no pool directory (nothing to do), else a
    one-line reason (lock busy, cannot write)."""
    from azure_firstboot import state

    if not os.path.isdir(paths(POOL_DIR)):
        return ""
    path = paths.own(POOL)
    try:
        fd = state.open_own(path, write=True, create=0o644)
    except OSError as exc:
        return "cannot open %s: %s" % (path, exc.strerror or exc)
    try:
        if not _lock(fd):
            return "%s is locked by another writer" % path
        try:
            started = boot_time(paths)
            if started is not None and os.fstat(fd).st_mtime < started:
                os.ftruncate(fd, 0)  # left over from an earlier boot (or the image)
            size = os.fstat(fd).st_size
            if size > POOL_LIMIT:
                return "%s holds more than %d records (%d bytes); not touched" % (
                    path, MAX_RECORDS, size)
            chunks, done = [], 0
            while done < size:
                chunk = os.pread(fd, min(state.READ_CHUNK, size - done), done)
                if not chunk:
                    break
                chunks.append(chunk)
                done += len(chunk)
            data = b"".join(chunks)
            new = upsert(data, key, value)
            if new is None:
                return "%s is full (%d records)" % (path, MAX_RECORDS)
            # write only from the first changed byte: records before it stay
            # untouched for a reader that does not lock
            same = 0
            while (same + RECORD_SIZE <= min(len(data), len(new))
                   and data[same:same + RECORD_SIZE] == new[same:same + RECORD_SIZE]):
                same += RECORD_SIZE
            view = memoryview(new)[same:]
            offset = same
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
            if len(new) < len(data):
                os.ftruncate(fd, len(new))
            os.fsync(fd)
        finally:
            import fcntl

            fcntl.lockf(fd, fcntl.LOCK_UN)
            fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError as exc:
        return "cannot write %s: %s" % (path, exc.strerror or exc)
    finally:
        os.close(fd)
    return None
